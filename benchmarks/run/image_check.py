"""Cost of checking a data folder's images before training: PIL's ``verify()`` against a decode.

``planner run`` decodes every image once (``planner.base.pixels.check_images``: a JPEG at 1/8 scale through
PIL's ``draft``, on a thread per core), because ``verify()`` reads headers only and passes a truncated
JPEG. Arms, each over the same generated 640 × 480 JPEGs (Paddy Doctor's size; smooth noise, quality
90), repeated and the median taken: ``verify`` (the old check), ``draft`` (decode at 1/8 scale, one
thread), ``full`` (a whole decode, one thread), ``check_images`` (the product: draft on the pool).
Also: whether each arm catches a JPEG cut in half; and what training's read of an image costs, fastai's
``PILImage.create`` (``fastai_read``) against the ``RGBImage.create`` the run uses (``training_read``:
``planner.base.pixels.open_rgb``, with its EXIF and pixel-type handling). Usage::

    python -m benchmarks.run.image_check [--images 200] [--reps 5] [--out benchmarks/results/image_check.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from fastai.vision.core import PILImage
from PIL import Image, ImageFilter

from benchmarks.paths import RESULTS
from planner.base.errors import UserError
from planner.base.pixels import check_images
from planner.base.rgb_image import RGBImage


def verify(path: Path) -> None:
    with Image.open(path) as image:
        image.verify()


def decode(path: Path, draft: bool) -> None:
    with Image.open(path) as image:
        if draft:
            image.draft("RGB", (image.width // 8, image.height // 8))
        image.load()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "image_check.json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = []
        for index in range(args.images):
            pixels = (rng.random((480, 640, 3)) * 255).astype(np.uint8)
            path = root / f"img_{index}.jpg"
            Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(3)).save(path, quality=90)
            paths.append(path)
        whole = paths[0].read_bytes()
        broken = root / "broken.jpg"
        broken.write_bytes(whole[: len(whole) // 2])
        arms = {
            "verify": lambda: [verify(path) for path in paths],
            "draft": lambda: [decode(path, True) for path in paths],
            "full": lambda: [decode(path, False) for path in paths],
            "check_images": lambda: check_images(paths, root),
            "fastai_read": lambda: [PILImage.create(path) for path in paths],
            "training_read": lambda: [RGBImage.create(path) for path in paths],
        }
        seconds: dict[str, list[float]] = {name: [] for name in arms}
        for rep in range(args.reps):
            for name in (list(arms) if rep % 2 == 0 else list(reversed(arms))):
                started = time.perf_counter()
                arms[name]()
                seconds[name].append(time.perf_counter() - started)
        catches = {}
        checks = (("verify", verify), ("draft", lambda p: decode(p, True)), ("full", lambda p: decode(p, False)),
                  ("check_images", lambda p: check_images([p], root)))
        for name, check in checks:
            try:
                check(broken)
                catches[name] = False
            except (OSError, SyntaxError, UserError):
                catches[name] = True
    per_image_ms = {name: round(1000 * statistics.median(values) / args.images, 3) for name, values in seconds.items()}
    result = {
        "machine": {"description": "2-core CPU-only dev machine, shared with other agents' jobs",
                    "cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg()},
        "images": args.images, "size": [640, 480], "reps": args.reps,
        "median_ms_per_image": per_image_ms, "catches_truncated_jpeg": catches,
        "seconds": {name: [round(value, 3) for value in values] for name, values in seconds.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"median_ms_per_image": per_image_ms, "catches_truncated_jpeg": catches,
                      "loadavg": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    main()
