"""Probe cost: planner's curve-fitting search vs walking the divisors from the top, side by side.

For the reference set and several budgets, both searches run with the same meter in one process:
planner's (two cheap probes, fit, confirm, check the edge; curves reused between entries of one
architecture and size) and the hand loop (accum 1, 2, 4, ...: micro-batch from the largest
divisor down until one fits). Reported per budget: trials, trials that exceed the budget (each
one an out-of-memory crash on a real card), samples pushed through training steps (a proxy for
GPU time, which grows with the micro-batch; fake steps take about the same time at any size), and
wall time. Run: ``python benchmarks/bench_probe.py [--device estimate] [--budgets 8G 12G 16G 24G]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from planner.base.budget import format_bytes, parse_budget
from planner.base.entries import reference_entries
from planner.probe.meters import get_meter
from planner.probe.options import DEFAULT_MARGIN
from planner.probe.probe import measure_point, probe_plan
from planner.probe.search import candidate_micro_batches

RESULTS = Path(__file__).parent / "results"


def walk_from_top(meter, entry, candidates, budget, limit):
    """The hand loop: largest micro-batch first, halving the micro-batch until one fits."""
    trials = []
    for b in reversed(candidates):
        point = measure_point(meter, entry, b, budget)
        trials.append(point)
        if not point.oom and point.peak_bytes <= limit:
            return b, trials
    return None, trials


def run_budget(device: str, budget_text: str, effective_bs: int) -> dict:
    budget = parse_budget(budget_text)
    limit = budget * (1 - DEFAULT_MARGIN)
    entries = reference_entries()
    meter = get_meter(device)
    started = time.perf_counter()
    plan = probe_plan(entries, meter, budget_bytes=budget, effective_batch_size=effective_bs)
    planner_seconds = time.perf_counter() - started

    started = time.perf_counter()
    walk = {}
    for entry in sorted(entries, key=lambda e: e.arch):
        candidates = candidate_micro_batches(effective_bs, meter.has_batchnorm(entry))
        chosen, trials = walk_from_top(meter, entry, candidates, budget, limit)
        walk[entry.name] = (chosen, trials)
    walk_seconds = time.perf_counter() - started
    meter.close()

    rows = []
    for entry in plan.entries:
        chosen, trials = walk[entry.name]
        rows.append({
            "entry": entry.name, "micro_batch": entry.micro_batch, "accum": entry.accum, "fits": entry.fits,
            "predicted_peak_bytes": entry.predicted_peak_bytes, "walk_micro_batch": chosen,
            "planner_trials": len(entry.probes),
            "planner_over_budget": sum(p.oom or p.peak_bytes > limit for p in entry.probes),
            "planner_samples": sum(p.micro_batch for p in entry.probes),
            "planner_seconds": entry.probe_seconds,
            "walk_trials": len(trials),
            "walk_over_budget": sum(p.oom or p.peak_bytes > limit for p in trials),
            "walk_samples": sum(p.micro_batch for p in trials),
        })
    return {"budget": budget_text, "budget_bytes": budget, "device": device, "planner_seconds": planner_seconds,
            "walk_seconds": walk_seconds, "entries": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="estimate")
    parser.add_argument("--budgets", nargs="+", default=["8G", "12G", "16G", "24G"])
    parser.add_argument("--effective-bs", type=int, default=64)
    args = parser.parse_args()
    results = [run_budget(args.device, budget, args.effective_bs) for budget in args.budgets]
    record = {"machine": f"{platform.node()} ({platform.processor() or platform.machine()}), "
                         "2-core CPU-only dev machine, no GPU", "results": results}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"probe_{args.device}.json").write_text(json.dumps(record, indent=2) + "\n")

    print("| budget | entry | accum | micro-batch | predicted peak | planner trials (over budget) | "
          "walk trials (over budget) | planner samples | walk samples |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for result in results:
        for row in result["entries"]:
            agree = "" if row["walk_micro_batch"] == row["micro_batch"] else " (walk chose "\
                f"{row['walk_micro_batch']})"
            print(f"| {result['budget']} | {row['entry']} | {row['accum']} | {row['micro_batch']}{agree} | "
                  f"{format_bytes(row['predicted_peak_bytes'])} | {row['planner_trials']} "
                  f"({row['planner_over_budget']}) | {row['walk_trials']} ({row['walk_over_budget']}) | "
                  f"{row['planner_samples']} | {row['walk_samples']} |")
    print()
    print("| budget | planner wall s | walk wall s | planner trials | walk trials | trials over budget: "
          "planner / walk | samples: planner / walk |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for result in results:
        rows = result["entries"]
        total = {key: sum(row[key] for row in rows) for key in rows[0] if key.startswith(("planner_", "walk_"))
                 and key != "walk_micro_batch"}
        print(f"| {result['budget']} | {result['planner_seconds']:.1f} | {result['walk_seconds']:.1f} | "
              f"{total['planner_trials']} | {total['walk_trials']} | {total['planner_over_budget']} / "
              f"{total['walk_over_budget']} | {total['planner_samples']} / {total['walk_samples']} |")


if __name__ == "__main__":
    main()
