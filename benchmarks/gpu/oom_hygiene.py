"""On a CUDA machine: does a try of `planner run` that runs out of memory leave anything behind in its
process (issue 22)? On a machine without CUDA it says so in one line and exits 0.

In one process, three tries of one entry with `planner run`'s own code (``planner_trainer.one_try``), the
allocator configured as `planner run` configures it (``planner.base.allocator``):

1. the planned micro-batch, uncapped: the baseline (its peak sets the cap);
2. a micro-batch four times larger under a cap of 1.15 × the baseline's peak
   (``torch.cuda.set_per_process_memory_fraction`` through ``planner.base.cuda_device.cap_to_budget``):
   it runs out of memory (in the forward pass, where fastai's mixed precision has entered autocast,
   when ``autocast_depth.before_cleanup`` is 1);
3. the planned micro-batch again, under the same cap.

Allocated and reserved bytes are read at the start, after the baseline, right after the failed try
(before its cleanup), after its cleanup and after the third try, with the tries' measured start
bytes, peaks and allocator configuration, and autocast's nesting depth. A clean process: allocated
after the cleanup equals allocated after the baseline, the third try starts with the baseline's
start bytes, fits, and measures the baseline's peak (cuDNN may choose other algorithms under a cap).
The JSON goes to stdout and to ``--out``. Images are synthetic, weights random (no network)::

    python -m benchmarks.gpu.oom_hygiene [--arch resnet50] [--size 224] [--images 100] [--out FILE]
    PYTORCH_CUDA_ALLOC_CONF= python -m benchmarks.gpu.oom_hygiene   # torch's allocator defaults
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.paths import RESULTS

EFFECTIVE_BATCH = 64
PLANNED_ACCUM = 4  # micro-batch 16
OOM_ACCUM = 1  # micro-batch 64: four times the planned one
CAP_HEADROOM = 1.15


def write_images(root: Path, count: int, side: int, classes: int = 4) -> Path:
    """``count`` JPEGs of ``side`` px in ``classes`` class folders (the reference layout), no test images."""
    rng = np.random.default_rng(0)
    for index in range(count):
        folder = root / "train_images" / f"class{index % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(side // 8, side // 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((side, side)).save(folder / f"img_{index}.jpg", quality=90)
    return root


def allocator_bytes() -> dict[str, int]:
    """What torch's allocator holds now, and what the card holds for this process beside it."""
    import torch

    from planner.base import cuda_device as gpu

    return {"allocated": torch.cuda.memory_allocated(), "reserved": torch.cuda.memory_reserved(),
            "non_torch": gpu.non_torch_bytes()}


def autocast_depth() -> int:
    """How many autocast regions this thread is in (torch's counter is only readable by changing it)."""
    import torch

    depth = torch.autocast_increment_nesting() - 1
    torch.autocast_decrement_nesting()
    return depth


