"""Times three thumbnailers on one folder of phone-sized photos, in one run:
`collections thumbnail`, the seed's approach (Pillow's `thumbnail((800, 800))`,
one image at a time), and libvips' `vipsthumbnail`. Prints images/s, images
per CPU-second, peak RSS and the ratios.

Usage: compare_thumbnails.py COLLECTIONS_BIN WORK_DIR [--jpegs N] [--pngs N] [--rounds N]
"""

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageFilter

QUALITY = 85  # the same JPEG quality for every tool (collections' default)
SIZE = 800

PILLOW_SEED_APPROACH = f"""
import sys
from pathlib import Path
from PIL import Image
out = Path(sys.argv[1])
for path in sys.argv[2:]:
    with Image.open(path) as im:
        im.thumbnail(({SIZE}, {SIZE}))
        im.save(out / Path(path).name, quality={QUALITY})
"""


def generate(folder: Path, samples: Path, jpegs: int, pngs: int) -> list:
    """Phone-sized photos: crops of the sample images enlarged to 12 MP with
    camera-like grain, saved as q92 4:2:0 JPEGs (3-4 MB each), plus a few
    2400x1800 PNGs."""
    stamp = folder / f".generated-v2-{jpegs}-{pngs}"
    if stamp.exists():
        return sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".png"))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    sources = sorted(p for p in samples.iterdir() if p.suffix in (".jpg", ".png"))
    rng = random.Random(42)
    for i in range(jpegs + pngs):
        src = Image.open(sources[i % len(sources)]).convert("RGB")
        portrait = i % 4 == 3
        size = (3024, 4032) if portrait else (4032, 3024)
        # A random crop, enlarged: each photo differs.
        w, h = src.size
        left, top = rng.randint(0, w // 8), rng.randint(0, h // 8)
        big = src.crop((left, top, w - rng.randint(0, w // 8), h - rng.randint(0, h // 8))).resize(size, Image.LANCZOS)
        # Sensor-like grain and sharpening: files of 3-4 MB, as phones write them.
        grain = Image.effect_noise(size, 32).convert("RGB")
        big = Image.blend(big, grain, 0.10).filter(ImageFilter.UnsharpMask(radius=2, percent=60))
        if i < jpegs:
            big.save(folder / f"photo-{i:03}.jpg", quality=92, subsampling=2)
        else:
            big.resize((2400, 1800)).save(folder / f"screen-{i:03}.png", compress_level=6)
    stamp.touch()
    return generate(folder, samples, jpegs, pngs)


def measure(argv: list) -> dict:
    """Runs a command; its wall time, CPU time (user + sys) and peak RSS.

    Peak RSS comes from GNU time, which forks the command itself: a child
    forked straight from this (large) Python process would inherit its
    high-water mark through exec and report it as its own."""
    start = time.perf_counter()
    report = tempfile.NamedTemporaryFile("r", suffix=".rss")
    proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", report.name] + argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stderr = proc.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{argv[0]} failed:\n{stderr}")
    rss_kb = int(report.read().strip().splitlines()[-1])
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": rss_kb / 1024}


def combine(runs: list) -> dict:
    """Several commands that together make one tool's run."""
    return {"wall": sum(r["wall"] for r in runs), "cpu": sum(r["cpu"] for r in runs), "rss_mb": max(r["rss_mb"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("collections")
    parser.add_argument("work", type=Path)
    parser.add_argument("--samples", type=Path, default=Path(__file__).resolve().parent.parent / "samples")
    parser.add_argument("--jpegs", type=int, default=40)
    parser.add_argument("--pngs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    photos = args.work / "photos"
    print(f"generating {args.jpegs} 12 MP JPEGs and {args.pngs} PNGs in {photos} (once) ...", flush=True)
    files = generate(photos, args.samples, args.jpegs, args.pngs)
    jpgs = [str(p) for p in files if p.suffix == ".jpg"]
    pngs = [str(p) for p in files if p.suffix == ".png"]
    size_mb = sum(p.stat().st_size for p in files) / 1e6
    print(f"{len(files)} images, {size_mb:.0f} MB; thumbnails fit {SIZE}x{SIZE}, JPEG quality {QUALITY}\n")

    def out(name: str) -> Path:
        d = args.work / "out" / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d

    env_quality = {"THUMBNAIL_JPEG_QUALITY": str(QUALITY), "THUMBNAIL_MAX_SIZE": str(SIZE)}
    os.environ.update(env_quality)
    tools = {
        "collections thumbnail": lambda: measure([args.collections, "thumbnail", str(photos), "--out", str(out("collections"))]),
        "Pillow thumbnail() (seed)": lambda: measure([sys.executable, "-c", PILLOW_SEED_APPROACH, str(out("pillow"))] + jpgs + pngs),
        "vipsthumbnail": lambda: combine([
            measure(["vipsthumbnail", "--size", f"{SIZE}x{SIZE}", "-o", f"{out('vips')}/%s.jpg[Q={QUALITY},optimize_coding]"] + jpgs),
            measure(["vipsthumbnail", "--size", f"{SIZE}x{SIZE}", "-o", f"{args.work / 'out' / 'vips'}/%s.png"] + pngs),
        ]),
    }
    results = {name: [] for name in tools}
    for round_ in range(args.rounds):
        for name, run in tools.items():
            results[name].append(run())
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)

    n = len(files)
    rows = {}
    for name, runs in results.items():
        wall = statistics.median(r["wall"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        rows[name] = {"ips": n / wall, "ipcs": n / cpu, "rss": max(r["rss_mb"] for r in runs)}
    base, peer = rows["Pillow thumbnail() (seed)"], rows["vipsthumbnail"]
    print(f"\n| tool | images/s | images per CPU-second | peak RSS (MB) |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['ips']:.1f} | {r['ipcs']:.1f} | {r['rss']:.0f} |")
    ours = rows["collections thumbnail"]
    print()
    print(f"collections vs Pillow:        {ours['ips'] / base['ips']:.2f}x images/s, {ours['ipcs'] / base['ipcs']:.2f}x images per CPU-second, RSS {ours['rss'] / base['rss']:.2f}x")
    print(f"collections vs vipsthumbnail: {ours['ips'] / peer['ips']:.2f}x images/s, {ours['ipcs'] / peer['ipcs']:.2f}x images per CPU-second, RSS {ours['rss'] / peer['rss']:.2f}x")
    print(f"({os.cpu_count()} CPUs; median of {args.rounds} rounds; peak RSS is the largest seen)")


if __name__ == "__main__":
    main()
