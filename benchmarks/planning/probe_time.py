"""Probe cost: planner's curve-fitting search vs walking the divisors from the top, side by side.

For the reference set and several budgets, both searches run with the same meter in one process:
planner's (two cheap probes, fit, confirm, check the edge; curves reused between entries of one
architecture and size) and the hand loop (accum 1, 2, 4, ...: micro-batch from the largest
divisor down until one fits). Reported per budget: trials, trials that exceed the budget (each
one an out-of-memory crash on a real card), samples pushed through training steps (a proxy for
GPU time, which grows with the micro-batch; fake steps take about the same time at any size), and
wall time. Run: ``python -m benchmarks.planning.probe_time [--device estimate] [--budgets 8G 12G 16G 24G]``.

``--default-plan --before REV`` instead times the default plan as a user runs it, ``planner probe
--gpu-mem 16G`` (estimate meter, six reference entries, no GPU), for this checkout and for git
revision ``REV`` side by side, each with an empty estimate store (a first plan), and this checkout once
more right after each of its runs, on the estimates that run stored (planning again): the CLI in a
fresh process per run, the two versions alternating (each repeat starts with the other one), wall and
CPU seconds (the process's user + system time, which a busy machine inflates less than wall time),
the load average around each run. It also checks that the plans predict the same bytes: every
entry's predicted peak, micro-batch and accumulation, and the peaks of every micro-batch that
several probed. ``--jobs-one`` adds this checkout with ``--jobs 1`` (this process alone) as a third arm.
Written to ``results/probe_default_plan.json`` (``--output PATH`` elsewhere).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.paths import REPO, RESULTS
from planner.base.budget import format_bytes, parse_budget
from planner.base.entries import reference_entries
from planner.probe.meters import get_meter
from planner.probe.probe import measure_point, probe_plan
from planner.probe.search import candidate_micro_batches


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
    entries = reference_entries()
    meter = get_meter(device)
    started = time.perf_counter()
    plan = probe_plan(entries, meter, budget_bytes=budget, effective_batch_size=effective_bs)
    planner_seconds = time.perf_counter() - started
    limit = budget * (1 - plan.margin)  # the hand loop keeps the plan's margin free too

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


def checkout(revision: str, into: Path) -> Path:
    """The files of git ``revision`` of this repository, extracted into ``into``."""
    archive = subprocess.run(["git", "archive", "--format=tar", revision], cwd=REPO, capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def default_plan_run(tree: Path, out: Path, cache: Path, extra: Sequence[str] = ()) -> dict:
    """``planner probe --gpu-mem 16G`` from ``tree`` in a fresh process, with ``cache`` as the user's
    cache folder (planner's estimate store): seconds, load and the plan."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"}
    env["PYTHONPATH"] = str(tree)
    env["XDG_CACHE_HOME"] = str(cache)
    load_before = os.getloadavg()[0]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "planner", "probe", "--gpu-mem", "16G", "-o", str(out), *extra],
                   cwd=out.parent, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu_after.ru_utime - cpu_before.ru_utime + cpu_after.ru_stime - cpu_before.ru_stime
    plan = json.loads(out.read_text())
    return {"wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2), "plan_seconds": plan["seconds"],
            "load_before": load_before, "load_after": os.getloadavg()[0], "bytes": predicted_bytes(plan)}


def predicted_bytes(plan: dict) -> dict:
    """Every byte count the plan predicts, per entry: its choice and each probe's peaks by micro-batch."""
    return {entry["name"]: {
        "predicted_peak_bytes": entry["predicted_peak_bytes"], "micro_batch": entry["micro_batch"],
        "accum": entry["accum"],
        "probes": {str(p["micro_batch"]): [p["peak_bytes"], p.get("forward_backward_bytes"), p.get("step_bytes")]
                   for p in entry["probes"]},
    } for entry in plan["entries"]}


