"""Times `collections run` (the whole local pipeline, offline providers)
against `collections thumbnail` (the first stage alone) on one folder of
distinct 3 MP photos, and prints the ratio of their throughputs.

Each round of `run` stores its items under a new user, in a database made
for this script, so no round skips work an earlier one did.

Usage: compare_local_run.py COLLECTIONS_BIN WORK_DIR [--photos N] [--rounds N]
"""

import argparse
import os
import random
import shutil
import statistics
import subprocess
from pathlib import Path

from PIL import Image, ImageFilter

from compare_thumbnails import measure


def generate(folder: Path, samples: Path, photos: int) -> list:
    """3 MP photos (2048x1536, portrait every fourth): random crops of the
    samples with grain, so each file is distinct, saved as q90 JPEGs."""
    stamp = folder / f".generated-v1-{photos}"
    if stamp.exists():
        return sorted(folder.glob("*.jpg"))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    sources = [Image.open(p).convert("RGB") for p in sorted(samples.iterdir()) if p.suffix in (".jpg", ".png")]
    rng = random.Random(7)
    grain = Image.effect_noise((2048, 2048), 24).convert("RGB")
    for i in range(photos):
        src = sources[i % len(sources)]
        size = (1536, 2048) if i % 4 == 3 else (2048, 1536)
        w, h = src.size
        box = (rng.randint(0, w // 6), rng.randint(0, h // 6), w - rng.randint(0, w // 6), h - rng.randint(0, h // 6))
        big = src.crop(box).resize(size, Image.BILINEAR)
        offset = (rng.randint(0, 2048 - size[0]), rng.randint(0, 2048 - size[1]))
        noise = grain.crop((offset[0], offset[1], offset[0] + size[0], offset[1] + size[1]))
        big = Image.blend(big, noise, 0.08).filter(ImageFilter.UnsharpMask(radius=2, percent=50))
        big.save(folder / f"photo-{i:04}.jpg", quality=90)
        if (i + 1) % 200 == 0:
            print(f"  {i + 1}/{photos}", flush=True)
    stamp.touch()
    return generate(folder, samples, photos)


def psql(url: str, sql: str) -> None:
    quiet = dict(os.environ, PGOPTIONS="--client-min-messages=warning")
    subprocess.run([os.environ.get("COLLECTIONS_PSQL", "psql"), "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql], check=True, env=quiet)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("collections")
    parser.add_argument("work", type=Path)
    parser.add_argument("--samples", type=Path, default=Path(__file__).resolve().parent.parent / "samples")
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    photos = args.work / "photos"
    print(f"generating {args.photos} distinct 3 MP JPEGs in {photos} (once) ...", flush=True)
    files = generate(photos, args.samples, args.photos)
    print(f"{len(files)} images, {sum(p.stat().st_size for p in files) / 1e6:.0f} MB\n", flush=True)

    # A database of its own, made afresh, on the server DATABASE_URL names.
    server = os.environ["DATABASE_URL"]
    base, _, _ = server.rpartition("/")
    database = "collections_local_run_bench"
    psql(server, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    psql(server, f"CREATE DATABASE {database}")
    os.environ["DATABASE_URL"] = f"{base}/{database}"
    os.environ["COLLECTIONS_DATA_DIR"] = str(args.work / "data")
    shutil.rmtree(args.work / "data", ignore_errors=True)
    for var in ("ANALYZER_PROVIDER", "EMBEDDING_PROVIDER"):
        os.environ[var] = "local"
    measure([args.collections, "migrate"])

    def thumbnail() -> dict:
        out = args.work / "out"
        shutil.rmtree(out, ignore_errors=True)
        return measure([args.collections, "thumbnail", str(photos), "--out", str(out)])

    runs = {"collections thumbnail": [], "collections run": []}
    for round_ in range(args.rounds):
        runs["collections thumbnail"].append(thumbnail())
        runs["collections run"].append(measure([args.collections, "run", str(photos), "--user", f"bench{round_}"]))
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)

    n = len(files)
    print("\n| command | images/s | images per CPU-second | peak RSS (MB) |")
    print("|---|---|---|---|")
    rate = {}
    for name, rounds in runs.items():
        wall = statistics.median(r["wall"] for r in rounds)
        cpu = statistics.median(r["cpu"] for r in rounds)
        rate[name] = n / wall
        print(f"| {name} | {n / wall:.1f} | {n / cpu:.1f} | {max(r['rss_mb'] for r in rounds):.0f} |")
    ratio = rate["collections run"] / rate["collections thumbnail"]
    print(f"\nwhole local run / thumbnails alone: {ratio:.2f} of the throughput (goal: at least 0.80)")
    print(f"({os.cpu_count()} CPUs; median of {args.rounds} rounds; the run's CPU time leaves out PostgreSQL's)")


if __name__ == "__main__":
    main()
