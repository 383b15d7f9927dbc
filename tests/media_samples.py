"""Media files the tests generate: photos, bombs, videos (nothing is checked in)."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import av
from av.audio.stream import AudioStream
from av.filter import Graph
from av.video.stream import VideoStream
from PIL import Image, ImageDraw, PngImagePlugin

from infra.images import PhotoResult, Rendition


def gradient(width: int, height: int) -> Image.Image:
    """A cheap colourful RGB image with some structure (not flat, so codecs do real work)."""
    red = Image.linear_gradient("L").resize((width, height))
    green = Image.radial_gradient("L").resize((width, height))
    blue = Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize((width, height))
    image = Image.merge("RGB", (red, green, blue))
    draw = ImageDraw.Draw(image)
    for i in range(8):
        x, y = width * i // 8, height * (7 - i) // 8
        draw.ellipse((x, y, x + width // 10, y + height // 10), fill=(30 * i, 200, 255 - 30 * i))
    return image


def halves(width: int, height: int) -> Image.Image:
    """Left half red, right half blue: shows which way an image was turned."""
    image = Image.new("RGB", (width, height), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, width // 2, height))
    return image


def by_key(result: PhotoResult) -> dict[tuple[str, str], Rendition]:
    return {(r.size, r.format): r for r in result.renditions}


def reopen(rendition: Rendition) -> Image.Image:
    image = Image.open(io.BytesIO(rendition.data))
    image.load()
    return image


def is_close(pixel: object, expected: tuple[int, int, int], tolerance: int = 40) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], expected, strict=True))


def write_bomb_png(path: Path, side: int) -> None:
    """A 1-bit all-black PNG of side x side pixels, streamed row by row.

    Pillow's own encoder would need the whole bitmap in memory (side² bytes, 400 MB at
    20000), so the chunks are written with Pillow's chunk writer and the rows compressed
    incrementally: the file is what an attacker would upload, built without the cost.
    """
    header = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])  # 1 bit, greyscale
    row = bytes(1 + (side + 7) // 8)  # filter byte 0 + packed zero bits
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    with path.open("wb") as fp:
        fp.write(PngImagePlugin._MAGIC)
        PngImagePlugin.putchunk(fp, b"IHDR", header)
        PngImagePlugin.putchunk(fp, b"IDAT", data)
        PngImagePlugin.putchunk(fp, b"IEND", b"")


def make_video(
    path: Path,
    frames: list[Image.Image] | None = None,
    *,
    size: tuple[int, int] = (320, 240),
    seconds: float = 2.0,
    fps: int = 25,
    audio: bool = True,
    rotation: int = 0,
    container: tuple[str, str, str] = ("mp4", "libx264", "aac"),
) -> None:
    """A video from FFmpeg's testsrc (or the given frames), with a 440 Hz tone.

    `container` is (format, video codec, audio codec); the default is H.264/AAC in MP4.
    """
    width, height = frames[0].size if frames else size
    container_format, video_codec, audio_codec = container
    with av.open(str(path), "w", format=container_format) as out:
        video = out.add_stream(video_codec, rate=fps)
        assert isinstance(video, VideoStream)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if video_codec == "libx264":
            video.options = {"preset": "ultrafast"}
        if rotation:
            video.set_display_rotation(rotation)
        sound = out.add_stream(audio_codec, rate=48_000, layout="stereo") if audio else None
        assert sound is None or isinstance(sound, AudioStream)
        if frames:
            for index, image in enumerate(frames):
                frame = av.VideoFrame.from_image(image).reformat(format="yuv420p")
                frame.pts = index
                out.mux(video.encode(frame))
        else:
            for frame in pull_all(f"testsrc=size={width}x{height}:rate={fps}:duration={seconds}"):
                assert isinstance(frame, av.VideoFrame)
                out.mux(video.encode(frame.reformat(format="yuv420p")))
        out.mux(video.encode(None))
        if sound is not None:
            for frame in pull_all(f"sine=frequency=440:sample_rate=48000:duration={seconds}"):
                assert isinstance(frame, av.AudioFrame)
                out.mux(sound.encode(frame))
            out.mux(sound.encode(None))


def pull_all(source: str) -> list[av.VideoFrame | av.AudioFrame]:
    name, _, args = source.partition("=")
    graph = Graph()
    sink = graph.add("abuffersink" if name == "sine" else "buffersink")
    graph.link_nodes(graph.add(name, args), sink).configure()
    frames: list[av.VideoFrame | av.AudioFrame] = []
    while True:
        try:
            frames.append(graph.pull())
        except (av.error.EOFError, av.error.BlockingIOError):
            return frames


def jpeg_bytes(
    width: int, height: int, *, orientation: int | None = None, gps: bool = False
) -> bytes:
    """A JPEG of the gradient, optionally with an EXIF orientation and GPS position."""
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if gps:
        exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    buffer = io.BytesIO()
    gradient(width, height).save(buffer, "JPEG", quality=90, exif=exif)
    return buffer.getvalue()


def png_with_alpha_bytes(width: int, height: int) -> bytes:
    """Left half fully transparent, right half opaque blue."""
    image = Image.new("RGBA", (width, height), (0, 0, 255, 255))
    image.paste((0, 0, 0, 0), (0, 0, width // 2, height))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def bomb_png_bytes(tmp_path: Path, side: int = 20000) -> bytes:
    path = tmp_path / "bomb.png"
    write_bomb_png(path, side)
    return path.read_bytes()


def video_bytes(tmp_path: Path, **options: object) -> bytes:
    path = tmp_path / "clip.mp4"
    make_video(path, **options)  # type: ignore[arg-type]
    return path.read_bytes()


def heic_bytes(width: int, height: int) -> bytes:
    """An iPhone-style HEIC photo of the gradient (encoded by pillow-heif's libheif)."""
    buffer = io.BytesIO()
    gradient(width, height).save(buffer, format="HEIF")
    return buffer.getvalue()
