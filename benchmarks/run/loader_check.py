"""Data loading on the CPU: the probe's predicted epoch loading time against the measured one.

Two data folders: the demo's (``planner demo``: scikit-learn's digits as 8 × 8 PNGs, squished to 32 px)
and generated 640 × 480 JPEGs (Paddy Doctor's size: blurred noise, quality 90, two classes) with the
reference's ``crop640x480`` item transform. For each, and each DataLoader worker count:

- ``predicted``: what ``planner probe --data`` writes (``planner.probe.loadtime``): a sample's CPU
  seconds per image through the run's DataLoader (in this thread without workers, in a worker process
  with them), × one epoch's images (whole training micro-batches, then the held-out images) / the
  workers, plus a worker's start per pass; median of ``--reps``;
- ``loop``: the run's own DataLoaders (``planner.base.recipe.make_dataloaders`` on the run's split,
  ``planner_trainer.split.draw_split``) iterated over one epoch, training then held-out, without training and
  without the batch transforms (which run on the GPU in a real run), median of ``--reps``: wall clock,
  and the CPU seconds of the loading per worker (the workers' own, or the loop's thread without
  workers), which the machine's other jobs hardly change;
- ``run`` (the demo, no workers, as the demo trains; ``--no-run`` skips it): a real `planner run` of
  one demo entry on the CPU, probed by the cpu meter with the demo's options; run.json's
  ``loader_wait_seconds`` per epoch, median over the epochs.

The machine is shared (2 cores, other jobs): by default 0 and 1 workers, the fewest that show the
scaling; more workers than free cores would measure the neighbours. Usage::

    python -m benchmarks.run.loader_check [--images 300] [--reps 3] [--workers 0 1] [--no-run]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from benchmarks.paths import RESULTS
from planner.base.budget import parse_budget
from planner.base.plan import ItemTransform
from planner.base.recipe import make_dataloaders
from planner.demo import DEMO_BUDGET, DEMO_EFFECTIVE_BATCH_SIZE, DEMO_LR, demo_entries, write_digits
from planner.probe.epochtime import DEFAULT_VALID_PCT, folder_sizes
from planner.probe.loadtime import loader_time, measure_loading, sample_files
from planner.probe.probe_data import probe_data_from_folder
from planner_trainer.data import label_of, scan_data
from planner_trainer.split import draw_split

REFERENCE_ITEM = ItemTransform(resize=(640, 480), method="crop")
REFERENCE_SIZE = (224, 224)
MICRO_BATCH = 32


def write_jpegs(root: Path, count: int, test: int) -> Path:
    """``count`` training JPEGs of 640 × 480 in two classes and ``test`` test JPEGs."""
    rng = np.random.default_rng(0)
    for index in range(count + test):
        folder = root / "test_images" if index >= count else root / "train_images" / f"c{index % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (rng.random((480, 640, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(3)).save(folder / f"img_{index}.jpg", quality=90)
    return root


def predicted(data: Path, item: ItemTransform, workers: int, micro_batch: int) -> dict:
    """The probe's loading prediction for ``data``, as ``planner probe --data`` computes it."""
    files = probe_data_from_folder(data).files
    sample = sample_files(files)
    per_image, start = measure_loading(sample, item, workers, micro_batch)
    loading = loader_time(per_image, start, len(sample), workers, micro_batch,
                          folder_sizes(len(files), data / "test_images"))
    return loading.to_dict()


def loop_seconds(data: Path, item: ItemTransform, size: tuple[int, int], workers: int,
                 micro_batch: int) -> tuple[float, float]:
    """Wall seconds to iterate one epoch (training, then held-out) of the run's DataLoaders without the
    batch transforms, and the CPU seconds the loading took per worker (the workers' own, or this
    thread's without workers): the machine's other jobs slow the first, hardly the second."""
    layout = scan_data(data)
    split = draw_split(layout.train, DEFAULT_VALID_PCT, seed=42)
    held_out = set(split.valid)
    items = [name for name in layout.train if name not in held_out] + list(split.valid)
    dls = make_dataloaders(items, get_x=lambda name: layout.root / name, get_y=label_of,
                           is_valid=held_out.__contains__, item=item, size=size, micro_batch=micro_batch,
                           device="cpu", vocab=layout.vocab, seed=42, num_workers=workers)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started, thread = time.perf_counter(), time.thread_time()
    for loader in (dls.train, dls.valid):
        loader.after_batch = lambda batch: batch  # the batch transforms run on the GPU in a real run
        for _ in loader:
            pass
    wall, thread = time.perf_counter() - started, time.thread_time() - thread
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    worker_cpu = ended.ru_utime + ended.ru_stime - children.ru_utime - children.ru_stime
    return wall, (worker_cpu / workers if workers else thread)


