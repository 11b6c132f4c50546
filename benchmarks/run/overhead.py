"""Per-epoch time of `planner run`'s training against a plain fastai script with identical settings.

Three arms run alternately in one process (the order rotates each repetition):

- ``planner``: ``planner_trainer.run.run_plan`` on a one-entry plan (its callbacks, sampled CPU memory
  tracker, run.json/run.log writes, its own epoch callback).
- ``plain``: the reference recipe written directly against fastai (DataBlock, ``Resize``,
  ``aug_transforms(size, min_scale=0.75)``, ``vision_learner(..., metrics=error_rate,
  cbs=GradientAccumulation(effective))``, ``fine_tune(epochs, lr)``) on the same held-out files,
  same seed, fp32 on the CPU.
- ``plain+tracker``: the plain arm with a ``StorageTracker`` around the whole ``fine_tune``: what
  tracking every batch would cost (``planner run`` samples the first batches of each phase), and the
  peak that the planner arm's sampled measurement should equal.

Every arm is timed by the same callback (wall and process CPU seconds per epoch; another process on
the machine inflates wall time more than CPU time). Data: scikit-learn's ``load_digits`` (1,797 real
8×8 digits) written as PNGs in the reference layout. Neither arm shows a progress bar. torch runs one
thread by default (``--threads``): on a 2-core machine shared with other jobs, two spinning OpenMP
threads per process turn any contention into epochs ten times longer. Usage::

    python -m benchmarks.run.overhead [--reps 3] [--epochs 2] [--out results/run_overhead.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.paths import RESULTS
from planner.base.plan import ItemTransform, MeasuredOn, Plan, PlanEntry, save_plan
from planner_trainer.data import scan_data
from planner_trainer.split import draw_split

SEED = 42


def write_digits(root: Path, n_test: int = 50) -> Path:
    """load_digits as PNGs: train_images/<digit>/digit_<i>.png, test_images/ from the last n_test."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index, (pixels, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        image = Image.fromarray((pixels * (255 / 16)).astype(np.uint8)).convert("RGB")
        folder = root / ("test_images" if index >= len(digits.images) - n_test else f"train_images/{target}")
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"digit_{index}.png")
    return root


def write_plan(path: Path, arch: str, size: int, micro_batch: int, effective: int) -> PlanEntry:
    """A one-entry plan; its predicted peak is not what is measured here, so it is a placeholder."""
    import fastai
    import timm
    import torch

    entry = PlanEntry(name=f"{arch}-{size}", arch=arch, item=ItemTransform(resize=size + 8, method="crop"),
                      size=(size, size), accum=effective // micro_batch, micro_batch=micro_batch,
                      predicted_peak_bytes=0, fits=True, headroom_bytes=0)
    save_plan(Plan(budget_bytes=2**30, margin=0.1, effective_batch_size=effective,
                   measured_on=MeasuredOn(device="cpu", precision="fp32", torch=torch.__version__,
                                          timm=timm.__version__, fastai=fastai.__version__),
                   entries=[entry], created="benchmark"), path)
    return entry


def epoch_clock() -> object:
    """A fastai callback timing each epoch (wall and process CPU seconds): the same instrument for
    every arm (for `planner run` it is one of the extra callbacks ``run_plan`` accepts)."""
    from fastai.callback.core import Callback

    class EpochClock(Callback):
        order = 51

        def __init__(self) -> None:
            self.epochs: list[dict] = []

        def before_epoch(self) -> None:
            self.wall, self.cpu = time.perf_counter(), time.process_time()

        def after_epoch(self) -> None:
            self.epochs.append({"phase": "frozen" if self.learn.opt.frozen_idx else "unfrozen",
                                "seconds": time.perf_counter() - self.wall,
                                "cpu_seconds": time.process_time() - self.cpu})

    return EpochClock()


def run_planner(plan: Path, data: Path, run_dir: Path, epochs: int, lr: float) -> tuple[list[dict], int]:
    """Epoch times, and the peak bytes the sampled tracker measured."""
    from planner_trainer.backend import LocalBackend
    from planner_trainer.options import RunOptions
    from planner_trainer.run import run_plan

    clock = epoch_clock()
    options = RunOptions(epochs=epochs, lr=lr, pretrained=False, device="cpu", seed=SEED)
    (record,) = run_plan(plan, data, run_dir, options, backend=LocalBackend(cbs=[clock])).run.entries.values()
    return clock.epochs, record.memory.peak_bytes


