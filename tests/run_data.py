"""Small real inputs for the `planner run` tests: an image folder in the reference layout and plans."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from planner.base.plan import ItemTransform, MeasuredOn, Plan, PlanEntry, save_plan

COLOURS = ((200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40))


def make_image_folder(
    root: Path, classes: int = 3, per_class: int = 12, test: int = 6, side: int = 40
) -> Path:
    """train_images/c<k>/img_<i>.png (a class colour plus noise), test_images/, sample_submission.csv."""
    rng = np.random.default_rng(0)

    def image(colour: tuple[int, int, int]) -> Image.Image:
        noise = rng.integers(-30, 31, size=(side, side, 3))
        return Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8))

    index = 0
    for label in range(classes):
        folder = root / "train_images" / f"c{label}"
        folder.mkdir(parents=True)
        for _ in range(per_class):
            image(COLOURS[label]).save(folder / f"img_{index}.png")
            index += 1
    (root / "test_images").mkdir()
    names = [f"img_{i}.png" for i in range(test)]
    for i, name in enumerate(names):
        image(COLOURS[i % classes]).save(root / "test_images" / name)
    with (root / "sample_submission.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_id", "label"])
        writer.writerows([name, "c0"] for name in names)
    return root


def plan_entry(arch: str, micro_batch: int = 4, accum: int = 2, size: int = 32, resize: int = 40,
               predicted_peak_bytes: int = 200 * 2**20) -> PlanEntry:
    """A plan entry as the probe writes it (its evidence fields filled with plain values)."""
    item = ItemTransform(resize=resize, method="crop")
    return PlanEntry(
        name=f"{arch}-{item.label}-{size}", arch=arch, item=item, size=(size, size), accum=accum,
        micro_batch=micro_batch, predicted_peak_bytes=predicted_peak_bytes, fits=True, headroom_bytes=0,
    )


def write_plan(path: Path, entries: list[PlanEntry], effective_batch_size: int = 8) -> Path:
    """A valid plan.json measured on the cpu."""
    import fastai
    import timm
    import torch

    plan = Plan(
        budget_bytes=2**30, margin=0.1, effective_batch_size=effective_batch_size,
        measured_on=MeasuredOn(device="cpu", precision="fp32", torch=torch.__version__,
                               timm=timm.__version__, fastai=fastai.__version__),
        entries=entries, created="2026-01-01T00:00:00+00:00",
    )
    return save_plan(plan, path)


def small_plan(path: Path) -> Path:
    """The two-entry plan of the tests: resnet18 and convnext_atto at 32 px, 4 × 2 = 8."""
    return write_plan(path, [plan_entry("resnet18"), plan_entry("convnext_atto")])
