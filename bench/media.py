"""Photo rendition benchmark: naive Pillow vs infra.images.render_photo vs pyvips.

    .venv/bin/python bench/media.py [--runs 5] [--keep-inputs DIR]

Generates a 12 MP photographic-looking JPEG and the same picture as PNG, then, for each
input, produces the full rendition set (THUMB/FEED/FULL x JPEG/WebP + BlurHash) by:

  naive        full decode, then Image.resize(LANCZOS) from full size for every size
  ours         infra.images.render_photo (draft() shrink-on-load, chained resizes)
  pyvips       pyvips.Image.thumbnail to FULL, thumbnail_image from it for FEED/THUMB
  pyvips-3x    pyvips.Image.thumbnail from the file once per size (the textbook usage)

All paths use the same encoder settings (infra.images.JPEG_SAVE / WEBP_SAVE) and the same
placeholder method. Each (path, input) runs in a fresh subprocess so that its peak RSS
(VmHWM, the high-water mark, minus the child's RSS after its imports) is its own; the
time is the median wall time of --runs runs after one warm-up run. Results go to
bench/results/media-<timestamp>.json. pyvips is optional (pip install pyvips
pyvips-binary): without it the pyvips rows are skipped, and the report says so.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import blurhash
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageOps, features

from infra import images

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PATHS = ("naive", "ours", "pyvips", "pyvips-3x")
INPUTS = ("jpeg", "png")
WIDTH, HEIGHT = 4000, 3000

Outputs = list[tuple[str, str, int, int, int]]  # size, format, width, height, bytes


# --- Inputs ------------------------------------------------------------------------------


def photo_like(width: int, height: int, seed: int = 12) -> Image.Image:
    """Smooth gradients and soft shapes plus sensor-like noise.

    Flat synthetic images compress 20x better than photos and decode far faster, which
    flatters every path; noise at sigma 18 brings a 12 MP JPEG (q90) to ~5 MB, in the
    range of a phone camera's output.
    """
    rnd = random.Random(seed)  # noqa: S311 - test content, not secrets
    red = Image.linear_gradient("L").resize((width, height))
    green = Image.radial_gradient("L").resize((width, height))
    blue = Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize((width, height))
    base = Image.merge("RGB", (red, green, blue))
    draw = ImageDraw.Draw(base)
    for _ in range(60):
        x, y, r = (
            rnd.randrange(width),
            rnd.randrange(height),
            rnd.randrange(width // 40, width // 6),
        )
        fill = (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    base = base.filter(ImageFilter.GaussianBlur(6))
    noise = Image.merge("RGB", [Image.effect_noise((width, height), 18) for _ in range(3)])
    return ImageChops.add(base, noise, scale=1.0, offset=-128)


def make_inputs(directory: Path) -> dict[str, Path]:
    picture = photo_like(WIDTH, HEIGHT)
    paths = {"jpeg": directory / "photo-12mp.jpg", "png": directory / "photo-12mp.png"}
    picture.save(paths["jpeg"], quality=90)
    # Level 3: the file is what a camera app would write; decode cost barely depends on it.
    picture.save(paths["png"], compress_level=3)
    return paths


# --- The three paths ---------------------------------------------------------------------


def _encode_pillow(size: str, image: Image.Image) -> Outputs:
    out: Outputs = []
    for fmt in images.FORMATS:
        buf = io.BytesIO()
        image.save(buf, fmt, **(images.JPEG_SAVE if fmt == "JPEG" else images.WEBP_SAVE))
        out.append((size, fmt, image.width, image.height, len(buf.getvalue())))
    return out


def _blurhash_rows(raw: bytes, width: int, height: int) -> str:
    stride = width * 3
    rows = [[raw[x : x + 3] for x in range(y * stride, (y + 1) * stride, 3)] for y in range(height)]
    return str(blurhash.encode(rows, *images.PLACEHOLDER_COMPONENTS))


def run_naive(path: Path) -> Outputs:
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened)
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        image = Image.new("RGB", image.size, (255, 255, 255))
        image.paste(rgba, mask=rgba.getchannel("A"))
    image = image.convert("RGB")
    out: Outputs = []
    for size, target in images.SIZES.items():
        if size == "THUMB":
            side = min(target, *image.size)
            resized = ImageOps.fit(image, (side, side), Image.Resampling.LANCZOS)
        else:
            w = min(target, image.width)
            resized = image.resize(
                (w, round(image.height * w / image.width)), Image.Resampling.LANCZOS
            )
        out += _encode_pillow(size, resized)
    side = images.PLACEHOLDER_SIZE
    tiny = image.resize((side, max(1, round(side * image.height / image.width))))
    _blurhash_rows(tiny.tobytes(), tiny.width, tiny.height)
    return out


def run_ours(path: Path) -> Outputs:
    result = images.render_photo(path)
    return [(r.size, r.format, r.width, r.height, len(r.data)) for r in result.renditions]


def _pyvips_encode(size: str, image: Any) -> Outputs:
    jpeg = images.JPEG_SAVE
    webp = images.WEBP_SAVE
    return [
        (
            size,
            "JPEG",
            image.width,
            image.height,
            len(
                image.jpegsave_buffer(
                    Q=jpeg["quality"],
                    optimize_coding=jpeg["optimize"],
                    interlace=jpeg["progressive"],
                    keep=0,
                )
            ),
        ),
        (
            size,
            "WEBP",
            image.width,
            image.height,
            len(image.webpsave_buffer(Q=webp["quality"], effort=webp["method"], keep=0)),
        ),
    ]


def _pyvips_rgb(image: Any) -> Any:
    if image.hasalpha():
        image = image.flatten(background=[255, 255, 255])
    return image.colourspace("srgb") if image.bands != 3 else image


def _pyvips_placeholder(image: Any) -> None:
    tiny = image.thumbnail_image(images.PLACEHOLDER_SIZE)
    _blurhash_rows(tiny.write_to_memory(), tiny.width, tiny.height)


def run_pyvips(path: Path) -> Outputs:
    import pyvips

    big = 10_000_000  # "no limit": bound by width only, like the other paths
    full = _pyvips_rgb(
        pyvips.Image.thumbnail(str(path), images.SIZES["FULL"], height=big, size="down")
    )
    full = full.copy_memory()  # decode once; FEED and THUMB are derived from memory
    feed = full.thumbnail_image(images.SIZES["FEED"], height=big, size="down").copy_memory()
    side = images.SIZES["THUMB"]
    thumb = feed.thumbnail_image(side, height=side, crop="centre", size="down")
    out = _pyvips_encode("THUMB", thumb) + _pyvips_encode("FEED", feed)
    out += _pyvips_encode("FULL", full)
    _pyvips_placeholder(feed)
    return out


def run_pyvips_3x(path: Path) -> Outputs:
    import pyvips

    out: Outputs = []
    feed = None
    for size, target in images.SIZES.items():
        kwargs: dict[str, Any] = {"height": 10_000_000, "size": "down"}
        if size == "THUMB":
            kwargs = {"height": target, "crop": "centre", "size": "down"}
        image = _pyvips_rgb(pyvips.Image.thumbnail(str(path), target, **kwargs)).copy_memory()
        out += _pyvips_encode(size, image)
        if size == "FEED":
            feed = image
    _pyvips_placeholder(feed)
    return out


RUNNERS: dict[str, Callable[[Path], Outputs]] = {
    "naive": run_naive,
    "ours": run_ours,
    "pyvips": run_pyvips,
    "pyvips-3x": run_pyvips_3x,
}


# --- Child: one (path, input) in a fresh process -----------------------------------------


def _status_mb(field: str) -> float | None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    return None


def _reset_peak() -> bool:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss_mb() -> float:
    """This process's RSS high-water mark.

    getrusage's ru_maxrss would be simpler, but Linux carries it over fork and exec: every
    child would report the parent's peak (which holds the generated 12 MP inputs). VmHWM
    belongs to the child's own address space.
    """
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(path_name: str, input_path: Path, runs: int) -> dict[str, Any]:
    if path_name.startswith("pyvips"):
        import pyvips

        # The operation cache would answer repeated runs from memory.
        pyvips.cache_set_max(0)
    runner = RUNNERS[path_name]
    _reset_peak()
    baseline = _peak_rss_mb()
    outputs = runner(input_path)  # warm-up: first-use initialisation is not the steady state
    walls, cpus = [], []
    for index in range(runs):
        cpu, wall = _cpu_seconds(), time.perf_counter()
        runner(input_path)
        walls.append(time.perf_counter() - wall)
        cpus.append(_cpu_seconds() - cpu)
        print(f"    run {index + 1}/{runs}: {walls[-1] * 1000:.0f} ms", file=sys.stderr, flush=True)
    peak = _peak_rss_mb()
    return {
        "wall_ms": [round(w * 1000, 1) for w in walls],
        "median_ms": round(statistics.median(walls) * 1000, 1),
        "cpu_ms": round(statistics.median(cpus) * 1000, 1),
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_over_baseline_mb": round(peak - baseline, 1),
        "outputs": outputs,
    }


# --- Parent ------------------------------------------------------------------------------


def pyvips_version() -> str | None:
    try:
        import pyvips
    except (ImportError, OSError):
        return None
    return f"pyvips {pyvips.__version__}, libvips {pyvips.version(0)}.{pyvips.version(1)}"


def measure(path_name: str, input_path: Path, runs: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", path_name, str(input_path), "--runs", str(runs)]
    done = subprocess.run(  # noqa: S603 - our own interpreter and script, no shell
        cmd, stdout=subprocess.PIPE, text=True, check=True, cwd=ROOT
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per path (default 5)")
    parser.add_argument("--keep-inputs", type=Path, help="write the generated inputs here")
    parser.add_argument("--child", nargs=2, metavar=("PATH", "INPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), args.runs)))
        return

    vips = pyvips_version()
    paths = [p for p in PATHS if vips or not p.startswith("pyvips")]
    print(f"media bench: {WIDTH}x{HEIGHT} inputs, {args.runs} runs, {os.cpu_count()} CPUs")
    print(
        f"  Pillow {Image.__version__} (libjpeg-turbo {features.version('libjpeg_turbo')}, "
        f"libwebp {features.version('webp')}); {vips or 'pyvips not importable: skipped'}"
    )

    with tempfile.TemporaryDirectory(prefix="bench-media-") as tmp:
        directory = args.keep_inputs or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        print("generating inputs...", flush=True)
        inputs = make_inputs(directory)
        for name, path in inputs.items():
            print(f"  {name}: {path.stat().st_size / 1e6:.1f} MB", flush=True)

        results: dict[str, dict[str, Any]] = {}
        total, step = len(inputs) * len(paths), 0
        for input_name, input_path in inputs.items():
            for path_name in paths:
                step += 1
                print(f"[{step}/{total}] {path_name} on {input_name}", flush=True)
                results[f"{input_name}/{path_name}"] = measure(path_name, input_path, args.runs)
                r = results[f"{input_name}/{path_name}"]
                print(f"    median {r['median_ms']} ms, peak +{r['peak_over_baseline_mb']} MB")
        input_sizes = {name: path.stat().st_size for name, path in inputs.items()}

    print()
    header = (
        f"{'input':6} {'path':10} {'median ms':>10} {'cpu ms':>8} {'peak MB':>8} "
        f"{'+MB':>7} {'ours/this':>10} {'FULL jpg/webp KB':>17}"
    )
    print(header)
    print("-" * len(header))
    for input_name in inputs:
        ours = results[f"{input_name}/ours"]["median_ms"]
        for path_name in paths:
            r = results[f"{input_name}/{path_name}"]
            full = {o[1]: o[4] for o in r["outputs"] if o[0] == "FULL"}
            print(
                f"{input_name:6} {path_name:10} {r['median_ms']:>10} {r['cpu_ms']:>8} "
                f"{r['peak_rss_mb']:>8} {r['peak_over_baseline_mb']:>7} "
                f"{ratio(ours, r['median_ms']):>10} "
                f"{full['JPEG'] / 1000:>8.0f}/{full['WEBP'] / 1000:<8.0f}"
            )
    print()
    summary: dict[str, dict[str, Any]] = {}
    for input_name in inputs:
        ours = results[f"{input_name}/ours"]
        best_vips = min(
            (results[f"{input_name}/{p}"]["median_ms"] for p in paths if p.startswith("pyvips")),
            default=None,
        )
        summary[input_name] = {
            "ours_over_pyvips": round(ours["median_ms"] / best_vips, 2) if best_vips else None,
            "ours_over_naive": round(
                ours["median_ms"] / results[f"{input_name}/naive"]["median_ms"], 2
            ),
            "ours_peak_over_baseline_mb": ours["peak_over_baseline_mb"],
        }
        s = summary[input_name]
        print(
            f"{input_name}: ours/pyvips {s['ours_over_pyvips'] or '-'} (goal <= 1.25, vs the "
            f"faster pyvips path), ours/naive {s['ours_over_naive']}, ours peak "
            f"+{s['ours_peak_over_baseline_mb']} MB (goal < 150)"
        )

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = {
        "timestamp": stamp,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": {
            "python": platform.python_version(),
            "pillow": Image.__version__,
            "libjpeg_turbo": features.version("libjpeg_turbo"),
            "libwebp": features.version("webp"),
            "pyvips": vips,
        },
        "params": {
            "runs": args.runs,
            "size": [WIDTH, HEIGHT],
            "input_bytes": input_sizes,
            "jpeg_save": images.JPEG_SAVE,
            "webp_save": images.WEBP_SAVE,
        },
        "results": results,
        "summary": summary,
    }
    out = RESULTS / f"media-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
