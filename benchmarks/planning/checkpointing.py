"""Activation checkpointing: which reference entries need it, its memory saving, and its time cost.

Two parts, one JSON file (``--out``):

``plans``: ``probe_plan`` with the estimate meter (no GPU) for the reference set on an 8 GiB card,
and for its 384-px counterparts (the same families at 384: convnext_large, vit_large_patch16_384,
swin_large_patch4_window12_384, swinv2_large_window12to24_192to384) on a 16 GiB and an 8 GiB card; per entry the
chosen configuration, why, and the predicted peak with and without checkpointing.

``step_time``: real fp32 training steps on this machine's CPU for tiny models with and without
checkpointing, interleaved over ``--reps`` rounds (medians; the machine is shared and noisy).

Usage: python -m benchmarks.planning.checkpointing [--out benchmarks/results/checkpointing.json]
                                               [--parts plans step_time] [--reps 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks.paths import RESULTS
from planner.base.budget import format_bytes, parse_budget
from planner.base.entries import REFERENCE_RESIZE, make_entry, reference_entries, single_entry
from planner.base.plan import ItemTransform

LARGE_384 = [("convnext_large_in22k", "crop"), ("vit_large_patch16_384", "squish"),
             ("swin_large_patch4_window12_384", "crop"), ("swinv2_large_window12to24_192to384", "squish")]
TINY = [("convnext_atto", 128), ("resnet10t", 160), ("vit_tiny_patch16_224", 224)]


def entries_384() -> list:
    items = {"crop": ItemTransform(resize=REFERENCE_RESIZE, method="crop"),
             "squish": ItemTransform(resize=480, method="squish")}
    return [make_entry(arch, items[method], 384) for arch, method in LARGE_384]


def plan_rows(entries, budget_text: str) -> list[dict]:
    from planner.probe.meters.estimate import EstimateMeter
    from planner.probe.probe import probe_plan

    budget = parse_budget(budget_text)
    meter = EstimateMeter()
    started = time.perf_counter()
    plan = probe_plan(entries, meter, budget_bytes=budget)
    meter.close()
    rows = []
    for entry in plan.entries:
        by_mode = {a.grad_checkpointing: a for a in entry.alternatives}
        rows.append({
            "budget": budget_text, "entry": entry.name, "accum": entry.accum, "micro_batch": entry.micro_batch,
            "grad_checkpointing": entry.grad_checkpointing, "fits": entry.fits, "choice": entry.choice,
            "predicted_peak_bytes": entry.predicted_peak_bytes,
            "without": by_mode[False].model_dump() if False in by_mode else None,
            "with": by_mode[True].model_dump() if True in by_mode else None,
        })
        print(f"{budget_text} {entry.name}: {entry.accum} × {entry.micro_batch}, checkpointing "
              f"{entry.grad_checkpointing}, {format_bytes(entry.predicted_peak_bytes)} ({entry.choice})", flush=True)
    print(f"{budget_text}: planned in {time.perf_counter() - started:.1f} s", flush=True)
    return rows


def step_times(reps: int) -> list[dict]:
    from planner.probe.meters.cpu import CpuMeter

    torch.set_num_threads(1)
    meter = CpuMeter()
    seconds: dict[tuple[str, bool], list[float]] = {}
    peaks: dict[tuple[str, bool], int] = {}
    for _ in range(reps):
        for arch, size in TINY:
            for checkpointing in (False, True):
                entry = dataclasses.replace(single_entry(arch, size)[0], grad_checkpointing=checkpointing)
                point = meter.measure(entry, 8)
                seconds.setdefault((arch, checkpointing), []).append(point.step_seconds)
                peaks[(arch, checkpointing)] = point.peak_bytes
    meter.close()
    rows = []
    for arch, size in TINY:
        plain, checkpointed = (statistics.median(seconds[(arch, c)]) for c in (False, True))
        rows.append({"arch": arch, "size": size, "micro_batch": 8, "reps": reps,
                     "step_seconds_without": plain, "step_seconds_with": checkpointed,
                     "time_ratio": checkpointed / plain, "peak_bytes_without": peaks[(arch, False)],
                     "peak_bytes_with": peaks[(arch, True)]})
        print(f"{arch} {size}px micro-batch 8: {plain * 1000:.0f} ms -> {checkpointed * 1000:.0f} ms "
              f"(x{checkpointed / plain:.2f}), {format_bytes(peaks[(arch, False)])} -> "
              f"{format_bytes(peaks[(arch, True)])}", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "checkpointing.json")
    parser.add_argument("--parts", nargs="*", default=["plans", "step_time"])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    result: dict = {"machine": "dev machine (2 cores, no GPU, shared)", "torch": torch.__version__}
    if "plans" in args.parts:
        result["plans"] = (plan_rows(reference_entries(), "8G") + plan_rows(entries_384(), "16G")
                           + plan_rows(entries_384(), "8G"))
    if "step_time" in args.parts:
        result["step_time"] = step_times(args.reps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
