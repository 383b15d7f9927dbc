"""Media processing for uploaded posts: photos to JPEG/WebP renditions, videos to H.264 MP4.

Everything here is synchronous and CPU-bound; the worker runs it in a thread or process
pool (Pillow and PyAV release the GIL while decoding, resizing and encoding). Input is
untrusted: the real type comes from magic bytes, never from what the client declared,
and any input the decoders cannot handle surfaces as `MediaRejected`, whose `reason` is
safe to show to the post's author. Anything else that escapes (a missing file, a full
disk, MemoryError) is an infrastructure failure and should fail or retry the job.

Outputs never carry metadata: Pillow writes EXIF, XMP or ICC only when asked to (we never
ask, and we also clear `info` so nothing rides along), so GPS positions and camera serials
are dropped; colour managed inputs are converted to sRGB first so they still look right
without their profile.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Final

import av
import av.error
import blurhash
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer
from av.filter import Graph
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from PIL import Image, ImageCms, ImageFile, ImageOps
from pillow_heif import register_heif_opener

# --- Limits ------------------------------------------------------------------------------

# Pillow warns above MAX_IMAGE_PIXELS and raises above twice that; both happen in
# Image.open, after reading the header and before any pixel buffer exists. 50 MP covers
# every phone camera (a 48 MP sensor is 8064x6048 = 48.8 MP) while bounding one decoded
# RGBA frame to ~200 MB. The module-level assignment is deliberate: it is process-wide.
MAX_PIXELS: Final = 50_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# Between 1x and 2x the limit Pillow only warns; a warning is not a refusal, so make it
# one. A filter (not catch_warnings per call) because catch_warnings mutates global state
# and is not thread-safe in 3.11; render_photo also re-checks the size explicitly, so the
# limit holds even if someone later installs an "ignore" filter.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
# A truncated upload is a failed upload; rendering half a photo in grey would hide that.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Renditions are bounded by width; an extreme aspect ratio would make FULL absurdly tall
# (and past WebP's 16383 px limit), so refuse it instead.
MAX_ASPECT_RATIO: Final = 10.0
MAX_VIDEO_SECONDS: Final = 180
# 4096x2160 (DCI 4K) and 3840x2160 fit; 8K would cost minutes of decode on small workers.
MAX_VIDEO_PIXELS: Final = 4096 * 2160
MAX_VIDEO_FPS: Final = 60
VIDEO_SHORT_SIDE: Final = 720
POSTER_AT_SECONDS: Final = 0.5

# How many leading bytes sniff_content_type needs; callers may pass more.
SNIFF_BYTES: Final = 64

# HEIC (iPhone photos) decodes through the maintained pillow-heif plugin (libheif).
register_heif_opener()

PHOTO_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/webp", "image/heic"})
VIDEO_TYPES: Final = frozenset({"video/mp4", "video/quicktime", "video/webm"})
SIZES: Final = {"THUMB": 150, "FEED": 640, "FULL": 1080}
# Stories fill a phone screen: their FULL rendition is exactly this frame (a centred cover
# crop to 9:16, enlarged when the original is smaller), so every client paints the same
# picture edge to edge without cropping it again.
STORY_FRAME: Final = (1080, 1920)
FORMATS: Final = ("JPEG", "WEBP")

# Measured at 1080 px on this project's 2-core workers. JPEG: optimize + progressive
# make files ~12% smaller for ~9 ms. WebP: method 2 takes 21-30 ms where libwebp's
# default 4 takes 47-82 ms (and 6 takes 118-128 ms), for files ~3% larger; WebP is the
# bulk of a photo's CPU, so the 3% is not worth it. Method 0 is faster still but ~15%
# larger.
JPEG_SAVE: Final = {"quality": 82, "optimize": True, "progressive": True}
WEBP_SAVE: Final = {"quality": 80, "method": 2}
PLACEHOLDER_SIZE: Final = 32
PLACEHOLDER_COMPONENTS: Final = (4, 3)

# Pillow's plugin names; MPO (multi-picture JPEGs from some phones) comes in through the
# JPEG plugin's factory and is a JPEG for our purposes.
_PILLOW_FORMATS: Final = ("JPEG", "PNG", "WEBP", "HEIF")
_FORMAT_TYPES: Final = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "HEIF": "image/heic",
}
_CONTENT_TYPES: Final = {"JPEG": "image/jpeg", "WEBP": "image/webp"}
# The demuxer for each accepted container, named explicitly so that FFmpeg never probes:
# probing is how a ".mp4" that is really an HLS playlist gets to read local files.
_DEMUXERS: Final = {"video/mp4": "mov", "video/quicktime": "mov", "video/webm": "matroska"}

_NOT_AN_IMAGE: Final = "The file is not a JPEG, PNG, WebP or HEIC image."
_TOO_LARGE: Final = "The image is too large to process."
_CORRUPT: Final = "The image file is truncated or corrupt."
_BAD_VIDEO: Final = "The video could not be read."
_TOO_LONG: Final = f"Videos can be at most {MAX_VIDEO_SECONDS} seconds long."

_ORIENTATION_TAG: Final = 0x0112
_SWAPS_AXES: Final = frozenset({5, 6, 7, 8})
_WHITE: Final = (255, 255, 255)


class MediaRejected(Exception):
    """The upload is not media we can process; `reason` is meant for the post's author."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Rendition:
    size: str
    format: str
    width: int
    height: int
    data: bytes
    content_type: str


