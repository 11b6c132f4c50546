"""A probe that rehearses the run, against one that took two steps: real probes and wall time.

`planner probe --device cpu` plans the demo's three models (resnet18, convnext_atto, resnet10t at 32 px,
effective batch 32, a 1 GiB card) on the demo's digits, for this checkout and for git revision
``--before`` side by side (fresh processes, alternating, each with an empty estimate store). The
checkout's cpu meter rehearses the run (frozen epoch, unfreezing, unfrozen epochs with validation
until the peak stops growing, TTA) and starts each search from the estimate meter's proposed curve;
the revision's took two training steps and opened each search with two probes. Recorded per arm:
wall seconds, real probes per entry, the chosen micro-batches and predicted peaks.

Usage::

    python -m benchmarks.planning.rehearsal --before 179a14a [--repeats 3]
        [--out benchmarks/results/probe_rehearsal_cpu.json]
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
from planner.demo import write_digits

MODELS = "".join(f'[[model]]\narch = "{arch}"\nitem = {{ resize = 32, method = "squish" }}\nsizes = [32]\n\n'
                 for arch in ("resnet18", "convnext_atto", "resnet10t"))


def export(revision: str, into: Path) -> Path:
    """The revision's tree, from git."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def probe(tree: Path, root: Path, name: str) -> dict:
    """One `planner probe` of the demo's models from ``tree``, with its own empty cache."""
    plan = root / f"{name}.json"
    env = {**os.environ, "PYTHONPATH": str(tree), "XDG_CACHE_HOME": tempfile.mkdtemp(dir=root),
           "PYTHONWARNINGS": "ignore"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "planner", "probe", "--models", root / "models.toml",
                           "--gpu-mem", "1G", "--effective-bs", "32", "--device", "cpu", "--data", root / "digits",
                           "-o", plan], cwd=tree, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name}: {done.stderr.strip()[-400:]}")
    entries = json.loads(plan.read_text())["entries"]
    return {"seconds": round(seconds, 2),
            "entries": {e["name"]: {"micro_batch": e["micro_batch"], "predicted_peak_bytes": e["predicted_peak_bytes"],
                                    "real_probes": sum(not p.get("reused", False) for p in e["probes"]),
                                    "peak_phase": e.get("peak_phase")} for e in entries}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "probe_rehearsal_cpu.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_rehearsal_") as tmp:
        root = Path(tmp)
        (root / "models.toml").write_text(MODELS)
        write_digits(root / "digits")
        trees = {"before": export(args.before, root / "before"), "after": REPO}
        runs = []
        for repeat in range(args.repeats):
            for arm in ("before", "after") if repeat % 2 == 0 else ("after", "before"):
                runs.append({"arm": arm, "repeat": repeat, **probe(trees[arm], root, f"{arm}{repeat}")})
                print(json.dumps(runs[-1]), flush=True)
    medians = {arm: statistics.median(run["seconds"] for run in runs if run["arm"] == arm) for arm in trees}
    result = {"machine": f"{platform.node()} ({os.cpu_count()} cores)", "before": args.before, "runs": runs,
              "median_seconds": medians, "after_over_before": round(medians["after"] / medians["before"], 2)}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"median_seconds": medians, "after_over_before": result["after_over_before"]}))


if __name__ == "__main__":
    main()
