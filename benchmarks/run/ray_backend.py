"""Wall time of `planner run --backend ray` against `--backend local` on one machine, and what Ray adds.

One 4-entry tiny plan (resnet18 and convnext_atto at 32 and 48 px, random weights, fine_tune(1): two
epochs each) on one small image folder, trained by the real CLI in fresh run folders, the two arms
alternating:

- ``local``: ``planner run PLAN --device cpu`` (entries one after another in one process, torch's
  default threads: 2 here);
- ``local-1thread``: the same with ``OMP_NUM_THREADS=1``, the thread count Ray gives each task (with
  other work on the machine, two spinning OpenMP threads per process can slow epochs down many times:
  this arm separates that effect from Ray's);
- ``ray``: ``planner run PLAN --device cpu --backend ray --ray-address ADDRESS`` joining a local Ray
  instance that this script starts once with 2 CPUs and 2 *logical* GPUs (``ray.init(num_cpus=2,
  num_gpus=2)``; a machine without GPUs starts with none): two entries at a time, one fresh worker
  process per entry (``max_calls=1``), one torch thread each (Ray sets ``OMP_NUM_THREADS`` to the task's
  one CPU).

What Ray adds is measured apart as well: starting the instance, connecting a driver to it, the
round trip of an empty task on a warm worker (scheduling), of an empty GPU task (a fresh worker
process) and of a GPU task that imports what a training task imports (``planner_trainer.ray_backend``, then
fastai). On this machine both "GPUs" share the same 2 CPU cores, so no real multi-GPU speed-up can
show; see RESULTS.md. Usage::

    python -m benchmarks.run.ray_backend [--reps 3] [--per-class 40] [--out benchmarks/results/ray_backend.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.paths import REPO, RESULTS
from tests.run_data import make_image_folder, plan_entry, write_plan

TRAIN = ["--no-pretrained", "--epochs", "1", "--device", "cpu"]
ARMS = ("local", "local-1thread", "ray")


def cli(*args: str | Path, env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    """The CLI in a subprocess; its environment is this process's (after ``ray.init``, which sets what a
    driver needs to join the instance) plus ``env``."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "planner", *map(str, args)], cwd=REPO,
                            env={**os.environ, **(env or {})},
                            capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"planner {' '.join(map(str, args))} failed:\n{result.stderr}")
    return time.perf_counter() - started, result


def entries_of(run_dir: Path) -> dict[str, dict]:
    run = json.loads((run_dir / "run.json").read_text())
    out = {}
    for name, record in run["entries"].items():
        row = {"seconds": record["seconds"], "accum": record["accum"]}
        if record.get("worker"):
            worker = record["worker"]
            row |= {"gpu_ids": worker["gpu_ids"], "import_seconds": worker["import_seconds"],
                    "task_seconds": worker["ended_unix"] - worker["started_unix"],
                    "started_unix": worker["started_unix"], "ended_unix": worker["ended_unix"]}
        out[name] = row
    return out


def ray_overheads(ray, address: str, samples: int) -> dict:
    """Round trips measured from this process (the instance's first driver), and a driver's connect."""
    connects = []
    for _ in range(samples):
        code = (f"import time, ray; t = time.perf_counter(); ray.init(address={address!r}, logging_level='ERROR'); "
                "print(time.perf_counter() - t); ray.shutdown()")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        connects.append(float(out.stdout.strip().splitlines()[-1]))

    @ray.remote(num_cpus=1)
    def empty() -> None:
        return None

    @ray.remote(num_gpus=1)  # Ray's default for GPU tasks: a fresh worker process each (max_calls=1)
    def empty_gpu() -> None:
        return None

    @ray.remote(num_gpus=1)
    def imports() -> dict:
        clock = time.perf_counter()
        import planner_trainer.ray_backend  # noqa: F401  (torch, the trainer; what unpickling a training task imports)

        middle = time.perf_counter()
        import fastai.vision.all  # noqa: F401

        return {"torch_trainer_seconds": middle - clock, "fastai_seconds": time.perf_counter() - middle}

    def round_trips(task, n: int) -> list[float]:
        times = []
        for _ in range(n):
            clock = time.perf_counter()
            ray.get(task.remote())
            times.append(time.perf_counter() - clock)
        return times

    round_trips(empty, 2)  # warm a worker up
    warm = round_trips(empty, 10 * samples)
    fresh = round_trips(empty_gpu, samples)
    imported = []
    for _ in range(samples):
        clock = time.perf_counter()
        result = ray.get(imports.remote())
        imported.append(result | {"round_trip_seconds": time.perf_counter() - clock})
    return {
        "driver_connect_seconds": statistics.median(connects),
        "empty_task_warm_worker_seconds": statistics.median(warm),
        "empty_gpu_task_fresh_worker_seconds": statistics.median(fresh),
        "gpu_task_importing_trainer_and_fastai": {
            key: statistics.median(sample[key] for sample in imported) for key in imported[0]},
    }


