"""infra.images: photo renditions, metadata stripping, refusals, and video transcoding.

Every input is generated in tmp_path (Pillow for photos, PyAV for videos), so the tests
need no fixtures on disk and no external binaries.
"""

from __future__ import annotations

import io
import os
import resource
import time
from pathlib import Path

import av
import av.error
import blurhash
import pytest
from PIL import ExifTags, Image, ImageCms

from infra.images import (
    FORMATS,
    MAX_PIXELS,
    PHOTO_TYPES,
    SIZES,
    VIDEO_TYPES,
    MediaRejected,
    render_photo,
    render_video,
    sniff_content_type,
)
from tests.media_samples import (
    by_key,
    gradient,
    halves,
    is_close,
    make_video,
    reopen,
    write_bomb_png,
)

GPS_IFD = 0x8825  # 34853


# --- Input factories ---------------------------------------------------------------------


# --- Sniffing ----------------------------------------------------------------------------


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
        (_png_bytes(), "image/png"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "image/heic"),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic", "image/heic"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", None),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1avif", None),
        (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41", "video/mp4"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom", "video/mp4"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  ", "video/quicktime"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01webm", "video/webm"),
        (b"hello, this is plain text\n", None),
        (b"GIF89a\x01\x00\x01\x00", None),
        (b"", None),
    ],
)
def test_sniff_content_type(head: bytes, expected: str | None) -> None:
    assert sniff_content_type(head) == expected


def test_type_sets() -> None:
    assert {"image/jpeg", "image/png", "image/webp", "image/heic"} == PHOTO_TYPES
    assert {"video/mp4", "video/quicktime", "video/webm"} == VIDEO_TYPES
    assert not PHOTO_TYPES & VIDEO_TYPES


# --- Photos ------------------------------------------------------------------------------


def test_jpeg_12mp_gives_six_renditions(tmp_path: Path) -> None:
    source = tmp_path / "big.jpg"
    gradient(4000, 3000).save(source, quality=90)

    result = render_photo(source)

    assert (result.width, result.height) == (4000, 3000)
    assert result.detected_type == "image/jpeg"
    expected = {"THUMB": (150, 150), "FEED": (640, 480), "FULL": (1080, 810)}
    assert sorted(by_key(result)) == sorted((s, f) for s in SIZES for f in FORMATS)
    for rendition in result.renditions:
        assert (rendition.width, rendition.height) == expected[rendition.size]
        image = reopen(rendition)
        assert image.format == rendition.format
        assert image.size == expected[rendition.size]
        assert image.mode == "RGB"
        assert (
            rendition.content_type == {"JPEG": "image/jpeg", "WEBP": "image/webp"}[rendition.format]
        )
    assert blurhash.components(result.placeholder) == (4, 3)
    assert len(result.placeholder) == 28


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_becomes_white(tmp_path: Path, mode: str) -> None:
    image = Image.new("RGBA", (800, 600), (0, 0, 0, 0))  # transparent *black*
    image.paste((200, 0, 0, 255), (400, 0, 800, 600))
    if mode == "LA":
        image = image.convert("LA")
    elif mode == "P":
        image = image.convert("P")  # alpha becomes a transparent palette entry
        assert image.has_transparency_data
    source = tmp_path / "alpha.png"
    image.save(source)

    result = render_photo(source)

    assert result.detected_type == "image/png"
    for fmt in FORMATS:
        full = reopen(by_key(result)[("FULL", fmt)])
        assert full.mode == "RGB"
        assert full.size == (800, 600)
        assert is_close(full.getpixel((100, 300)), (255, 255, 255), tolerance=8)
        opaque = (200, 0, 0) if mode != "LA" else (60, 60, 60)
        assert is_close(full.getpixel((700, 300)), opaque)


