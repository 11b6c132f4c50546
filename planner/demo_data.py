"""A real small data set in the reference layout, from a package (nothing is downloaded).

scikit-learn ships ``load_digits``: 1,797 real handwritten digits, 8×8 pixels, 16 grey levels.
They are written as PNGs: ``train_images/<digit>/*.png``, ``test_images/*.png`` and a
``sample_submission.csv`` (``image_id,label``) listing the test files, as in the Paddy Doctor
competition the reference workflow was written for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from planner.base.atomic import atomic_write_text

TEST_FRACTION = 0.15


def write_digits(folder: str | Path, *, limit: int | None = None, seed: int = 0) -> Path:
    """Write the digits as an image folder; returns the folder.

    Args:
        folder: where to write; existing files of a previous call are overwritten.
        limit: use only the first ``limit`` digits (after shuffling), for quick runs.
        seed: shuffles which digits become test images.

    Returns:
        The folder.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))[:limit]
    n_test = max(1, int(len(order) * TEST_FRACTION))
    root = Path(folder)
    test_ids = []
    for rank, index in enumerate(order):
        pixels = (digits.images[index] * (255 / 16)).astype(np.uint8)
        image = Image.fromarray(pixels, mode="L").convert("RGB")
        name = f"digit_{index:04d}.png"
        if rank < n_test:
            path = root / "test_images" / name
            test_ids.append(name)
        else:
            path = root / "train_images" / str(digits.target[index]) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
    submission = pd.DataFrame({"image_id": sorted(test_ids), "label": "0"})
    atomic_write_text(root / "sample_submission.csv", submission.to_csv(index=False))
    return root
