"""The estimating core on meta tensors against its first version on torch's fake tensors, side by side.

For one architecture of every family of the installed timm (the smallest-named of each, by default) the
published-GPU recipe (``benchmarks.published.recipe``: the model's own head, SGD Nesterov,
CUDA's fp16 autocast policy) is stepped at a small batch on the model's default input size, once on
meta tensors and once on fake tensors, each in a fresh step of its own: the bytes (the tracker's
live peak and the card bytes of the caching allocator model), the number of allocations, the
seconds of the model build and of two steps (a first one, which creates the optimizer state, then
one at another batch), or the error. Prints agreement ("the same bytes": the same live peak and card
bytes at both batches) and the speed ratio (medians); ``--json`` writes one object per model.

    python -m benchmarks.planning.meta_vs_fake --jobs 2 --json benchmarks/results/meta_vs_fake.json
    python -m benchmarks.planning.meta_vs_fake --models efficientvit_b0 swinv2_cr_tiny_ns_224
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import re
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from planner.base.atomic import atomic_write_text

BATCHES = (8, 16)


SIZE_WORDS = ("atto", "femto", "pico", "nano", "micro", "tiny", "xxs", "xs", "mini", "small", "s", "b0", "t",
              "m0", "050", "100", "base", "b", "m")
"""Words that name a member's size in timm, smallest first: the sample takes each family's smallest."""


def size_rank(name: str) -> tuple[int, int, str]:
    """Where ``name`` sorts within its family: by the first size word it contains, then by length."""
    words = re.split(r"[_.]", name)[1:]
    rank = min((SIZE_WORDS.index(word) for word in words if word in SIZE_WORDS), default=len(SIZE_WORDS))
    return rank, len(name), name


def family_samples() -> list[str]:
    """The smallest-named model of every family of the installed timm (family: the name up to its
    first underscore or digit), so that both versions step it in seconds."""
    import timm

    families: dict[str, list[str]] = {}
    for name in timm.list_models():
        families.setdefault(re.split(r"[_\d]", name)[0], []).append(name)
    return [min(members, key=size_rank) for members in families.values()]


def one_version(model: str, tensors: str) -> dict:
    """Build and step ``model`` on ``tensors``: bytes, allocations and seconds, or the error."""
    import torch

    from benchmarks.published.recipe import benchmark_step
    from planner.base.tracker import ALLOC
    from planner.probe.meters.device_model import DeviceModel

    torch.set_num_threads(1)
    try:
        started = time.perf_counter()
        step = benchmark_step(model, tensors=tensors)
        built = time.perf_counter() - started
        size = tuple(step.model.pretrained_cfg.get("input_size", (3, 224, 224))[1:])
        result: dict = {"build_seconds": round(built, 3), "image_size": list(size), "steps": []}
        for batch in BATCHES:
            started = time.perf_counter()
            trace = step.run(batch, size)
            seconds = time.perf_counter() - started
            result["steps"].append({"batch": batch, "seconds": round(seconds, 3), "live_bytes": trace.peak_bytes,
                                    "card_bytes": DeviceModel().peaks(trace).card_bytes,
                                    "allocations": sum(1 for event in trace.step if event[0] == ALLOC)})
        return result
    except Exception as error:  # a model either version cannot step: recorded, not hidden
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"}


def compare(model: str) -> dict:
    return {"model": model, "meta": one_version(model, "meta"), "fake": one_version(model, "fake")}


def summary(records: Sequence[dict]) -> dict:
    """Agreement and speed over the models both versions stepped."""
    def card(part: dict) -> list[tuple[int, int]]:
        return [(step["live_bytes"], step["card_bytes"]) for step in part["steps"]]

    def seconds(part: dict) -> float:
        return sum(step["seconds"] for step in part["steps"])

    both = [r for r in records if "error" not in r["meta"] and "error" not in r["fake"]]
    same = [r for r in both if card(r["meta"]) == card(r["fake"])]
    ratios = [seconds(r["fake"]) / seconds(r["meta"]) for r in both]
    differ = []
    for r in both:
        if r in same:
            continue
        meta, fake = r["meta"]["steps"][-1], r["fake"]["steps"][-1]
        differ.append({"model": r["model"], "live_meta_over_fake": round(meta["live_bytes"] / fake["live_bytes"], 5),
                       "card_meta_over_fake": round(meta["card_bytes"] / fake["card_bytes"], 5),
                       "allocations": (meta["allocations"], fake["allocations"])})
    return {"models": len(records), "both_stepped": len(both), "same_bytes": len(same), "differ": differ,
            "meta_only_failed": [r["model"] for r in records if "error" in r["meta"] and "error" not in r["fake"]],
            "fake_only_failed": [r["model"] for r in records if "error" in r["fake"] and "error" not in r["meta"]],
            "both_failed": [r["model"] for r in records if "error" in r["meta"] and "error" in r["fake"]],
            "median_fake_over_meta_step_seconds": round(statistics.median(ratios), 2) if ratios else None,
            "median_meta_seconds_two_steps": round(statistics.median(seconds(r["meta"]) for r in both), 3)
            if both else None,
            "machine": f"{platform.node()} ({multiprocessing.cpu_count()} cores)"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", help="these models (default: the smallest of every timm family)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--json", type=Path, help="write the records and the summary here")
    args = parser.parse_args(argv)
    models = args.models or family_samples()
    records = []
    with multiprocessing.get_context("spawn").Pool(args.jobs, maxtasksperchild=10) as pool:
        for index, record in enumerate(pool.imap(compare, models), 1):
            meta, fake = record["meta"], record["fake"]
            line = " ".join(f"{label} {part.get('error') or [s['card_bytes'] for s in part['steps']]}"
                            for label, part in (("meta", meta), ("fake", fake)))
            print(f"[{index}/{len(models)}] {record['model']}: {line}", flush=True)
            records.append(record)
    result = summary(records)
    print(json.dumps(result, indent=1))
    if args.json:
        atomic_write_text(args.json, json.dumps({"summary": result, "records": records}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
