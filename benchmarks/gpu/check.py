"""One-shot GPU proof: does the plan fit, tightly? Run on a CUDA machine (see session.sh).

Under a 16G budget (a whole card emulated on a larger one by capping the allocator at the budget
minus this process's non-torch bytes), for the reference set:

(a) probe with the cuda meter, timed;
(b) per entry, ~20 real training micro-steps exactly as `planner run` trains (fastai learner from
    ``planner.base.recipe``, fp16, ``GradientAccumulation(64)``, batch transforms on the GPU), at the
    chosen micro-batch and at the next larger divisor; actual peak = reserved peak + non-torch
    bytes, beside the prediction (the larger one should run out of memory or exceed the budget);
(c) the estimate meter's prediction at the same micro-batches and its error against (b);
(d) the search people use otherwise (Lightning's batch-size finder: double until out of memory,
    then bisect, restricted to divisors), with the same trial step, timed;
(e) a Markdown table and a JSON file in --out.

Synthetic images (memory does not depend on pixel values). Every run is in this one process; the
cache is emptied and peak statistics reset before each. On a machine without CUDA it says so in
one line and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch


def train_steps(entry, micro_batch: int, budget: int, effective_bs: int, n_steps: int) -> dict:
    """``n_steps`` micro-steps as `planner run` trains; returns the peak or the OOM."""
    from fastai.callback.core import Callback, CancelFitException

    from planner.base import cuda_device as gpu
    from planner.base.recipe import build_learner
    from planner.probe.probe_data import ProbeData

    batch_seconds: list[float] = []

    class StopAfter(Callback):
        order = 99

        def before_batch(self):
            torch.cuda.synchronize()
            self.started = time.perf_counter()

        def after_batch(self):
            torch.cuda.synchronize()
            batch_seconds.append(time.perf_counter() - self.started)
            if self.iter + 1 >= n_steps:
                raise CancelFitException()

    dls = ProbeData().dataloaders(entry.item, entry.size, micro_batch, "cuda", n_steps + 1)
    learn = build_learner(dls, entry.arch, effective_batch_size=effective_bs, pretrained=False, fp16=True)
    gpu.release_cached()
    gpu.cap_to_budget(budget)
    started, oom = time.perf_counter(), False
    try:
        with learn.no_bar(), learn.no_logging():
            learn.fit(1, lr=1e-4, cbs=[StopAfter()])
        torch.cuda.synchronize()
    except torch.OutOfMemoryError:
        oom = True
    seconds = time.perf_counter() - started
    peak = None if oom else gpu.peak_bytes()
    learn.opt = None
    learn.model.zero_grad(set_to_none=True)
    learn._end_cleanup()
    del learn, dls
    gpu.uncap()
    gpu.release_cached()
    timed = sorted(batch_seconds[2:])  # the first batches autotune cuDNN and calibrate the GradScaler
    median = timed[len(timed) // 2] if timed else None
    return {"micro_batch": micro_batch, "oom": oom, "peak_bytes": peak, "seconds": round(seconds, 2),
            "step_seconds_median": median, "batches": len(batch_seconds)}


def doubling_then_bisection(meter, entry, candidates, budget, limit) -> dict:
    """Lightning's finder on divisors: double from the smallest until failure, then bisect."""
    from planner.probe.probe import measure_point

    started, trials = time.perf_counter(), []

    def fits(b):
        point = measure_point(meter, entry, b, budget)
        trials.append(point)
        return not point.oom and point.peak_bytes <= limit

    good, bad = None, None
    index = 0
    while index < len(candidates):
        if fits(candidates[index]):
            good = index
            # doubling: the next divisor at least twice as large
            index = next((i for i, b in enumerate(candidates) if b >= 2 * candidates[index]), len(candidates))
        else:
            bad = index
            break
    if good is not None and bad is not None:
        low, high = good, bad
        while high - low > 1:
            middle = (low + high) // 2
            if fits(candidates[middle]):
                low = middle
            else:
                high = middle
        good = low
    return {"micro_batch": candidates[good] if good is not None else None, "trials": len(trials),
            "ooms": sum(p.oom for p in trials), "seconds": round(time.perf_counter() - started, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check_out"))
    parser.add_argument("--budget", default="16G")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--effective-bs", type=int, default=64)
    parser.add_argument("--entries", type=int, default=None, help="only the first N reference entries")
    parser.add_argument("--doubling", action="store_true", help="also time the doubling-then-bisection search")
    parser.add_argument("--estimate", action="store_true", help="also run the estimate meter (CPU work)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks.gpu.check needs a CUDA GPU and none is present here: nothing was measured.")
        return 0

    import warnings

    warnings.filterwarnings("ignore")
    from planner.base import cuda_device as gpu
    from planner.base.budget import format_bytes, parse_budget
    from planner.base.entries import reference_entries
    from planner.base.plan import save_plan
    from planner.probe.meters.cuda import CudaMeter
    from planner.probe.meters.estimate import EstimateMeter
    from planner.probe.probe import probe_plan
    from planner.probe.search import candidate_micro_batches

    args.out.mkdir(parents=True, exist_ok=True)
    budget = parse_budget(args.budget)
    entries = reference_entries()[: args.entries]
    record: dict = {"gpu": gpu.gpu_name(), "gpu_total_bytes": gpu.gpu_total_bytes(), "torch": torch.__version__,
                    "budget": args.budget, "budget_bytes": budget, "steps": args.steps, "entries": []}

    def save():
        (args.out / "gpu_check.json").write_text(json.dumps(record, indent=2) + "\n")

    # (a) the cuda meter's plan
    meter = CudaMeter()
    started = time.perf_counter()
    plan = probe_plan(entries, meter, budget_bytes=budget, effective_batch_size=args.effective_bs)
    record["probe_seconds"] = round(time.perf_counter() - started, 1)
    record["context_bytes"] = meter.context_bytes
    save_plan(plan, args.out / "plan.json")
    print(f"(a) probed {len(entries)} entries in {record['probe_seconds']} s", flush=True)
    limit = budget * (1 - plan.margin)

    # (d) the doubling-then-bisection search with the same trial step
    for entry in entries:
        row = {"entry": entry.name}
        if args.doubling:
            candidates = candidate_micro_batches(args.effective_bs, meter.has_batchnorm(entry))
            try:
                row["doubling"] = doubling_then_bisection(meter, entry, candidates, budget, limit)
            except Exception:
                row["doubling_error"] = traceback.format_exc(limit=3)
        record["entries"].append(row)
    meter.close()
    save()
    print("(d) doubling-then-bisection done", flush=True)

    # (b) real training steps at the chosen and the next larger micro-batch; (c) the estimate meter
    estimate = EstimateMeter() if args.estimate else None
    for entry, planned, row in zip(entries, plan.entries, record["entries"], strict=True):
        candidates = candidate_micro_batches(args.effective_bs, True)
        larger = [b for b in candidates if b > planned.micro_batch][:1]
        probe_points = [p for p in planned.probes if not p.oom]
        row.update({"micro_batch": planned.micro_batch, "accum": planned.accum, "fits": planned.fits,
                    "predicted_peak_bytes": planned.predicted_peak_bytes, "probes": len(planned.probes),
                    "probe_ooms": planned.ooms, "probe_seconds": planned.probe_seconds,
                    "probe_points": [p.to_dict() for p in probe_points], "runs": []})
        for b in [planned.micro_batch, *larger]:
            try:
                run = train_steps(entry, b, budget, args.effective_bs, args.steps)
            except Exception:
                run = {"micro_batch": b, "error": traceback.format_exc(limit=3)}
            run["estimate_bytes"] = estimate.measure(entry, b).peak_bytes if estimate else None
            row["runs"].append(run)
            save()
            shown = "OOM" if run.get("oom") else format_bytes(run.get("peak_bytes"))
            print(f"(b) {entry.name} micro-batch {b}: actual {shown}, estimate "
                  f"{format_bytes(run['estimate_bytes'])}", flush=True)
    if estimate:
        estimate.close()
    save()

    # (e) the table
    lines = [f"GPU: {record['gpu']} ({format_bytes(record['gpu_total_bytes'])}), torch {record['torch']}, "
             f"budget {args.budget} emulated by allocator cap; context {format_bytes(record['context_bytes'])}; "
             f"cuda-meter probe of {len(entries)} entries: {record['probe_seconds']} s", "",
             "| entry | micro-batch | predicted (cuda meter) | actual, 20 steps | error | estimate | estimate error "
             "| next micro-batch: actual | probes (OOMs), s | doubling trials (OOMs), s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in record["entries"]:
        runs = row["runs"]
        chosen = runs[0]
        nxt = runs[1] if len(runs) > 1 else None
        actual = chosen.get("peak_bytes")
        error = f"{(row['predicted_peak_bytes'] - actual) / actual:+.1%}" if actual and row["predicted_peak_bytes"] \
            else "-"
        estimated = chosen["estimate_bytes"]
        est_error = f"{(estimated - actual) / actual:+.1%}" if actual and estimated else "-"
        nxt_text = "-" if nxt is None else ("OOM" if nxt.get("oom") else format_bytes(nxt.get("peak_bytes")))
        doubling = row.get("doubling", {})
        lines.append(
            f"| {row['entry']} | {row['micro_batch']} | {format_bytes(row['predicted_peak_bytes'])} | "
            f"{'OOM' if chosen.get('oom') else format_bytes(actual)} | {error} | "
            f"{format_bytes(chosen['estimate_bytes'])} | {est_error} | {nxt_text} | {row['probes']} "
            f"({row['probe_ooms']}), {row['probe_seconds']} | {doubling.get('trials', '-')} "
            f"({doubling.get('ooms', '-')}), {doubling.get('seconds', '-')} |")
    (args.out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