def compare(name: str, data: Path, item: ItemTransform, size: tuple[int, int], micro_batch: int,
            workers: list[int], reps: int) -> list[dict]:
    rows = []
    for count in workers:
        predictions = [predicted(data, item, count, micro_batch) for _ in range(reps)]
        prediction = statistics.median(p["epoch_seconds"] for p in predictions)
        loops = [loop_seconds(data, item, size, count, micro_batch) for _ in range(reps)]
        wall, cpu = (statistics.median(values) for values in zip(*loops, strict=True))
        rows.append({"folder": name, "item": item.label, "micro_batch": micro_batch, "workers": count,
                     "predicted_epoch_seconds": prediction,
                     "predictions": [p["epoch_seconds"] for p in predictions],
                     "seconds_per_image": [round(p["seconds_per_image"], 6) for p in predictions],
                     "start_seconds": [round(p["start_seconds"], 4) for p in predictions],
                     "images_timed": predictions[0]["images_timed"],
                     "measured_loop_epoch_seconds": round(wall, 3),
                     "loop_seconds": [round(w, 3) for w, _ in loops],
                     "ratio_measured_to_predicted": round(wall / prediction, 3),
                     "measured_loop_cpu_seconds_per_worker": round(cpu, 3),
                     "ratio_cpu_to_predicted": round(cpu / prediction, 3)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def demo_run(data: Path, root: Path, epochs: int) -> dict:
    """A real probe and `planner run` of the demo's smallest entry on the CPU; its waits against its plan."""
    from planner.probe.command import make_plan
    from planner.probe.options import ProbeOptions
    from planner_trainer.options import RunOptions
    from planner_trainer.run import run_plan

    entry = next(e for e in demo_entries() if e.arch == "resnet10t")
    plan = make_plan(ProbeOptions(budgets=(parse_budget(DEMO_BUDGET),), effective_batch_size=DEMO_EFFECTIVE_BATCH_SIZE,
                                  data=data, device="cpu", output=root / "plan.json"), entries=[entry])
    planned = plan.entries[0]
    result = run_plan(root / "plan.json", data, root / "run", RunOptions(epochs=epochs, lr=DEMO_LR, pretrained=False,
                                                                          device="cpu"))
    record = result.run.entries[planned.name]
    waits = [epoch.loader_wait_seconds for epoch in record.epochs]
    measured = statistics.median(waits)
    return {"entry": planned.name, "micro_batch": planned.micro_batch, "workers": planned.loader_time.workers,
            "predicted_epoch_seconds": planned.loader_time.epoch_seconds,
            "seconds_per_image": round(planned.loader_time.seconds_per_image, 6),
            "measured_wait_per_epoch": waits, "epoch_seconds": [round(e.seconds, 2) for e in record.epochs],
            "threads": [e.threads for e in record.epochs],
            "measured_median_wait_seconds": measured,
            "ratio_measured_to_predicted": round(measured / planned.loader_time.epoch_seconds, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="training JPEGs of 640 × 480")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--run-epochs", type=int, default=2, help="unfrozen epochs of the demo's real run")
    parser.add_argument("--no-run", action="store_true", help="skip the demo's real probe and run")
    parser.add_argument("--out", type=Path, default=RESULTS / "loader_check.json")
    args = parser.parse_args()
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        digits = write_digits(root / "digits")
        jpegs = write_jpegs(root / "jpegs", args.images, test=args.images // 4)
        demo_item = demo_entries()[0].item
        rows = compare("demo digits (8 x 8 PNG)", digits, demo_item, demo_entries()[0].size,
                       DEMO_EFFECTIVE_BATCH_SIZE, args.workers, args.reps)
        rows += compare(f"{args.images} JPEGs 640 x 480", jpegs, REFERENCE_ITEM, REFERENCE_SIZE, MICRO_BATCH,
                        args.workers, args.reps)
        run = None if args.no_run else demo_run(digits, root / "demo", args.run_epochs)
        print(json.dumps(run), flush=True)
    result = {
        "machine": {"description": "2-core CPU-only dev machine, shared with other agents' jobs",
                    "cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "method": "predicted: CPU seconds per image of a 32-image sample through the run's DataLoader (a worker "
                  "process with workers) x one epoch's images / max(workers, 1) + 2 worker starts, median of "
                  f"{args.reps}; loop: wall seconds to iterate the "
                  f"run's DataLoaders over one epoch without batch transforms, and the loading's CPU seconds per "
                  f"worker, medians of {args.reps}; run: a real planner run's loader_wait_seconds per epoch "
                  "(median over epochs)",
        "rows": rows,
        "demo_run": run,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