def test_exif_orientation_applied_and_metadata_stripped(tmp_path: Path) -> None:
    # Stored landscape 4000x2400 with orientation 6 ("rotate 90° clockwise to view"):
    # large enough that draft() decodes at 1/2 scale before the rotation is applied.
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "TestCam"
    exif.get_ifd(GPS_IFD).update(
        {
            ExifTags.GPS.GPSLatitudeRef: "N",
            ExifTags.GPS.GPSLatitude: (48.0, 51.0, 29.0),
            ExifTags.GPS.GPSLongitudeRef: "E",
            ExifTags.GPS.GPSLongitude: (2.0, 17.0, 40.0),
        }
    )
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = tmp_path / "phone.jpg"
    halves(4000, 2400).save(source, quality=90, exif=exif, icc_profile=icc)
    with Image.open(source) as check:
        assert check.getexif().get_ifd(GPS_IFD)  # the input really carries GPS

    result = render_photo(source)

    assert (result.width, result.height) == (2400, 4000)
    expected = {"THUMB": (150, 150), "FEED": (640, 1067), "FULL": (1080, 1800)}
    for rendition in result.renditions:
        assert (rendition.width, rendition.height) == expected[rendition.size]
        image = reopen(rendition)
        assert image.size == expected[rendition.size]
        exif_out = image.getexif()
        assert len(exif_out) == 0
        assert GPS_IFD not in exif_out
        assert not exif_out.get_ifd(GPS_IFD)
        for key in ("exif", "icc_profile", "xmp"):
            assert key not in image.info
        assert b"Exif\x00\x00" not in rendition.data
        assert b"TestCam" not in rendition.data
        if rendition.size != "THUMB":
            # The stored left (red) half is the top once turned clockwise.
            assert is_close(image.getpixel((image.width // 2, 5)), (255, 0, 0))
            assert is_close(image.getpixel((image.width // 2, image.height - 5)), (0, 0, 255))


@pytest.mark.parametrize(("size", "thumb"), [((400, 300), 150), ((120, 90), 90)])
def test_small_images_are_not_upscaled(tmp_path: Path, size: tuple[int, int], thumb: int) -> None:
    source = tmp_path / "small.webp"
    gradient(*size).save(source, quality=90)

    result = render_photo(source)

    assert result.detected_type == "image/webp"
    for rendition in result.renditions:
        expected = (thumb, thumb) if rendition.size == "THUMB" else size
        assert (rendition.width, rendition.height) == expected
        assert reopen(rendition).size == expected


def test_wide_panorama_thumb_is_cut_from_the_decoded_image(tmp_path: Path) -> None:
    # 8:1: FULL is 1080x135 and FEED 640x80, both too short for a 150 px THUMB.
    source = tmp_path / "panorama.jpg"
    gradient(2400, 300).save(source, quality=90)

    sizes = {(r.size, r.format): (r.width, r.height) for r in render_photo(source).renditions}

    assert sizes[("FULL", "JPEG")] == (1080, 135)
    assert sizes[("FEED", "WEBP")] == (640, 80)
    assert sizes[("THUMB", "JPEG")] == sizes[("THUMB", "WEBP")] == (150, 150)


def test_colour_profile_is_converted_then_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pillow can only build sRGB/LAB/XYZ profiles; renaming the sRGB one makes it a
    # "foreign" RGB profile that must be converted (to the same colours) rather than
    # skipped as sRGB.
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    foreign = srgb.replace("sRGB built-in".encode("utf-16-be"), "Test RGB v1.0".encode("utf-16-be"))
    assert foreign != srgb
    applied: list[str] = []
    real_apply = ImageCms.applyTransform

    def spy(image: Image.Image, transform: ImageCms.ImageCmsTransform) -> Image.Image | None:
        applied.append(image.mode)
        return real_apply(image, transform)

    monkeypatch.setattr(ImageCms, "applyTransform", spy)
    source = tmp_path / "tagged.jpg"
    Image.new("RGB", (1600, 1200), (200, 120, 40)).save(source, quality=95, icc_profile=foreign)

    result = render_photo(source)

    assert applied == ["RGB"]
    for rendition in result.renditions:
        image = reopen(rendition)
        assert "icc_profile" not in image.info
        assert is_close(image.getpixel((10, 10)), (200, 120, 40), tolerance=6)


def test_png_declared_as_jpeg_is_handled_as_png(tmp_path: Path) -> None:
    source = tmp_path / "looks-like.jpg"
    gradient(300, 200).save(source, format="PNG")
    assert sniff_content_type(source.read_bytes()[:64]) == "image/png"

    assert render_photo(source).detected_type == "image/png"


def test_truncated_jpeg_is_rejected(tmp_path: Path) -> None:
    buf = io.BytesIO()
    gradient(1200, 900).save(buf, "JPEG", quality=90)
    source = tmp_path / "truncated.jpg"
    source.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])

    with pytest.raises(MediaRejected) as caught:
        render_photo(source)
    assert caught.value.reason == "The image file is truncated or corrupt."


def test_decompression_bomb_is_rejected_at_open(tmp_path: Path) -> None:
    source = tmp_path / "bomb.png"
    write_bomb_png(source, 20_000)
    assert source.stat().st_size < 100_000
    assert 20_000 * 20_000 > 2 * MAX_PIXELS
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    started = time.perf_counter()
    with pytest.raises(MediaRejected) as caught:
        render_photo(source)
    elapsed = time.perf_counter() - started

    assert caught.value.reason == "The image is too large to process."
    assert elapsed < 0.5
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mib < 50  # decoding would have needed 400 MB


def test_image_between_one_and_two_times_the_limit_is_rejected(tmp_path: Path) -> None:
    # Pillow only *warns* here; the module turns that into a refusal too.
    side = 7_500  # 56 MP: above MAX_PIXELS, below 2x
    assert MAX_PIXELS < side * side < 2 * MAX_PIXELS
    source = tmp_path / "big.png"
    write_bomb_png(source, side)

    with pytest.raises(MediaRejected, match="too large"):
        render_photo(source)


def test_text_file_is_not_an_image(tmp_path: Path) -> None:
    source = tmp_path / "notes.jpg"
    source.write_text("definitely not a photo\n" * 20)
    assert sniff_content_type(source.read_bytes()[:64]) is None

    with pytest.raises(MediaRejected) as caught:
        render_photo(source)
    assert caught.value.reason == "The file is not a JPEG, PNG, WebP or HEIC image."


def test_heic_is_decoded_oriented_and_stripped(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0)}
    source = tmp_path / "IMG_0001.HEIC"
    gradient(800, 600).save(source, format="HEIF", exif=exif.tobytes())
    assert sniff_content_type(source.read_bytes()[:64]) == "image/heic"

    result = render_photo(source)

    assert (result.width, result.height, result.detected_type) == (600, 800, "image/heic")
    renditions = by_key(result)
    assert (renditions[("FEED", "JPEG")].width, renditions[("FEED", "JPEG")].height) == (600, 800)
    for rendition in result.renditions:
        assert len(reopen(rendition).getexif()) == 0


def test_a_truncated_heic_is_rejected(tmp_path: Path) -> None:
    source = tmp_path / "IMG_0002.HEIC"
    source.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200))

    with pytest.raises(MediaRejected):
        render_photo(source)


def test_extreme_aspect_ratio_is_rejected(tmp_path: Path) -> None:
    source = tmp_path / "strip.png"
    Image.new("RGB", (100, 2000), (10, 20, 30)).save(source)

    with pytest.raises(MediaRejected, match="narrow or too wide"):
        render_photo(source)


def test_garbage_after_a_valid_signature_is_rejected(tmp_path: Path) -> None:
    source = tmp_path / "fake.png"
    source.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(4096))

    with pytest.raises(MediaRejected):
        render_photo(source)