def same_bytes(plans: list[dict]) -> tuple[bool, bool]:
    """Whether every plan chose the same (micro-batch, accumulation, predicted peak) for every entry, and
    whether the probes that several plans made at the same micro-batch measured the same bytes."""
    choice = ("predicted_peak_bytes", "micro_batch", "accum")
    same_choice = all({k: e[k] for k in choice} == {k: plans[0][name][k] for k in choice}
                      for plan in plans for name, e in plan.items())
    probes: dict[tuple[str, str], list] = {}
    same_probes = all(probes.setdefault((name, b), peaks) == peaks
                      for plan in plans for name, e in plan.items() for b, peaks in e["probes"].items())
    return same_choice, same_probes


def bench_default_plan(before: str, repeats: int, output: Path, jobs_one: bool) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        trees = {f"before ({before})": checkout(before, Path(scratch) / "before"), "after (this checkout)": REPO}
        if jobs_one:
            trees["after, --jobs 1"] = REPO
        extra = {"after, --jobs 1": ["--jobs", "1"]}
        again = "after, planning again (estimates stored by the run before)"
        runs: dict[str, list[dict]] = {name: [] for name in [*trees, again]}

        def run(name: str, tree: Path, cache: Path) -> None:
            out = Path(scratch) / f"plan_{len(runs[name])}_{len(name)}.json"
            runs[name].append(default_plan_run(tree, out, cache, extra.get(name, ())))
            print(f"{name}: {runs[name][-1]['wall_seconds']} s wall, {runs[name][-1]['cpu_seconds']} s CPU, "
                  f"load {runs[name][-1]['load_before']:.1f}", flush=True)

        for repeat in range(repeats):
            order = list(trees) if repeat % 2 == 0 else list(reversed(trees))
            for name in order:
                cache = Path(tempfile.mkdtemp(dir=scratch))  # an empty estimate store: a first plan
                run(name, trees[name], cache)
                if name == "after (this checkout)":
                    run(again, trees[name], cache)
    names = list(runs)
    same_choice, same_probes = same_bytes([run["bytes"] for name in names for run in runs[name]])
    summary = {name: {key: statistics.median(run[key] for run in runs[name])
                      for key in ("wall_seconds", "cpu_seconds", "plan_seconds")} for name in names}
    record = {"machine": f"{platform.node()}, 2-core CPU-only dev machine, no GPU, shared",
              "command": "planner probe --gpu-mem 16G", "repeats": repeats, "median": summary,
              "ratio_after_before": {name: {key: round(summary[name][key] / summary[names[0]][key], 3)
                                            for key in summary[names[0]]} for name in names[1:]},
              "same_choice_and_predicted_peak_in_every_plan": same_choice,
              "same_bytes_for_every_micro_batch_probed_twice": same_probes,
              "bytes": {name: runs[name][0]["bytes"] for name in names},
              "runs": {name: [{k: v for k, v in run.items() if k != "bytes"} for run in runs[name]]
                       for name in names}}
    RESULTS.mkdir(exist_ok=True)
    output.write_text(json.dumps(record, indent=2) + "\n")
    print("| version | wall s (median) | CPU s (median) | probing s, the plan's own (median) | load average |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name in names:
        loads = [run["load_before"] for run in runs[name]]
        print(f"| {name} | {summary[name]['wall_seconds']:.1f} | {summary[name]['cpu_seconds']:.1f} | "
              f"{summary[name]['plan_seconds']:.1f} | {min(loads):.1f}-{max(loads):.1f} |")
    print(f"after / before: {record['ratio_after_before']}; every plan makes the same choices with the same "
          f"predicted peaks: {same_choice}; probes at the same micro-batch measured the same bytes: {same_probes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="estimate")
    parser.add_argument("--budgets", nargs="+", default=["8G", "12G", "16G", "24G"])
    parser.add_argument("--effective-bs", type=int, default=64)
    parser.add_argument("--default-plan", action="store_true", help="time `planner probe --gpu-mem 16G` instead")
    parser.add_argument("--before", default="HEAD", help="with --default-plan: the git revision to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs-one", action="store_true",
                        help="with --default-plan: time this checkout with --jobs 1 (this process alone) too")
    parser.add_argument("--output", type=Path, default=RESULTS / "probe_default_plan.json",
                        help="with --default-plan: where the record goes")
    args = parser.parse_args()
    if args.default_plan:
        bench_default_plan(args.before, args.repeats, args.output, args.jobs_one)
        return
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
