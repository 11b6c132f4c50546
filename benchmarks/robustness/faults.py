"""Fault-injection loop: kill -9 `planner run` and `planner tune-weights` at many seeded random moments.

Per kill: a fresh folder; the command killed ``delay`` seconds after it started working (run.json
written, for `planner run`; the process started, for tune-weights), ``delay`` drawn uniformly over an
uninterrupted run's duration (halved until the kill lands, when the machine runs faster than it did
then); then every file left is checked whole (tests/fault_runs.py); then the same command reruns to
the end and its results are compared with the uninterrupted run's: prediction
arrays and model tensors bitwise (one torch thread), tune-weights' chosen method, every method's
weights, the study's trial count and best value, and submission.csv. A kill survived = nothing
unreadable after it, and the rerun equal to the uninterrupted run. ``--ray-kills N`` adds N kills of
``planner run --backend ray --gpus-per-entry 0`` (the driver starts a local Ray instance; killed with
-9, it leaves Ray's dashboard and runtime-env agents behind, which exit by themselves within about
two minutes: seen on the dev machine).

Usage::

    python -m benchmarks.robustness.faults [--run-kills 10] [--tune-kills 20] [--ray-kills 0]
                                      [--out benchmarks/results/faults.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.paths import RESULTS
from tests.fault_runs import (
    differences,
    finish,
    is_temporary,
    model_differences,
    planner,
    prediction_arrays,
    run_and_kill,
    unreadable_files,
    weights_outcome,
)
from tests.run_data import make_image_folder, small_plan
from tests.tune_weights_data import informative_and_noise, write_run

RUN_OPTIONS = ("--no-pretrained", "--epochs", "1", "--device", "cpu")
TUNE_OPTIONS = ("--trials", "200")


def timed_reference(args: tuple, started_when: Path | None) -> float:
    """Run a command uninterrupted; seconds from ``started_when`` appearing (or the start) to its end."""
    process = planner(*args)
    while started_when is not None and not started_when.exists() and process.poll() is None:
        time.sleep(0.01)
    started = time.monotonic()
    code, _out, err = finish(process)
    if code != 0:
        raise RuntimeError(err[-2000:])
    return time.monotonic() - started


def kill_loop(kills: int, seed: int, make_folder, command, started_when, compare) -> list[dict]:
    """``kills`` kill-check-rerun-compare rounds; each round's record."""
    rng = random.Random(seed)
    reference_seconds = None
    records = []
    for index in range(kills):
        folder = make_folder(f"k{index}")
        if reference_seconds is None:
            reference_seconds = timed_reference(command(folder), started_when(folder))
            compare.reference(folder)
            folder = make_folder(f"k{index}b")
        delay = rng.uniform(0, reference_seconds)
        kill = run_and_kill(command(folder), started_when(folder), delay)
        while kill.ended_before and delay > 0.1:  # a less loaded machine finished sooner: kill sooner
            delay /= 2
            folder = make_folder(f"k{index}_{delay:.2f}")
            kill = run_and_kill(command(folder), started_when(folder), delay)
        problems = unreadable_files(folder)
        temporaries = sorted(p.name for p in folder.rglob("*") if is_temporary(p))
        code, _out, err = finish(planner(*command(folder)))
        mismatches = compare.against(folder) if code == 0 else [f"rerun exit {code}: {err.strip()[-300:]}"]
        left = sorted(p.name for p in folder.rglob("*") if is_temporary(p))
        record = {"delay": round(delay, 2), "ended_before_kill": kill.ended_before, "unreadable": problems,
                  "temporaries_after_kill": temporaries, "temporaries_after_rerun": left, "mismatches": mismatches,
                  "survived": not problems and not mismatches and not left}
        records.append(record)
        print(json.dumps(record), flush=True)
    return records


class RunComparison:
    """Predictions and model tensors against the uninterrupted run's."""

    def reference(self, folder: Path) -> None:
        self.folder, self.arrays = folder, prediction_arrays(folder)

    def against(self, folder: Path) -> list[str]:
        return differences(self.arrays, prediction_arrays(folder)) + model_differences(self.folder, folder)


class TuneComparison:
    """tune-weights' outcome against the uninterrupted run's."""

    def reference(self, folder: Path) -> None:
        self.outcome = weights_outcome(folder)

    def against(self, folder: Path) -> list[str]:
        outcome = weights_outcome(folder)
        return [key for key in self.outcome if outcome[key] != self.outcome[key]]


def summary(records: list[dict]) -> dict:
    killed = [record for record in records if not record["ended_before_kill"]]
    return {"kills": len(killed), "survived": sum(record["survived"] for record in killed),
            "ended_before_kill": len(records) - len(killed),
            "left_temporaries_after_kill": sum(bool(record["temporaries_after_kill"]) for record in killed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-kills", type=int, default=10)
    parser.add_argument("--tune-kills", type=int, default=20)
    parser.add_argument("--ray-kills", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "faults.json")
    args = parser.parse_args()
    started = time.time()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_faults_") as tmp:
        root = Path(tmp)
        data = make_image_folder(root / "data")
        plan = small_plan(root / "plan.json")
        probs, targets = informative_and_noise(rows=300)
        preds = write_run(root / "preds", ["a", "b"], probs, targets)

        def run_command(backend: str):
            extra = ("--backend", "ray", "--gpus-per-entry", "0") if backend == "ray" else ()
            return lambda folder: ("run", plan, "--data", data, "--out", folder, *RUN_OPTIONS, *extra)

        for backend, kills in (("local", args.run_kills), ("ray", args.ray_kills)):
            if kills:
                results[f"run_{backend}"] = kill_loop(
                    kills, args.seed, lambda name, b=backend: root / b / name, run_command(backend),
                    lambda folder: folder / "run.json", RunComparison())
        if args.tune_kills:
            results["tune_weights"] = kill_loop(
                args.tune_kills, args.seed, lambda name: Path(shutil.copytree(preds, root / "tune" / name)),
                lambda folder: ("tune-weights", folder, *TUNE_OPTIONS), lambda folder: None, TuneComparison())
    output = {
        "machine": {"description": "2-core CPU-only dev machine, no GPU, shared with other agents' jobs",
                    "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_at_end": os.getloadavg()},
        "seconds": round(time.time() - started),
        "summary": {name: summary(records) for name, records in results.items()},
        "kills": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(output, indent=2) + "\n")
    print(json.dumps(output["summary"], indent=2))


if __name__ == "__main__":
    main()