def check_oom_hygiene(arch: str, size: int, images: int) -> dict[str, Any]:
    """Run the three tries of the module docstring in this process and report what each left.

    Args:
        arch: the timm architecture (random weights).
        size: the square training size; images are written at ``size + size // 8``.
        images: training images (at least the effective batch after the 20 % held out).

    Returns:
        The report: allocator bytes at each point, the tries' records, and the verdict.
    """
    import torch

    from planner.base import cuda_device as gpu
    from planner.base.allocator import use_allocator
    from planner.base.plan import ItemTransform, PlanEntry
    from planner.base.recipe import prepare_device
    from planner.base.runfile import RunSettings
    from planner_trainer.data import scan_data
    from planner_trainer.memory import release_memory
    from planner_trainer.one_try import TryDone, run_try, try_outcome
    from planner_trainer.progress import Reporter
    from planner_trainer.split import draw_split
    from planner_trainer.try_spec import RunInputs, TrySpec

    allocator = use_allocator()  # as planner run does, before CUDA starts
    prepare_device("cuda")
    torch.empty(1, device="cuda")  # the context, so that "start" is comparable with the later points
    points = {"start": allocator_bytes()}
    resize = size + size // 8
    entry = PlanEntry(name=f"{arch}-{size}", arch=arch, item=ItemTransform(resize=resize, method="crop"),
                      size=(size, size), accum=PLANNED_ACCUM, micro_batch=EFFECTIVE_BATCH // PLANNED_ACCUM,
                      predicted_peak_bytes=0, fits=True, headroom_bytes=0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        layout = scan_data(write_images(root / "data", images, resize))
        inputs = RunInputs(effective_batch_size=EFFECTIVE_BATCH, layout=layout,
                           split=draw_split(layout.train, 0.2, 0), device="cuda", seed=0, save_models=False,
                           settings=RunSettings(epochs=1, lr=1e-3, pretrained=False), allocator=allocator)
        tries: dict[str, Any] = {}
        started = time.perf_counter()

        baseline = run_try(TrySpec(entry=entry, accum=PLANNED_ACCUM, inputs=inputs), root / "run", Reporter())
        tries["baseline"] = describe_try(baseline.outcome)
        points["after_baseline"] = allocator_bytes()
        if not isinstance(baseline.outcome, TryDone):
            return {"error": "the baseline did not train", "tries": tries, "points": points}

        budget = int(CAP_HEADROOM * baseline.outcome.memory.peak_bytes)
        gpu.cap_to_budget(budget)
        outcome = try_outcome(TrySpec(entry=entry, accum=OOM_ACCUM, inputs=inputs), Reporter(), ())  # run_try's two
        points["oom_before_cleanup"] = allocator_bytes()  # steps, so that the bytes between them can be read
        depth_before_cleanup = autocast_depth()
        release_memory("cuda")
        points["after_oom_cleanup"] = allocator_bytes()
        tries["oom"] = describe_try(outcome)

        second = run_try(TrySpec(entry=entry, accum=PLANNED_ACCUM, inputs=inputs), root / "run", Reporter())
        tries["second"] = describe_try(second.outcome)
        points["after_second_try"] = allocator_bytes()
        gpu.uncap()
        seconds = time.perf_counter() - started

    first, again = tries["baseline"], tries["second"]
    return {
        "gpu": gpu.gpu_name(), "gpu_total_bytes": gpu.gpu_total_bytes(), "torch": torch.__version__,
        "arch": arch, "size": size, "images": images, "effective_batch": EFFECTIVE_BATCH,
        "planned_micro_batch": EFFECTIVE_BATCH // PLANNED_ACCUM, "oom_micro_batch": EFFECTIVE_BATCH // OOM_ACCUM,
        "cap_bytes": budget, "allocator": allocator.to_dict(), "points": points, "tries": tries,
        "autocast_depth": {"before_cleanup": depth_before_cleanup, "after_cleanup": autocast_depth()},
        "verdict": {
            "ran_out": tries["oom"].get("outcome") == "OomMiss",
            "released": points["after_oom_cleanup"]["allocated"] == points["after_baseline"]["allocated"],
            "same_start_bytes": again.get("start_bytes") == first.get("start_bytes"),
            "second_fits": again.get("outcome") == "TryDone",
            "second_over_baseline_peak": (again["peak_bytes"] / first["peak_bytes"]
                                          if again.get("peak_bytes") and first.get("peak_bytes") else None),
        },
        "seconds": round(seconds, 1),
    }


def describe_try(outcome: Any) -> dict[str, Any]:
    """A try's outcome as plain values: its kind, and its memory record or message."""
    described: dict[str, Any] = {"outcome": type(outcome).__name__}
    memory = getattr(outcome, "memory", None)
    if memory is not None:
        described.update(memory.to_dict())
    message = getattr(outcome, "message", None)
    if message is not None:
        described["message"] = message
    return described


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu_oom_hygiene.json")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("benchmarks.gpu.oom_hygiene: CUDA is missing here (no CUDA device is available); nothing checked")
        return 0

    report = check_oom_hygiene(args.arch, args.size, args.images)
    text = json.dumps(report, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