def run_plain(data: Path, valid: set[str], entry: PlanEntry, effective: int, epochs: int, lr: float,
              tracked: bool) -> tuple[list[dict], int | None]:
    """The reference recipe, written directly with fastai: epoch times, and the peak bytes of a tracker
    counting every batch (None untracked)."""
    from fastai.vision.all import (
        CategoryBlock,
        DataBlock,
        FuncSplitter,
        GradientAccumulation,
        ImageBlock,
        ProgressCallback,
        Resize,
        ResizeMethod,
        aug_transforms,
        error_rate,
        get_image_files,
        noop,
        parent_label,
        set_seed,
        vision_learner,
    )

    from planner.base.tracker import StorageTracker

    clock = epoch_clock()
    set_seed(SEED)
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label,
        splitter=FuncSplitter(lambda path: path.relative_to(data).as_posix() in valid),
        item_tfms=Resize(entry.item.resize, method=ResizeMethod.Crop),
        batch_tfms=aug_transforms(size=entry.size, min_scale=0.75),
    )
    dls = block.dataloaders(data / "train_images", bs=entry.micro_batch, device="cpu", num_workers=0,
                            seed=SEED)
    learn = vision_learner(dls, entry.arch, metrics=error_rate, pretrained=False,
                           cbs=GradientAccumulation(effective))
    learn.remove_cb(ProgressCallback)
    learn.logger = noop
    if tracked:
        tracker = StorageTracker()
        tracker.track([*learn.model.parameters(), *learn.model.buffers()])
        with tracker:
            learn.fine_tune(epochs, lr, cbs=clock)
        return clock.epochs, tracker.peak_bytes
    learn.fine_tune(epochs, lr, cbs=clock)
    return clock.epochs, None


def summarise(times: list[list[dict]]) -> dict:
    """Per-epoch wall and CPU seconds over repetitions: the median and the minimum (the least disturbed
    run) of a run's mean epoch, of the frozen epochs and of the unfrozen epochs."""
    summary = {}
    for key in ("seconds", "cpu_seconds"):
        groups = {"epoch_mean": [statistics.mean(e[key] for e in rep) for rep in times]}
        for phase in ("frozen", "unfrozen"):
            groups[phase] = [e[key] for rep in times for e in rep if e["phase"] == phase]
        for group, values in groups.items():
            summary[f"{group}_{key}"] = statistics.median(values)
            summary[f"{group}_{key}_min"] = min(values)
    return summary


def markdown_table(summary: dict, ratios: dict) -> str:
    """Wall seconds as median (min), CPU seconds as median, and both as ratios to the plain arm."""
    def cell(values: dict, group: str, digits: int) -> str:
        return f"{values[group]:.{digits}f} ({values[group + '_min']:.{digits}f})"

    lines = ["| arm | measure | epoch (mean of a run) | frozen epoch | unfrozen epoch |",
             "| --- | --- | --- | --- | --- |"]
    for arm in summary:
        for measure, key, values, digits in (
            ("wall s, median (min)", "seconds", summary[arm], 2),
            ("CPU s, median (min)", "cpu_seconds", summary[arm], 2),
            ("wall ratio to plain", "seconds", ratios[arm], 3),
            ("CPU ratio to plain", "cpu_seconds", ratios[arm], 3),
        ):
            cells = [cell(values, f"{group}_{key}", digits) for group in ("epoch_mean", "frozen", "unfrozen")]
            lines.append(f"| {arm} | {measure} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--effective", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 keeps timings stable when another process shares the cores")
    parser.add_argument("--out", type=Path, default=RESULTS / "run_overhead.json")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = write_digits(root / "digits")
        entry = write_plan(root / "plan.json", args.arch, args.size, args.micro_batch, args.effective)
        arms = ("planner", "plain", "plain+tracker")
        valid = set(draw_split(scan_data(data).train, valid_pct=0.2, seed=SEED).valid)  # as run_plan does
        times: dict[str, list[list[dict]]] = {arm: [] for arm in arms}
        loads: list[dict] = []
        peaks: dict[str, list[int | None]] = {arm: [] for arm in arms}
        for rep in range(args.reps):
            for arm in arms[rep % 3:] + arms[:rep % 3]:
                if arm == "planner":
                    measured, peak = run_planner(root / "plan.json", data, root / f"run{rep}", args.epochs,
                                                 args.lr)
                else:
                    measured, peak = run_plain(data, valid, entry, args.effective, args.epochs, args.lr,
                                         tracked=arm == "plain+tracker")
                times[arm].append(measured)
                loads.append({"rep": rep, "arm": arm, "loadavg_1min_after": os.getloadavg()[0]})
                peaks[arm].append(peak)
                shown = ", ".join(f"{e['seconds']:.2f}s" for e in measured)
                print(f"rep {rep + 1} {arm}: {shown}", flush=True)

    summary = {arm: summarise(runs) for arm, runs in times.items()}
    base = summary["plain"]
    ratios = {arm: {key: summary[arm][key] / base[key] for key in base} for arm in arms}
    result = {
        "machine": {"description": "2-core CPU-only dev machine, no GPU", "cpus": os.cpu_count(),
                    "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "settings": {**vars(args), "out": str(args.out)},
        "times": times, "load": loads, "peak_bytes": peaks, "summary": summary, "ratio_to_plain": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(summary, ratios))
    print(f"peak bytes: planner (sampled batches) {sorted(set(peaks['planner']))}, "
          f"plain+tracker (every batch) {sorted(set(peaks['plain+tracker']))}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