def per_gpu(entries: dict[str, dict]) -> dict[str, list[dict]]:
    """A ray run's entries by the GPU they trained on, in start order."""
    gpus: dict[str, list[dict]] = {}
    for entry in sorted(entries.values(), key=lambda entry: entry["started_unix"]):
        gpus.setdefault(",".join(entry["gpu_ids"]), []).append(entry)
    return gpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=40, help="training images per class (3 classes)")
    parser.add_argument("--samples", type=int, default=3, help="samples of each Ray round trip")
    parser.add_argument("--out", type=Path, default=RESULTS / "ray_backend.json")
    args = parser.parse_args()

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "RAY_COLOR_PREFIX": "0"}
    os.environ.update(env)  # the instance's workers inherit this process's environment
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_image_folder(root / "data", classes=3, per_class=args.per_class, test=10, side=40)
        plan = write_plan(root / "plan.json", [
            plan_entry("resnet18"), plan_entry("convnext_atto"),
            plan_entry("resnet18", size=48, resize=56), plan_entry("convnext_atto", size=48, resize=56),
        ])
        load_before = os.getloadavg()
        clock = time.perf_counter()
        ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        ray_start = time.perf_counter() - clock
        address = ray.get_runtime_context().gcs_address
        try:
            overheads = ray_overheads(ray, address, args.samples)
            reps = []
            for rep in range(args.reps):
                row = {}
                for arm in ARMS[rep % len(ARMS):] + ARMS[:rep % len(ARMS)]:
                    run_dir = root / f"{arm}{rep}"
                    extra = ["--backend", "ray", "--ray-address", address] if arm == "ray" else []
                    threads = {"OMP_NUM_THREADS": "1"} if arm == "local-1thread" else {}
                    wall, _ = cli("run", plan, "--data", data, "--out", run_dir, *TRAIN, *extra, env=threads)
                    row[arm] = {"wall_seconds": wall, "entries": entries_of(run_dir)}
                    print(f"rep {rep} {arm}: {wall:.1f} s", flush=True)
                reps.append(row)
        finally:
            ray.shutdown()  # stops the instance this script started
        load_after = os.getloadavg()

    walls = {arm: [rep[arm]["wall_seconds"] for rep in reps] for arm in ARMS}
    ray_entries = [entry for rep in reps for entry in rep["ray"]["entries"].values()]
    local_first = [next(iter(rep["local"]["entries"].values()))["seconds"] for rep in reps]
    local_rest = [entry["seconds"] for rep in reps for entry in list(rep["local"]["entries"].values())[1:]]
    gaps = [later["started_unix"] - earlier["ended_unix"] for rep in reps
            for chain in per_gpu(rep["ray"]["entries"]).values() for earlier, later in itertools.pairwise(chain)]
    summary = {
        **{f"{arm}_wall_seconds_median": statistics.median(values) for arm, values in walls.items()},
        **{f"{arm}_wall_seconds_min": min(values) for arm, values in walls.items()},
        "ray_instance_start_seconds": ray_start,
        # local: the first entry's seconds include the process's fastai import (train_entry imports it)
        "local_first_entry_seconds_median": statistics.median(local_first),
        "local_other_entries_seconds_median": statistics.median(local_rest),
        "ray_entry_train_seconds_median": statistics.median(e["seconds"] for e in ray_entries),
        "ray_entry_task_seconds_median": statistics.median(e["task_seconds"] for e in ray_entries),
        "ray_entry_fastai_import_seconds_median": statistics.median(e["import_seconds"] for e in ray_entries),
        # from one task's end to the next task's start on the same GPU: result, worker exit, fresh worker
        # unpickling the task (imports torch and the trainer)
        "ray_gap_between_tasks_on_a_gpu_seconds_median": statistics.median(gaps) if gaps else None,
        "ray_busiest_gpu_train_seconds_median": statistics.median(
            max(sum(e["seconds"] for e in chain) for chain in per_gpu(rep["ray"]["entries"]).values())
            for rep in reps),
    }
    record = {
        "machine": "2-core CPU-only dev machine, no GPU (shared with other work while measuring)",
        "platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
        "loadavg_before": load_before, "loadavg_after": load_after,
        "config": {"reps": args.reps, "per_class": args.per_class, "classes": 3, "side_px": 40, "epochs": 1,
                   "entries": ["resnet18@32", "convnext_atto@32", "resnet18@48", "convnext_atto@48"],
                   "effective_batch": 8, "micro_batch": 4, "ray_instance": "ray.init(num_cpus=2, num_gpus=2)"},
        "summary": summary, "overheads": overheads, "reps": reps,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({"summary": summary, "overheads": overheads}, indent=2))


if __name__ == "__main__":
    main()
