"""On a CUDA machine: train one plan entry with `planner run` under a capped budget and compare the
measured peak with the plan's prediction. On a machine without CUDA it says so and exits 0.

The entry is taken from ``--plan`` (``--entry`` picks one; default the first), or is the reference's
``convnext_large_in22k`` (timm ``convnext_large.fb_in22k``) at 320×224 from 640×480 crops, micro-batch
32 × accum 2, with no prediction to compare. Images are synthetic (memory does not depend on pixels),
written to a temporary folder; weights are random (no network). ``planner.base.cuda_device.cap_to_budget``
makes the allocator fail where a card of ``--budget`` would; an out-of-memory try is retried with
more accumulation by `planner run` itself and shows up as a miss. Usage::

    python -m benchmarks.gpu.run_check [--plan plan.json] [--entry NAME] [--budget 16G]
        [--images 800] [--epochs 11] [--out benchmarks/results/gpu_run_check.json]

With the defaults it trains (11 + 1) epochs × 20 micro-batches = 240 steps of 32 images.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.paths import RESULTS
from planner.base.budget import format_bytes, parse_budget
from planner.base.plan import ItemTransform, MeasuredOn, Plan, PlanEntry, load_plan, save_plan

REFERENCE = PlanEntry(
    name="convnext_large_in22k-crop640x480-320x224", arch="convnext_large.fb_in22k",
    reference_arch="convnext_large_in22k", item=ItemTransform(resize=(640, 480), method="crop"),
    size=(320, 224), accum=2, micro_batch=32, predicted_peak_bytes=0, fits=True, headroom_bytes=0,
)


def write_images(root: Path, item: ItemTransform, count: int, classes: int = 4) -> Path:
    """``count`` JPEGs at the item transform's input size in ``classes`` class folders, plus 8 test images."""
    rows, cols = (item.resize, item.resize) if isinstance(item.resize, int) else item.resize
    rng = np.random.default_rng(0)
    for index in range(count + 8):
        folder = root / ("test_images" if index >= count else f"train_images/class{index % classes}")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(rows // 8, cols // 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((cols, rows)).save(folder / f"img_{index}.jpg", quality=90)
    return root


def chosen_plan(args: argparse.Namespace, path: Path) -> tuple[Plan, PlanEntry]:
    """The plan to run (one entry), written to ``path``."""
    import fastai
    import timm
    import torch

    if args.plan:
        plan = load_plan(args.plan)
        names = [e.name for e in plan.entries]
        if args.entry and args.entry not in names:
            raise SystemExit(f"entry {args.entry!r} is not in {args.plan}")
        entry = plan.entries[names.index(args.entry)] if args.entry else plan.entries[0]
    else:
        entry = REFERENCE
        plan = Plan(budget_bytes=parse_budget(args.budget), margin=0.0, effective_batch_size=64,
                    measured_on=MeasuredOn(device="estimate", precision="fp16", torch=torch.__version__,
                                           timm=timm.__version__, fastai=fastai.__version__),
                    entries=[entry], created="gpu_run_check")
    plan = plan.model_copy(update={"entries": [entry]})
    save_plan(plan, path)
    return plan, entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path)
    parser.add_argument("--entry")
    parser.add_argument("--budget", default="16G")
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--epochs", type=int, default=11)
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu_run_check.json")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("benchmarks.gpu.run_check: needs a CUDA device and none is available here; nothing checked")
        return 0

    from planner.base import cuda_device as gpu
    from planner_trainer.options import RunOptions
    from planner_trainer.progress import LineReporter
    from planner_trainer.run import run_plan

    budget = parse_budget(args.budget)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plan, entry = chosen_plan(args, root / "plan.json")
        data = write_images(root / "data", entry.item, args.images)
        gpu.cap_to_budget(budget)
        started = time.perf_counter()
        options = RunOptions(epochs=args.epochs, pretrained=False, device="cuda")
        result = run_plan(root / "plan.json", data, root / "run", options, LineReporter(print))
        seconds = time.perf_counter() - started
        record = result.run.entries[entry.name]

    measured = record.memory.peak_bytes if record.memory else None
    predicted = entry.predicted_peak_bytes or None
    report = {
        "gpu": gpu.gpu_name(), "gpu_total_bytes": gpu.gpu_total_bytes(), "budget_bytes": budget,
        "torch": torch.__version__, "entry": entry.name, "arch": entry.arch,
        "planned": {"accum": entry.accum, "micro_batch": entry.micro_batch},
        "trained": {"accum": record.accum, "micro_batch": record.micro_batch},
        "oom_misses": [miss.to_dict() for miss in record.oom_misses],
        "predicted_peak_bytes": predicted, "predicted_on": plan.measured_on.device,
        "measured_peak_bytes": measured, "phase_peaks": record.memory.phase_peaks if record.memory else None,
        "measured_over_predicted": measured / predicted if measured and predicted else None,
        "fits_budget": measured is not None and measured <= budget,
        "status": record.status, "epochs": args.epochs + 1, "images": args.images, "seconds": seconds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{entry.name}: measured peak {format_bytes(measured)} vs predicted "
          f"{format_bytes(predicted)} ({plan.measured_on.device}) under a {format_bytes(budget)} cap; "
          f"trained at accum {record.accum} × micro-batch {record.micro_batch} "
          f"({len(record.oom_misses)} out-of-memory retries); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
