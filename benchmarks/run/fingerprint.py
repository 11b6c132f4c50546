"""Cost of fingerprinting a data folder (``planner_trainer.fingerprint.listing``) before a run.

Generated 640 × 480 JPEGs (smooth noise, quality 90) in two classes; arms, each repeated and the median
taken: ``first`` (no listing yet: every file stat'ed and hashed, BLAKE2b on a thread per core), ``same``
(the cheap path of a rerun: every time as recorded, nothing read), ``copied`` (every file copied with
``cp -r``: new times, every file read and found the same), ``stat_only`` (the names, sizes and times
alone, what the listing cost before content hashes). The page cache is warm, as after the run's image
check, which reads every file just before. Usage::

    python -m benchmarks.run.fingerprint [--images 2000] [--reps 5] [--out benchmarks/results/fingerprint.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import timeit
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from benchmarks.paths import RESULTS
from planner_trainer.data import scan_data
from planner_trainer.fingerprint import listing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "fingerprint.json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        pixels = [(rng.random((480, 640, 3)) * 255).astype(np.uint8) for _ in range(8)]
        for index in range(args.images):
            folder = data / "train_images" / f"c{index % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(np.roll(pixels[index % 8], index, axis=1)).filter(ImageFilter.GaussianBlur(3))
            image.save(folder / f"img_{index}.jpg", quality=90)
        layout = scan_data(data)
        total = sum(path.stat().st_size for path in data.rglob("*.jpg"))
        known = listing(layout)
        copies = []

        def copied() -> None:
            shutil.rmtree(data)
            subprocess.run(["cp", "-r", copies[-1], str(data)], check=True)

        arms = {
            "first": timeit.repeat(lambda: listing(layout), number=1, repeat=args.reps),
            "same": timeit.repeat(lambda: listing(layout, known), number=1, repeat=args.reps),
            "stat_only": timeit.repeat(lambda: [(data / name).stat() for name in layout.train], number=1,
                                       repeat=args.reps),
        }
        copy_times = []
        for rep in range(args.reps):
            copies.append(str(Path(tmp) / f"copy{rep}"))
            subprocess.run(["cp", "-r", str(data), copies[-1]], check=True)
            copied()
            copy_times += timeit.repeat(lambda: listing(layout, known), number=1, repeat=1)
        arms["copied"] = copy_times
    result = {"images": args.images, "bytes": total, "cores": len(os.sched_getaffinity(0)),
              "load_average": os.getloadavg()[0],
              "seconds": {arm: times for arm, times in arms.items()},
              "median_seconds": {arm: statistics.median(times) for arm, times in arms.items()}}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["median_seconds"], indent=2), f"{total / 2**20:.1f} MiB, load {result['load_average']}")


if __name__ == "__main__":
    main()
