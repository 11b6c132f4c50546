"""On a CUDA machine: does the plan hold for the whole run? The reference entries under a 16 GiB cap.

Each (entry, allocator configuration) runs in its own process, several side by side on a large card
(memory, not time, is what they measure; each process is given its share of the CPU cores):

1. the estimate meter's plan for the budget (device-free, as a laptop would plan);
2. the cuda meter's plan for the budget (the probe rehearses the run: frozen epoch, unfreezing,
   unfrozen epochs with validation until the reserved peak stops growing, TTA);
3. `planner run` of that plan under the same cap (``cap_to_budget``): one frozen and one unfrozen epoch
   on ``--images`` synthetic JPEGs at the entry's item size, validation and TTA; its measured peak.

``--points ENTRY MB ...`` instead measures single probes (the cuda meter under the cap) at the given
micro-batches, e.g. swinv2 at 16 and 32. Writes ``OUT/run_holds.json`` (a list: one object per entry
and configuration, with ``entry``, ``allocator``, ``product_default``, ``planned_peak_bytes``,
``run_peak_bytes``, ``estimate_peak_bytes``, ``oom`` and the evidence beside them) and, with
``--points``, ``OUT/points.json``. On a machine without CUDA it says so in one line and exits 0.

Usage::

    python -m benchmarks.gpu.run_holds --out DIR [--budget 16G] [--images 160] [--parallel 8]
        [--seconds 300] [--allocators default expandable_segments] [--entries NAME ...]
    python -m benchmarks.gpu.run_holds --out DIR --points swinv2_large_window12_192_22k-squish480-192 16 32
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.gpu.run_check import write_images  # the entry's synthetic JPEGs

ALLOCATORS = {"default": "expandable_segments:False", "expandable_segments": "expandable_segments:True"}
"""Each configuration as PYTORCH_CUDA_ALLOC_CONF spells it (set before the process starts CUDA)."""


def reference_entry(name: str):
    """A reference entry by name, or ``ARCH@SIZE`` (any timm architecture, for a dry run on the CPU)."""
    from planner.base.entries import reference_entries, single_entry

    if "@" in name:
        arch, size = name.split("@")
        return single_entry(arch, int(size))[0]
    entries = {entry.name: entry for entry in reference_entries()}
    if name not in entries:
        raise SystemExit(f"{name!r} is not a reference entry: {', '.join(entries)}")
    return entries[name]


def product_allocator() -> str:
    """The configuration planner itself uses (``planner.base.allocator``), by this script's names."""
    from planner.base.allocator import DEFAULT_ALLOC_CONF

    return next((name for name, conf in ALLOCATORS.items() if conf == DEFAULT_ALLOC_CONF), DEFAULT_ALLOC_CONF)


def plan_for(entry, device: str, budget: int, folder: Path):
    """The plan of one entry for the budget, by the meter ``device``."""
    from planner.base.plan import load_plan
    from planner.probe.command import make_plan
    from planner.probe.options import ProbeOptions

    path = folder / f"plan_{device}.json"
    started = time.perf_counter()
    make_plan(ProbeOptions(budgets=(budget,), device=device, output=path, jobs=1), None, [entry])
    return load_plan(path), time.perf_counter() - started


def one(name: str, allocator: str, args: argparse.Namespace) -> dict:
    """Estimate, probe and run one entry in this process (its allocator configuration set by the parent)."""
    import torch

    from planner.base import cuda_device as gpu
    from planner.base.budget import parse_budget
    from planner_trainer.options import RunOptions
    from planner_trainer.progress import LineReporter
    from planner_trainer.run import run_plan

    budget = parse_budget(args.budget)
    entry = reference_entry(name)
    folder = Path(tempfile.mkdtemp(prefix=f"run_holds_{allocator}_"))
    estimate, estimate_seconds = plan_for(entry, "estimate", budget, folder)
    probed, probe_seconds = plan_for(entry, args.device, budget, folder)
    (planned,) = probed.entries
    data = write_images(folder / "data", entry.item, args.images)
    if args.device == "cuda":
        gpu.cap_to_budget(budget)
    started = time.perf_counter()
    result = run_plan(folder / f"plan_{args.device}.json", data, folder / "run",
                      RunOptions(epochs=1, pretrained=False, device=args.device), LineReporter(print))
    record = result.run.entries[planned.name]
    chosen = next((p for p in planned.probes if p.micro_batch == planned.micro_batch and not p.oom), None)
    run_peak = record.memory.peak_bytes if record.memory else None
    return {
        "entry": name, "allocator": allocator, "product_default": allocator == product_allocator(),
        "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"), "device": args.device,
        "gpu": gpu.gpu_name() if args.device == "cuda" else None, "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version(), "budget_bytes": budget,
        "planned_micro_batch": planned.micro_batch, "planned_accum": planned.accum,
        "planned_peak_bytes": planned.predicted_peak_bytes, "planned_peak_phase": planned.peak_phase,
        "planned_phase_peaks": chosen.phase_peaks if chosen else None,
        "planned_epoch_growth_bytes": chosen.epoch_growth_bytes if chosen else None,
        "probes": [{"micro_batch": p.micro_batch, "peak_bytes": p.peak_bytes, "oom": p.oom,
                    "seconds": p.seconds} for p in planned.probes],
        "probe_seconds": round(probe_seconds, 1),
        "estimate_micro_batch": estimate.entries[0].micro_batch,
        "estimate_peak_bytes": estimate.entries[0].predicted_peak_bytes,
        "estimate_peak_bytes_at_planned": _estimate_at(entry, planned.micro_batch, budget),
        "estimate_seconds": round(estimate_seconds, 1),
        "trained_micro_batch": record.micro_batch, "run_peak_bytes": run_peak,
        "run_phase_peaks": record.memory.phase_peaks if record.memory else None,
        "run_over_planned": run_peak / planned.predicted_peak_bytes if run_peak and planned.predicted_peak_bytes
        else None,
        "oom": bool(record.oom_misses) or record.status != "finished",
        "oom_misses": [miss.to_dict() for miss in record.oom_misses], "status": record.status,
        "error": record.error, "run_seconds": round(time.perf_counter() - started, 1),
        "epochs": [epoch.to_dict() for epoch in record.epochs], "images": args.images,
    }