# --- Videos ------------------------------------------------------------------------------


def test_video_is_probed_postered_and_transcoded(tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    make_video(source, size=(320, 240), seconds=2.0, audio=True)
    work = tmp_path / "work"
    work.mkdir()

    result = render_video(source, work)

    assert (result.width, result.height) == (320, 240)
    assert result.duration_seconds == pytest.approx(2.0, abs=0.1)
    assert result.mp4_path == work / "video.mp4"
    assert result.poster.detected_type == "video/mp4"
    poster = by_key(result.poster)
    assert sorted(poster) == sorted((s, f) for s in SIZES for f in FORMATS)
    assert reopen(poster[("FULL", "JPEG")]).size == (320, 240)
    assert reopen(poster[("THUMB", "WEBP")]).size == (150, 150)
    with av.open(str(result.mp4_path)) as out:
        assert out.format.name.startswith("mov,mp4")
        (video,) = out.streams.video
        assert video.codec_context.name == "h264"
        assert (video.width, video.height) == (320, 240)
        assert video.format.name == "yuv420p"
        (audio,) = out.streams.audio
        assert audio.codec_context.name == "aac"
        assert out.duration is not None
        assert out.duration / av.time_base == pytest.approx(2.0, abs=0.1)
    # faststart: the index (moov) precedes the media data (mdat).
    data = result.mp4_path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")


def test_rotated_1080p_video_is_turned_upright_and_bounded_to_720p(tmp_path: Path) -> None:
    # A phone's portrait video: stored landscape 1920x1080, display matrix says turn it
    # 90° clockwise (-90 counter-clockwise). The stored left (red) half ends up on top.
    source = tmp_path / "portrait.mp4"
    make_video(source, [halves(1920, 1080)] * 13, fps=25, audio=False, rotation=-90)
    work = tmp_path / "work"
    work.mkdir()

    result = render_video(source, work)

    assert (result.width, result.height) == (1080, 1920)
    assert result.duration_seconds == pytest.approx(0.52, abs=0.1)
    full = reopen(by_key(result.poster)[("FULL", "JPEG")])
    assert full.size == (1080, 1920)
    assert is_close(full.getpixel((540, 10)), (255, 0, 0))
    assert is_close(full.getpixel((540, 1910)), (0, 0, 255))
    with av.open(str(result.mp4_path)) as out:
        (video,) = out.streams.video
        assert video.codec_context.name == "h264"
        assert (video.width, video.height) == (720, 1280)
        assert not out.streams.audio
        first = next(out.decode(video))
        assert first.rotation == 0  # turned in the pixels, not by metadata
        picture = first.to_image()
        assert is_close(picture.getpixel((360, 10)), (255, 0, 0))
        assert is_close(picture.getpixel((360, 1270)), (0, 0, 255))


@pytest.mark.parametrize(
    ("name", "container", "detected"),
    [
        ("clip.mov", ("mov", "mpeg4", "aac"), "video/quicktime"),
        ("clip.webm", ("webm", "libvpx", "libopus"), "video/webm"),
    ],
)
def test_quicktime_and_webm_are_transcoded_to_mp4(
    tmp_path: Path, name: str, container: tuple[str, str, str], detected: str
) -> None:
    source = tmp_path / name
    make_video(source, size=(320, 240), seconds=0.5, container=container)

    result = render_video(source, tmp_path)

    assert result.poster.detected_type == detected
    assert (result.width, result.height) == (320, 240)
    assert result.duration_seconds == pytest.approx(0.5, abs=0.1)
    with av.open(str(result.mp4_path)) as out:
        assert out.streams.video[0].codec_context.name == "h264"
        assert out.streams.audio[0].codec_context.name == "aac"


def test_a_few_damaged_packets_are_skipped(tmp_path: Path) -> None:
    source = tmp_path / "damaged.mp4"
    make_video(source, size=(160, 120), seconds=1.0, audio=False)
    with av.open(str(source)) as clip:
        offsets = [p.pos for p in clip.demux(clip.streams.video[0]) if p.size and p.pos]
    data = bytearray(source.read_bytes())
    for offset in offsets[1::4]:
        data[offset] ^= 0xFF  # garble the NAL length prefix: the decoder refuses the packet
    source.write_bytes(bytes(data))

    result = render_video(source, tmp_path)

    assert result.duration_seconds == pytest.approx(1.0, abs=0.1)
    with av.open(str(result.mp4_path)) as out:
        assert 0 < out.streams.video[0].frames < 25


def test_corrupt_video_is_rejected(tmp_path: Path) -> None:
    source = tmp_path / "broken.mp4"
    source.write_bytes(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isommp41" + os.urandom(64_000))
    work = tmp_path / "work"
    work.mkdir()

    with pytest.raises(MediaRejected) as caught:
        render_video(source, work)
    assert caught.value.reason == "The video could not be read."
    assert not (work / "video.mp4").exists()


def test_non_video_is_rejected(tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    gradient(64, 48).save(source, format="PNG")

    with pytest.raises(MediaRejected, match="not an MP4"):
        render_video(source, tmp_path)


def test_too_long_video_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "clip.mp4"
    make_video(source, size=(64, 48), seconds=2.0, audio=False)
    monkeypatch.setattr("infra.images.MAX_VIDEO_SECONDS", 1)

    with pytest.raises(MediaRejected, match="at most"):
        render_video(source, tmp_path)
