"""`planner demo` wall time, idle and beside one busy process, with fixed and with chosen CPU threads.

Two arms, run alternately as real `planner demo` subprocesses:

- ``before``: ``OMP_NUM_THREADS`` = the usable cores: torch's default, which is what planner did
  before ``planner/base/threads.py`` (one OpenMP thread per core, whatever else runs).
- ``after``: no ``OMP_NUM_THREADS``: planner chooses the threads before the probe and each epoch
  (the cores other processes leave free, at least one).

Two conditions: ``idle`` (nothing started by the benchmark) and ``busy`` (one
``python -c 'while True: pass'`` started a second before the demo and killed after it). The machine
is shared, so each run records the 1-minute load average before it and what ``planner.base.threads``
measured as busy elsewhere just before the demo started; the summary gives medians over repetitions.
Usage::

    python -m benchmarks.run.threads [--reps 3] [--limit N] [--epochs 3] [--trials 200]
                                       [--out benchmarks/results/threads_demo.json]
"""

from __future__ import annotations

import argparse
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
from planner.base.threads import busy_elsewhere, usable_cores

ARMS = ("before", "after")
CONDITIONS = ("idle", "busy")


def demo_once(arm: str, condition: str, folder: Path, demo_args: list[str]) -> dict:
    """One `planner demo` run; returns its wall time, the per-entry epoch seconds and threads."""
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    env.update(PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore", COLUMNS="160")
    if arm == "before":
        env["OMP_NUM_THREADS"] = str(len(usable_cores()))
    spinner = None
    if condition == "busy":
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(1.0)
    try:
        load = os.getloadavg()[0]
        elsewhere = busy_elsewhere(usable_cores(), seconds=0.5)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "planner", "demo", "--out", str(folder), *demo_args], env=env,
                              capture_output=True, text=True, cwd=REPO)
        wall = time.perf_counter() - started
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    if done.returncode != 0:
        raise RuntimeError(f"demo failed ({arm}, {condition}): {done.stderr[-2000:]}")
    run = json.loads((folder / "run" / "run.json").read_text())
    entries = {
        name: {"epoch_seconds": [round(epoch["seconds"], 2) for epoch in record["epochs"]],
               "threads": [epoch.get("threads") for epoch in record["epochs"]],
               "error_rate": record["metrics"]["error_rate"]}
        for name, record in run["entries"].items()
    }
    return {"arm": arm, "condition": condition, "wall_seconds": round(wall, 1), "loadavg_1min_before": load,
            "busy_elsewhere_before": None if elsewhere is None else round(elsewhere, 2), "entries": entries}


def summarise(runs: list[dict]) -> dict:
    """Median wall time per arm and condition, and the slowdown under load."""
    summary: dict[str, dict] = {}
    for arm in ARMS:
        walls = {condition: [run["wall_seconds"] for run in runs if (run["arm"], run["condition"]) == (arm, condition)]
                 for condition in CONDITIONS}
        medians = {condition: statistics.median(values) for condition, values in walls.items() if values}
        summary[arm] = {"wall_seconds": walls, "median_wall_seconds": medians}
        if len(medians) == 2:
            summary[arm]["busy_over_idle"] = round(medians["busy"] / medians["idle"], 2)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="digits used (demo --limit); default all 1,797")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS / "threads_demo.json")
    args = parser.parse_args()
    demo_args = ["--epochs", str(args.epochs), "--trials", str(args.trials)]
    if args.limit:
        demo_args += ["--limit", str(args.limit)]
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench_threads_") as tmp:
        for rep in range(args.reps):
            order = [(arm, condition) for condition in CONDITIONS for arm in ARMS]
            if rep % 2:
                order.reverse()
            for index, (arm, condition) in enumerate(order):
                run = demo_once(arm, condition, Path(tmp) / f"r{rep}_{index}", demo_args)
                run["rep"] = rep
                runs.append(run)
                print(json.dumps({key: run[key] for key in ("rep", "arm", "condition", "wall_seconds",
                                                            "loadavg_1min_before", "busy_elsewhere_before")}),
                      flush=True)
    result = {
        "machine": {"description": "2-core CPU-only dev machine, no GPU, shared with other agents' jobs",
                    "cpus": os.cpu_count(), "usable_cores": len(usable_cores()), "platform": platform.platform(),
                    "python": platform.python_version()},
        "command": " ".join(["python -m planner demo", *demo_args]),
        "summary": summarise(runs),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