def _estimate_at(entry, micro_batch: int, budget: int) -> int | None:
    """The estimate meter's card bytes at the micro-batch the cuda meter chose."""
    from planner.probe.meters import get_meter

    meter = get_meter("estimate")
    try:
        return meter.measure(entry, micro_batch, budget).peak_bytes
    finally:
        meter.close()


def points(name: str, micro_batches: list[int], allocator: str, args: argparse.Namespace) -> dict:
    """Single cuda-meter probes of one entry under the cap (an out-of-memory is recorded, not raised)."""
    from planner.base.budget import parse_budget
    from planner.probe.meters import get_meter
    from planner.probe.probe import measure_point

    budget = parse_budget(args.budget)
    entry = reference_entry(name)
    meter = get_meter("cuda")
    try:
        measured = [measure_point(meter, entry, b, budget).to_dict() for b in micro_batches]
    finally:
        meter.close()
    return {"entry": name, "allocator": allocator, "budget_bytes": budget, "points": measured}


def run_all(jobs: list[tuple[list[str], str, dict]], parallel: int, seconds: float, out: Path) -> list[dict]:
    """Run the workers, ``parallel`` at a time, each on its share of the cores; those still running after
    ``seconds`` are stopped (what finished is kept)."""
    cores = sorted(os.sched_getaffinity(0))
    share = max(1, len(cores) // parallel)
    pending, running, results = list(jobs), [], []
    deadline = time.monotonic() + seconds
    while (pending or running) and time.monotonic() < deadline:
        while pending and len(running) < parallel:
            argv, allocator, extra = pending.pop(0)
            slot = len(results) + len(running)
            mine = [cores[(slot * share + i) % len(cores)] for i in range(share)]
            log = (out / f"{_worker_name(argv)}_{allocator}.log").open("w")
            env = {**os.environ, "PYTORCH_CUDA_ALLOC_CONF": ALLOCATORS[allocator], **extra}
            command = [sys.executable, "-m", __spec__.name, *argv, "--allocator", allocator]
            process = subprocess.Popen(["taskset", "-c", ",".join(map(str, mine)), *command],
                                       stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append((process, argv, allocator))
        time.sleep(1)
        for item in list(running):
            process, argv, allocator = item
            if process.poll() is not None:
                running.remove(item)
                result_file = out / f"{_worker_name(argv)}_{allocator}.json"
                results.append(json.loads(result_file.read_text()) if result_file.exists() else
                               {"argv": argv, "allocator": allocator, "exit": process.returncode})
    for process, argv, allocator in running:
        process.kill()
        results.append({"argv": argv, "allocator": allocator, "stopped": f"still running after {seconds:.0f} s"})
    return results


def _worker_name(argv: list[str]) -> str:
    return argv[argv.index("--one") + 1] if "--one" in argv else "points"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", default="16G")
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--allocators", nargs="+", default=list(ALLOCATORS), choices=list(ALLOCATORS))
    parser.add_argument("--entries", nargs="*")
    parser.add_argument("--points", nargs="+", metavar="ENTRY MB")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cpu: a dry run of the script's own logic with the cpu meter (use ARCH@SIZE entries)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--allocator", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks.gpu.run_holds: needs a CUDA device and none is available here; nothing measured")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    if args.one or (args.points and args.allocator):  # a worker
        result = (one(args.one, args.allocator, args) if args.one else
                  points(args.points[0], [int(b) for b in args.points[1:]], args.allocator, args))
        (args.out / f"{args.one or 'points'}_{args.allocator}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result)[:2000])
        return 0
    common = ["--out", str(args.out), "--budget", args.budget, "--images", str(args.images), "--device", args.device]
    if args.points:
        jobs = [(["--points", *args.points, *common], allocator, {}) for allocator in args.allocators]
        results = run_all(jobs, args.parallel, args.seconds, args.out)
        (args.out / "points.json").write_text(json.dumps(results, indent=2) + "\n")
        return 0
    from planner.base.entries import reference_entries

    names = args.entries or [entry.name for entry in reference_entries()]
    jobs = [(["--one", name, *common], allocator, {}) for allocator in args.allocators for name in names]
    results = run_all(jobs, args.parallel, args.seconds, args.out)
    (args.out / "run_holds.json").write_text(json.dumps(results, indent=2) + "\n")
    for result in results:
        print({key: result.get(key) for key in ("entry", "allocator", "planned_peak_bytes", "run_peak_bytes",
                                                 "estimate_peak_bytes_at_planned", "oom", "stopped", "exit")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
