"""New test images after a run: predicted from the saved models against trained again, on the demo.

`planner demo` trains its three models on the digits once. Then every test image is copied under a
new name (the test set doubles, as when a competition's test set arrives after training), and two
arms run alternately, each as a real `planner run` subprocess on its own copy of the run folder:

- ``repredict``: the same command again: the finished entries' test sets are predicted again from
  their saved models (no training);
- ``retrain``: the same command with ``--retrain``: every entry trained again (what a user had to do
  before the run noticed a changed test set).

Both must end with the same test predictions (the same seeds and one thread: retraining repeats the
training bitwise), which the script checks; it records each arm's wall seconds, their medians and the
ratio. Every process trains on one thread (``OMP_NUM_THREADS=1``), the demo's too.

Usage::

    python -m benchmarks.run.repredict [--repeats 3] [--epochs 3] [--limit N]
                                         [--out benchmarks/results/repredict_demo.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.paths import REPO, RESULTS
from planner.demo import DEMO_LR

ARMS = ("repredict", "retrain")


def planner(*args: str | Path) -> tuple[subprocess.CompletedProcess, float]:
    """The real CLI in a subprocess, and its wall seconds."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "planner", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}, cwd=REPO)
    return done, time.perf_counter() - started


def test_probs(run_dir: Path) -> dict[str, np.ndarray]:
    """Each entry's test probabilities, rows in test-name order."""
    probs = {}
    for path in sorted((run_dir / "preds").glob("*.npz")):
        with np.load(path) as npz:
            order = np.argsort(npz["test_names"])
            probs[path.stem] = npz["test_probs"][order]
    return probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "repredict_demo.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_repredict_") as tmp:
        demo = Path(tmp) / "demo"
        made, seconds = planner("demo", "-o", demo, "--epochs", args.epochs, "--trials", "20",
                                *(["--limit", args.limit] if args.limit else []))
        if made.returncode != 0:
            raise SystemExit(f"planner demo failed: {made.stderr.strip()[-500:]}")
        print(f"demo: {seconds:.0f} s", flush=True)
        tests = demo / "data" / "test_images"
        originals = sorted(tests.iterdir())
        for path in originals:
            shutil.copy(path, tests / f"new_{path.name}")
        command = ("run", demo / "plan.json", "--data", demo / "data", "--no-pretrained", "--device", "cpu",
                   "--epochs", args.epochs, "--lr", DEMO_LR)
        runs: list[dict] = []
        outputs: dict[str, dict[str, np.ndarray]] = {}
        for repeat in range(args.repeats):
            for arm in ARMS if repeat % 2 == 0 else ARMS[::-1]:
                folder = Path(tmp) / f"{arm}{repeat}"
                shutil.copytree(demo / "run", folder)
                done, seconds = planner(*command, "--out", folder, *(["--retrain"] if arm == "retrain" else []))
                if done.returncode != 0:
                    raise SystemExit(f"{arm} failed: {done.stderr.strip()[-500:]}")
                trained = sum(line.startswith("train ") for line in done.stdout.splitlines())
                repredicted = sum(line.startswith("re-predict ") for line in done.stdout.splitlines())
                runs.append({"arm": arm, "repeat": repeat, "seconds": round(seconds, 2), "entries_trained": trained,
                             "entries_repredicted": repredicted})
                outputs[arm] = test_probs(folder)
                print(json.dumps(runs[-1]), flush=True)
        largest = max(float(np.abs(outputs["repredict"][name] - outputs["retrain"][name]).max())
                      for name in outputs["retrain"])
        medians = {arm: statistics.median(run["seconds"] for run in runs if run["arm"] == arm) for arm in ARMS}
        result = {
            "machine": f"{platform.node()} ({os.cpu_count()} cores)", "epochs": args.epochs,
            "test_images": 2 * len(originals), "new_test_images": len(originals), "runs": runs,
            "median_seconds": medians, "retrain_over_repredict": round(medians["retrain"] / medians["repredict"], 2),
            "largest_test_probability_difference": largest,
        }
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({key: result[key] for key in ("median_seconds", "retrain_over_repredict",
                                                        "largest_test_probability_difference")}))


if __name__ == "__main__":
    main()