@dataclass(frozen=True)
class PhotoResult:
    width: int
    height: int
    placeholder: str
    renditions: list[Rendition]
    detected_type: str


@dataclass(frozen=True)
class VideoResult:
    width: int
    height: int
    duration_seconds: float
    poster: PhotoResult
    mp4_path: Path


# --- Sniffing ----------------------------------------------------------------------------

_HEIF_BRANDS: Final = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"})
_GENERIC_HEIF_BRANDS: Final = frozenset({b"mif1", b"msf1"})
_MP4_BRANDS: Final = frozenset(
    {
        b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"iso7", b"iso8", b"iso9",
        b"mp41", b"mp42", b"avc1", b"dash", b"M4V ", b"M4VH", b"M4VP", b"mmp4", b"MSNV",
        b"3gp4", b"3gp5", b"3gp6", b"3gp7", b"3g2a", b"3g2b", b"3g2c", b"f4v ", b"XAVC",
    }
)  # fmt: skip


def sniff_content_type(head: bytes) -> str | None:
    """Return the real content type of a file from its first bytes, or None if unknown.

    Recognises JPEG, PNG, WebP, HEIC/HEIF (so callers can give a precise refusal), MP4 and
    its 3GP/M4V relatives, QuickTime and WebM/Matroska. Pass at least `SNIFF_BYTES` bytes;
    ISO-BMFF files are classified by their major brand, falling back to the compatible
    brands listed in the same `ftyp` box for generic HEIF (`mif1`) files, so that an AVIF
    image is not mistaken for HEIC.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    if head[4:8] == b"ftyp" and len(head) >= 12:
        major = head[8:12]
        box_end = min(int.from_bytes(head[:4], "big"), len(head))
        compatible = {head[i : i + 4] for i in range(16, box_end - 3, 4)}
        if major in _HEIF_BRANDS:
            return "image/heic"
        if major in _GENERIC_HEIF_BRANDS:
            return "image/heic" if compatible & _HEIF_BRANDS or b"avif" not in compatible else None
        if major == b"qt  ":
            return "video/quicktime"
        if major in _MP4_BRANDS:
            return "video/mp4"
    return None


# --- Photos ------------------------------------------------------------------------------


def render_photo(path: Path, *, frame: tuple[int, int] | None = None) -> PhotoResult:
    """Decode a JPEG, PNG, WebP or HEIC photo and produce its THUMB/FEED/FULL renditions.

    The type is taken from the file's content. JPEGs are decoded at the smallest DCT scale
    that still covers the largest rendition, then EXIF orientation is applied, transparency
    is flattened onto white and embedded colour profiles are converted to sRGB. Each size is
    encoded as JPEG and WebP without any metadata; images are never upscaled, and THUMB is
    a centre square crop. Raises `MediaRejected` for anything that is not a decodable
    image within `MAX_PIXELS` and `MAX_ASPECT_RATIO`.

    With a `frame` (a story's `STORY_FRAME`), FULL is instead exactly that size: a centred
    cover crop of the whole image, enlarged if need be; THUMB and FEED are unchanged.
    """
    with path.open("rb") as fp:
        head = fp.read(SNIFF_BYTES)
        sniffed = sniff_content_type(head)
        if sniffed not in PHOTO_TYPES:
            raise MediaRejected(_NOT_AN_IMAGE)
        fp.seek(0)
        image, detected, size = _decode_photo(fp, frame)
    return _render(image, detected, size, frame)


def render_image(
    image: Image.Image, detected_type: str, *, frame: tuple[int, int] | None = None
) -> PhotoResult:
    """Produce the renditions and placeholder of an already decoded, upright image.

    `image` may be in any mode `render_photo` accepts (alpha is flattened onto white,
    palettes and 16-bit greyscale are converted) and may carry an `icc_profile` in its
    `info`; it is not modified. Used for video posters; `detected_type` is reported back
    unchanged in the result; `frame` is `render_photo`'s.
    """
    _check_aspect(*image.size)
    return _render(image, detected_type, image.size, frame)


def _render(
    image: Image.Image,
    detected_type: str,
    size: tuple[int, int],
    frame: tuple[int, int] | None = None,
) -> PhotoResult:
    # `size` is the oriented size of the original: a JPEG decoded by draft() is smaller.
    icc = image.info.get("icc_profile")
    base = _normalise_mode(image)
    full = _to_srgb_rgb(_shrink(base, SIZES["FULL"]), icc)
    feed = _shrink(full, SIZES["FEED"])
    # THUMB is cut from the smallest image whose short side still covers it; for a wide
    # panorama even FULL can be under 150 px tall, so crop the decoded image instead.
    if min(feed.size) >= SIZES["THUMB"]:
        thumb = _square(feed, SIZES["THUMB"])
    elif min(full.size) >= SIZES["THUMB"] or full.size == base.size:
        thumb = _square(full, SIZES["THUMB"])
    else:
        thumb = _to_srgb_rgb(_square(base, SIZES["THUMB"]), icc)
    if frame is not None:
        # From the decoded image, not from FULL: a landscape FULL is far shorter than 1920.
        full = _to_srgb_rgb(ImageOps.fit(base, frame, Image.Resampling.LANCZOS), icc)
    renditions = [
        _encode(name, im, fmt)
        for name, im in (("THUMB", thumb), ("FEED", feed), ("FULL", full))
        for fmt in FORMATS
    ]
    return PhotoResult(
        width=size[0],
        height=size[1],
        placeholder=_placeholder(feed),
        renditions=renditions,
        detected_type=detected_type,
    )


def _decode_photo(
    fp: io.BufferedReader, frame: tuple[int, int] | None = None
) -> tuple[Image.Image, str, tuple[int, int]]:
    try:
        image: Image.Image = Image.open(fp, formats=_PILLOW_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaRejected(_TOO_LARGE) from exc
    except Image.UnidentifiedImageError as exc:
        raise MediaRejected(_NOT_AN_IMAGE) from exc
    except MemoryError:
        raise
    except Exception as exc:
        # Plugins raise an open-ended set (SyntaxError, struct.error, ValueError...) on
        # malformed headers; at this point only the input can be at fault.
        raise MediaRejected(_CORRUPT) from exc
    # Not closed here: the caller owns fp, and Image.close() would discard the pixels.
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise MediaRejected(_TOO_LARGE)
    if width < 1 or height < 1:
        raise MediaRejected(_CORRUPT)
    orientation = _orientation(image)
    if orientation in _SWAPS_AXES:
        width, height = height, width
    _check_aspect(width, height)
    detected = _FORMAT_TYPES[image.format or "JPEG"]
    if image.format in ("JPEG", "MPO"):
        image.draft("RGB", _draft_request(image.size, width, height, frame))
    try:
        image.load()
    except MemoryError:
        raise
    except Exception as exc:
        raise MediaRejected(_CORRUPT) from exc
    if orientation in range(2, 9):
        # After draft() and load(): exif_transpose would otherwise decode at full size.
        image = ImageOps.exif_transpose(image)
    return image, detected, (width, height)


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:
        # A mangled EXIF block should cost the photo its orientation, not its upload.
        return 1
    return value if isinstance(value, int) else 1


def _draft_request(
    stored: tuple[int, int], width: int, height: int, frame: tuple[int, int] | None = None
) -> tuple[int, int]:
    # draft() picks the largest DCT scale (1/2, 1/4, 1/8) whose output still covers the
    # requested box in both dimensions; ask for what FULL (by width), THUMB (by the
    # short side) and a story's frame (covered in both dimensions) need, in the stored
    # orientation.
    scale = max(
        min(1.0, SIZES["FULL"] / width),
        min(1.0, SIZES["THUMB"] / min(width, height)),
        min(1.0, max(frame[0] / width, frame[1] / height)) if frame else 0.0,
    )
    return max(1, math.ceil(stored[0] * scale)), max(1, math.ceil(stored[1] * scale))


def _check_aspect(width: int, height: int) -> None:
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise MediaRejected("The image is too narrow or too wide.")


def _normalise_mode(image: Image.Image) -> Image.Image:
    # Bring every decoder mode to one that resizes correctly: Pillow resizes P and 1 with
    # nearest neighbour, and converting 16-bit grey to L clips instead of scaling.
    mode = image.mode
    if mode in ("RGB", "RGBA", "L", "LA", "CMYK"):
        if mode in ("RGB", "L") and image.has_transparency_data:
            return image.convert("RGBA")
        return image
    if mode.startswith("I"):
        return image.point(lambda v: v * (1 / 256)).convert("L")
    return image.convert("RGBA" if image.has_transparency_data else "RGB")


def _shrink(image: Image.Image, width: int) -> Image.Image:
    if image.width <= width:
        return image
    height = max(1, round(image.height * width / image.width))
    # reducing_gap: box-reduce by an integer factor first, then Lanczos over a remaining
    # ratio of at least 1.5x. That is what a JPEG gets from draft() (1/2 scale, then
    # Lanczos 1.85x for 4000 -> 1080); for a 12 MP PNG it cuts the resize from ~155 ms
    # to ~60 ms. Pillow's thumbnail() default of 2.0 would not reduce 4000 -> 1080 at all.
    return image.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=1.5)


def _square(image: Image.Image, side: int) -> Image.Image:
    side = min(side, image.width, image.height)
    return ImageOps.fit(image, (side, side), Image.Resampling.LANCZOS)


def _to_srgb_rgb(image: Image.Image, icc: object) -> Image.Image:
    """Flatten alpha onto white and convert to sRGB RGB, dropping every `info` entry."""
    if image.mode in ("RGBA", "LA"):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", image.size, _WHITE)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    out = _apply_icc(image, icc) if isinstance(icc, bytes) and icc else None
    if out is None:
        out = image.convert("RGB") if image.mode != "RGB" else image.copy()
    out.info.clear()
    return out


def _apply_icc(image: Image.Image, icc: bytes) -> Image.Image | None:
    if image.mode not in ("RGB", "CMYK", "L"):
        return None
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if image.mode == "RGB" and _is_srgb(source):
            # Most non-Apple cameras tag plain sRGB; converting to itself costs ~20 ms.
            return None
        # A fresh sRGB profile per call: LittleCMS profile handles are not safe to share
        # between threads, and creating one costs ~0.2 ms.
        srgb = ImageCms.createProfile("sRGB")
        transform = ImageCms.buildTransform(
            source, srgb, image.mode, "RGB", ImageCms.Intent.PERCEPTUAL
        )
        return ImageCms.applyTransform(image, transform)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        # A broken or mismatched profile: show the pixels as if they were sRGB rather
        # than refuse a photo that every browser would display.
        return None


def _is_srgb(profile: ImageCms.ImageCmsProfile) -> bool:
    # Descriptions such as "sRGB IEC61966-2.1" or "sRGB built-in".
    return ImageCms.getProfileDescription(profile).strip().lower().startswith("srgb")


def _encode(size: str, image: Image.Image, fmt: str) -> Rendition:
    buf = io.BytesIO()
    # Only the options below are passed: no exif=, icc_profile= or xmp=, so none is written.
    image.save(buf, fmt, **(JPEG_SAVE if fmt == "JPEG" else WEBP_SAVE))
    return Rendition(
        size=size,
        format=fmt,
        width=image.width,
        height=image.height,
        data=buf.getvalue(),
        content_type=_CONTENT_TYPES[fmt],
    )


def _placeholder(image: Image.Image) -> str:
    # BlurHash is pure Python and O(pixels x components): hash a 32 px copy.
    tiny = ImageOps.contain(image, (PLACEHOLDER_SIZE, PLACEHOLDER_SIZE), Image.Resampling.BOX)
    raw = tiny.tobytes()
    stride = tiny.width * 3
    rows = [
        [raw[x : x + 3] for x in range(y * stride, (y + 1) * stride, 3)] for y in range(tiny.height)
    ]
    x_components, y_components = PLACEHOLDER_COMPONENTS
    return str(blurhash.encode(rows, x_components, y_components))


# --- Videos ------------------------------------------------------------------------------


def render_video(
    path: Path, work_dir: Path, *, frame: tuple[int, int] | None = None
) -> VideoResult:
    """Probe, poster and transcode an MP4, QuickTime or WebM video in one decoding pass.

    The video is decoded once with PyAV: the frame at `POSTER_AT_SECONDS` (or the last one
    of a shorter clip) becomes the poster, rendered like a photo, and every frame is
    rotated upright, scaled so the shorter side is at most `VIDEO_SHORT_SIDE` (even
    dimensions), capped at `MAX_VIDEO_FPS` and encoded as H.264 (libx264, yuv420p, CRF 23,
    preset veryfast) with AAC audio when the source has sound, into
    `work_dir / "video.mp4"` with the index at the front for progressive playback. Raises
    `MediaRejected` for unreadable files and for videos longer than `MAX_VIDEO_SECONDS` or
    larger than `MAX_VIDEO_PIXELS`; the partial output is removed in that case. A `frame`
    applies to the poster as in `render_photo`; the video keeps its own shape.
    """
    with path.open("rb") as fp:
        detected = sniff_content_type(fp.read(SNIFF_BYTES))
    if detected not in VIDEO_TYPES:
        raise MediaRejected("The file is not an MP4, MOV or WebM video.")
    out_path = work_dir / "video.mp4"
    try:
        inp = av.open(str(path), format=_DEMUXERS[detected], metadata_errors="replace")
    except av.error.FFmpegError as exc:
        raise MediaRejected(_BAD_VIDEO) from exc
    try:
        with inp:
            video, audio = _probe(inp)
            options = {"movflags": "+faststart"}
            with av.open(str(out_path), "w", format="mp4", options=options) as out:
                transcoder = _Transcoder(out, video, audio)
                for decoded in _decoded(inp, video, audio):
                    transcoder.feed(decoded)
                transcoder.finish()
            duration = _duration(inp, video) or transcoder.last_time
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    width, height = transcoder.display_size
    return VideoResult(
        width=width,
        height=height,
        duration_seconds=duration,
        poster=render_image(transcoder.poster(), detected, frame=frame),
        mp4_path=out_path,
    )


def _probe(inp: InputContainer) -> tuple[VideoStream, AudioStream | None]:
    if not inp.streams.video:
        raise MediaRejected("The file has no video track.")
    video = inp.streams.video[0]
    if video.width * video.height > MAX_VIDEO_PIXELS:
        raise MediaRejected("The video resolution is too high.")
    if _duration(inp, video) > MAX_VIDEO_SECONDS:
        raise MediaRejected(_TOO_LONG)
    video.thread_type = "AUTO"
    audio = inp.streams.audio[0] if inp.streams.audio else None
    return video, audio


def _duration(inp: InputContainer, video: VideoStream) -> float:
    # Container duration is in AV_TIME_BASE units; some files only know it per stream, and
    # streamed WebM not at all (0.0: the caller falls back to the last decoded timestamp).
    if inp.duration is not None and inp.duration > 0:
        return inp.duration / av.time_base
    if video.duration is not None and video.time_base is not None:
        return float(video.duration * video.time_base)
    return 0.0


def _decoded(
    inp: InputContainer, video: VideoStream, audio: AudioStream | None
) -> Iterator[VideoFrame | AudioFrame]:
    """Yield decoded frames, turning every demux/decode failure into MediaRejected.

    Only failures of the input are caught here: exceptions raised by the consumer (the
    encoder, the disk) propagate unchanged because they happen outside this generator.
    """
    streams = (video, audio) if audio is not None else (video,)
    damaged = 0
    try:
        for packet in inp.demux(streams):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                # Like FFmpeg's CLI, skip a few damaged packets (a recording cut short, a
                # flipped bit): the decoder resynchronises at the next keyframe.
                damaged += 1
                if damaged > _MAX_DAMAGED_PACKETS:
                    raise MediaRejected(_BAD_VIDEO) from None
                continue
            for frame in frames:
                if isinstance(frame, VideoFrame | AudioFrame):
                    yield frame
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise MediaRejected(_BAD_VIDEO) from exc


class _Transcoder:
    """Filter and encoder state, set up from the first video frame: its size and rotation
    (display matrix side data) are only certain once a frame is decoded."""

    def __init__(self, out: OutputContainer, video: VideoStream, audio: AudioStream | None):
        self._out = out
        self._video_in = video
        self._audio_in = audio
        self._video_out: VideoStream | None = None
        self._audio_out: AudioStream | None = None
        self._graph: Graph | None = None
        # Audio decoded before the first picture: output streams must all exist before
        # the first packet is muxed, and the video stream needs that picture's geometry.
        self._early_audio: list[AudioFrame] = []
        self._first_time: float | None = None
        self._rotation = 0
        self._poster: VideoFrame | None = None
        self._poster_final = False
        self.display_size = (0, 0)
        self.last_time = 0.0

    def feed(self, frame: VideoFrame | AudioFrame) -> None:
        if isinstance(frame, AudioFrame):
            if self._video_out is None:
                if len(self._early_audio) >= _MAX_EARLY_AUDIO_FRAMES:
                    raise MediaRejected("The video has no pictures.")
                self._early_audio.append(frame)
            else:
                self._encode_audio(frame)
            return
        if frame.time is not None:
            # The probe trusts the header; this catches files whose header lies or is
            # silent about the duration.
            if self._first_time is None:
                self._first_time = frame.time
            self.last_time = max(self.last_time, frame.time - self._first_time)
            if self.last_time > MAX_VIDEO_SECONDS + 1:
                raise MediaRejected(_TOO_LONG)
        if self._graph is None:
            self._start(frame)
        if not self._poster_final:
            # Not the first frame: fade-ins make it black too often.
            self._poster = frame
            self._poster_final = frame.time is None or self.last_time >= POSTER_AT_SECONDS
        assert self._graph is not None
        try:
            self._graph.vpush(frame)
        except av.error.FFmpegError as exc:
            # The buffer source refuses mid-stream changes of size or pixel format.
            raise MediaRejected(_BAD_VIDEO) from exc
        self._drain()

    def finish(self) -> None:
        if self._graph is None or self._video_out is None:
            raise MediaRejected("The video has no pictures.")
        self._graph.vpush(None)
        self._drain()
        self._out.mux(self._video_out.encode(None))
        if self._audio_out is not None:
            self._out.mux(self._audio_out.encode(None))

    def poster(self) -> Image.Image:
        assert self._poster is not None
        image = self._poster.to_image()
        turn = _POSTER_TURNS.get(self._rotation)
        if turn is not None:
            image = image.transpose(turn)
        if image.size != self.display_size:
            # Non-square pixels (anamorphic video): show the picture at its display shape.
            image = image.resize(self.display_size, Image.Resampling.LANCZOS)
        return image

    def _start(self, frame: VideoFrame) -> None:
        # The display matrix angle is counter-clockwise; snap it to quarter turns (phones
        # only write those) in 0..270.
        self._rotation = round(frame.rotation / 90) * 90 % 360
        sar = self._video_in.sample_aspect_ratio
        width = round(frame.width * sar) if sar and sar != 1 else frame.width
        height = frame.height
        if self._rotation in (90, 270):
            width, height = height, width
        self.display_size = (width, height)
        out_w, out_h = _fit_short_side(width, height, VIDEO_SHORT_SIDE)

        rate = self._video_in.average_rate or self._video_in.guessed_rate or Fraction(30)
        capped = rate > MAX_VIDEO_FPS
        graph = Graph()
        nodes = [graph.add_buffer(template=self._video_in)]
        nodes += [graph.add(name, args) for name, args in _ROTATE_FILTERS[self._rotation]]
        nodes.append(graph.add("scale", f"{out_w}:{out_h}:flags=bicubic"))
        nodes.append(graph.add("setsar", "1"))
        if capped:
            nodes.append(graph.add("fps", str(MAX_VIDEO_FPS)))
        nodes.append(graph.add("format", "yuv420p"))
        nodes.append(graph.add("buffersink"))
        graph.link_nodes(*nodes).configure()
        self._graph = graph

        stream = self._out.add_stream("libx264", rate=Fraction(MAX_VIDEO_FPS) if capped else rate)
        stream.width, stream.height, stream.pix_fmt = out_w, out_h, "yuv420p"
        # Keep the source's fine time base: rounding variable-frame-rate timestamps to
        # 1/fps would create duplicates, which x264 refuses.
        stream.codec_context.time_base = (
            Fraction(1, MAX_VIDEO_FPS)
            if capped
            else self._video_in.time_base or Fraction(1, 90_000)
        )
        stream.options = {"crf": "23", "preset": "veryfast", "profile": "high"}
        self._video_out = stream

        if self._audio_in is not None and self._audio_in.sample_rate:
            audio = self._out.add_stream(
                "aac",
                rate=min(self._audio_in.sample_rate, 48_000),
                layout="mono" if self._audio_in.channels == 1 else "stereo",
            )
            audio.bit_rate = 128_000
            self._audio_out = audio
        for early in self._early_audio:
            self._encode_audio(early)
        self._early_audio.clear()

    def _encode_audio(self, frame: AudioFrame) -> None:
        if self._audio_out is not None:
            # PyAV resamples to the encoder's format, layout and rate and re-chunks into
            # AAC's 1024-sample frames itself.
            self._out.mux(self._audio_out.encode(frame))

    def _drain(self) -> None:
        assert self._graph is not None and self._video_out is not None
        while True:
            try:
                out = self._graph.vpull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return
            self._out.mux(self._video_out.encode(out))


_MAX_DAMAGED_PACKETS: Final = 30
# About 10 s of AAC-sized audio frames decoded before the first picture; a file that
# carries more than that ahead of its video is not a video we want to buffer for.
_MAX_EARLY_AUDIO_FRAMES: Final = 500
_ROTATE_FILTERS: Final[dict[int, tuple[tuple[str, str | None], ...]]] = {
    0: (),
    90: (("transpose", "cclock"),),
    180: (("hflip", None), ("vflip", None)),
    270: (("transpose", "clock"),),
}
_POSTER_TURNS: Final = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


def _fit_short_side(width: int, height: int, short: int) -> tuple[int, int]:
    scale = min(1.0, short / min(width, height))
    # yuv420p needs even dimensions; round down so the short side never exceeds the bound.
    return (
        max(2, int(width * scale) // 2 * 2),
        max(2, int(height * scale) // 2 * 2),
    )
