"""Device-free estimates against timm's published RTX 3090 training runs (the estimate meter's proof).

For every bracketed model (``--models A B`` to restrict) the published recipe is run as one fake
step at the recorded batch and at the next larger one (``benchmarks.published.recipe``), the
device model turns each into bytes on the card, and the largest batch of timm's decay sequence
predicted to fit the card (23.70 GiB, what torch reports for an RTX 3090) is found (more steps only
where the bracket is missed). The step at the recorded batch also counts every kernel's FLOPs and
bytes, so the same pass predicts the samples per second the card reached (issue 11). Prints exact /
unsafe / cautious rates per half (calibration, held out) and per family, and lists the models
today's timm cannot build or builds differently (parameter count unlike the CSV's).

    python -m benchmarks.published.estimate --jobs 2 --json benchmarks/results/published_gpu.json
    python -m benchmarks.published.estimate --models resnet50_gn vit_base_patch16_224
    python -m benchmarks.published.estimate --precision cpu_bf16 --json benchmarks/results/published_gpu_cpu_bf16.json
    python -m benchmarks.published.estimate --tensors fake --models resnet50_gn  # the core's first version
    python -m benchmarks.published.estimate --report benchmarks/results/published_gpu.json \
        benchmarks/results/published_gpu_cpu_bf16.json

``--fit`` refits the device model's constants on the calibration half (printing them; copy them to
``planner/probe/meters/device_model.py``) and judges both halves with them. ``--report`` prints the
ablation table (precision × device model, each refitted on its calibration half) from saved runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from benchmarks.published.calibrate import BracketPeaks, fit_overhead, outcomes
from benchmarks.published.runs import (
    CARD_BYTES,
    DECAY_SEQUENCE,
    PublishedRun,
    Rates,
    family_of,
    half_of,
    larger_batch,
    load_runs,
    params_match,
    predicted_batch,
    rates_by,
    smaller_batch,
)
from benchmarks.published.steptime import counted, predicted_samples_per_sec, step_counters
from planner.base.atomic import atomic_write_text
from planner.probe.meters.device_model import (
    CALIBRATED_FLAT_FACTOR,
    CALIBRATED_FLAT_OVERHEAD_BYTES,
    CALIBRATED_OVERHEAD_BYTES,
)
from planner.probe.meters.fake_step import PRECISIONS, Tensors

GIB = 2**30
FLAT_FACTORS = tuple(round(1.0 + 0.01 * i, 2) for i in range(0, 31))
TENSORS: tuple[Tensors, ...] = ("meta", "fake")
DEVICES = {"caching": "active", "reserved": "reserved", "flat": "allocated"}
"""Device models compared: the allocator replay's segments in use (the product's), all its segments
(reserved), and a flat factor on the allocated peak (the project's earlier model)."""


def measure(run: PublishedRun, batch: int, step, counters: Sequence = ()) -> dict:
    """One fake step at ``batch``: the byte counts both device models need; ``counters``
    (:func:`benchmarks.published.steptime.step_counters`) ride along in the same pass."""
    from planner.probe.meters.allocator import steady_state_peaks

    trace = step.run(batch, (run.image_size, run.image_size), modes=counters)
    peaks = steady_state_peaks(list(trace.setup), list(trace.step))
    return {"batch": batch, "live": trace.peak_bytes, "allocated": peaks.allocated, "active": peaks.active,
            "reserved": peaks.reserved}


def card_need(point: dict, device: str, constants: dict) -> int:
    """Card bytes for a measured point under a device model (a key of :data:`DEVICES`)."""
    fitted = constants[device]
    return int(fitted["factor"] * point[DEVICES[device]]) + fitted["overhead"]


def walk(run: PublishedRun, points: dict[int, dict], step, constants: dict) -> int | None:
    """Measure further batches until the largest fitting one is known; returns it."""
    def fits(batch: int) -> bool:
        if batch not in points:
            points[batch] = measure(run, batch, step)
        return card_need(points[batch], "caching", constants) <= CARD_BYTES

    batch = run.batch
    if fits(batch):
        while (up := larger_batch(batch)) is not None and fits(up):
            batch = up
    else:
        while (down := smaller_batch(batch)) is not None and not fits(down):
            batch = down
    return predicted_batch({b: card_need(p, "caching", constants) <= CARD_BYTES for b, p in points.items()})


def evaluate(run: PublishedRun, precision: str, fused: bool, constants: dict, extra: bool,
             tensors: str = "meta") -> dict:
    """Everything about one model; never raises (a failure is recorded with its reason)."""
    import torch

    from benchmarks.published.recipe import attention_path, benchmark_step, parameter_count

    torch.set_num_threads(1)
    started = time.perf_counter()
    record: dict = {"model": run.model, "family": family_of(run.model), "half": half_of(run.model),
                    "published_batch": run.batch, "next_batch": run.next_batch, "image_size": run.image_size,
                    "param_count_csv_m": run.param_count_millions}
    try:
        step = benchmark_step(run.model, precision, fused, tensors=tensors)
    except Exception as error:  # today's timm cannot build it (renamed, removed, needs weights...)
        return {**record, "error": f"build: {type(error).__name__}: {str(error).splitlines()[0][:200]}"}
    built = parameter_count(step.model)
    record["param_count_built_m"] = round(built / 1e6, 3)
    record["attention"] = attention_path(step.model)
    if not params_match(run.param_count_millions, built):
        return {**record, "error": "param_count differs from the CSV"}
    try:
        counters = step_counters()  # the published batch's step also gives the time (issue 11)
        points = {run.batch: measure(run, run.batch, step, counters)}
        points[run.next_batch] = measure(run, run.next_batch, step)
        predicted = walk(run, points, step, constants) if extra else None
    except Exception as error:
        return {**record, "error": f"step: {type(error).__name__}: {str(error).splitlines()[0][:200]}"}
    at, above = points[run.batch], points[run.next_batch]
    costs = counted(*counters)
    return {**record, "points": [points[b] for b in sorted(points)], "predicted_batch": predicted,
            "peak_at_published_bytes": card_need(at, "caching", constants),
            "peak_at_next_bytes": card_need(above, "caching", constants),
            "published_samples_per_sec": run.samples_per_sec,
            "predicted_samples_per_sec": round(predicted_samples_per_sec(costs["costs"], run.batch), 2),
            "op_costs": costs["costs"], "torch_flops": costs["torch_flops"],
            "seconds": round(time.perf_counter() - started, 2)}


def _evaluate_star(args: tuple) -> dict:
    warnings.filterwarnings("ignore")
    return evaluate(*args)


def brackets(records: Sequence[dict], device: str) -> list[BracketPeaks]:
    def variable(point: dict) -> int:
        return point[DEVICES[device]]

    out = []
    for record in records:
        points = {p["batch"]: p for p in record["points"]}
        out.append(BracketPeaks(variable(points[record["published_batch"]]), variable(points[record["next_batch"]])))
    return out


def fitted_constants(records: Sequence[dict]) -> dict:
    calibration = [r for r in records if r["half"] == "calibration"]
    constants = {}
    for device in DEVICES:
        fit = fit_overhead(brackets(calibration, device), factors=FLAT_FACTORS if device == "flat" else (1.0,))
        constants[device] = {"overhead": fit.overhead_bytes, "factor": fit.factor}
    return constants


def rates_table(records: Sequence[dict], constants: dict, device: str) -> dict[str, Rates]:
    """Rates per half from the bracket points alone."""
    table = {}
    for half in ("calibration", "held_out"):
        chosen = [r for r in records if r["half"] == half]
        fitted = constants[device]
        table[half] = Rates.of(outcomes(brackets(chosen, device), fitted["overhead"], fitted["factor"]))
    return table


def report(records: Sequence[dict], constants: dict, seconds: float | None = None) -> None:
    measured = [r for r in records if "points" in r]
    failed = [r for r in records if "error" in r]
    print(f"\n{len(records)} models, {len(measured)} measured, {len(failed)} left out"
          + (f", {seconds:.0f} s" if seconds is not None else ""))
    print("constants: " + "; ".join(f"{d} {describe(constants[d])}" for d in DEVICES))
    for device in DEVICES:
        for half, rates in rates_table(measured, constants, device).items():
            print(f"  {device:8s} {half:12s} {rates.row()}")
    fitted = constants["caching"]
    for half in ("calibration", "held_out"):
        chosen = [r for r in measured if r["half"] == half]
        results = outcomes(brackets(chosen, "caching"), fitted["overhead"], fitted["factor"])
        print(f"\nper family, {half} (caching allocator model):")
        for family, rates in rates_by([r["family"] for r in chosen], results).items():
            print(f"  {family:16s} {rates.row()}")
        misses = [(r, res) for r, res in zip(chosen, results, strict=True) if res != "exact"]
        for record, result in misses:
            at, above = (card_need(_point(record, key), "caching", constants) / GIB
                         for key in ("published_batch", "next_batch"))
            print(f"  miss {result:8s} {record['model']}: published {record['published_batch']}, predicted "
                  f"{record.get('predicted_batch')} ({at:.2f} / {above:.2f} GiB)")
    if failed:
        print("\nleft out:")
        for record in failed:
            print(f"  {record['model']}: {record['error']}")


def _point(record: dict, key: str) -> dict:
    """The measured point at the record's ``published_batch`` or ``next_batch``."""
    return next(point for point in record["points"] if point["batch"] == record[key])


def describe(fitted: dict) -> str:
    factor = f"{fitted['factor']:.2f} × " if fitted["factor"] != 1.0 else ""
    return f"{factor}peak + {fitted['overhead'] / 2**20:.0f} MiB"


def ablation(paths: Sequence[Path]) -> None:
    """Held-out rates per precision (one saved run each) × device model, each refitted on its calibration half."""
    runs = {path: [r for r in json.loads(path.read_text()) if "points" in r] for path in paths}
    common = set.intersection(*({r["model"] for r in records} for records in runs.values()))
    print(f"models measured by every run: {len(common)} (each run refitted on their calibration half)")
    print("precision    device   constants                          held-out: n, exact, unsafe, cautious")
    for path in paths:
        records = [r for r in runs[path] if r["model"] in common]
        constants = fitted_constants(records)
        precision = records[0].get("precision", path.stem)
        for device in DEVICES:
            held = rates_table(records, constants, device)["held_out"]
            print(f"{precision:12s} {device:8s} {describe(constants[device]):34s} {held.row()}")


def time_report(records: Sequence[dict], output: Path | None = None) -> dict:
    """Step-time error on the held-out half from the op costs a saved run recorded (issue 11).

    The five time constants are refitted on the calibration half of these models (and the product's
    defaults judged beside them); the naive FLOP baseline is fitted the same way.
    """
    from benchmarks.published.steptime import evaluate_published, markdown_table, read_published
    from planner.probe.steptime import DEFAULT_CONSTANTS

    cache = {r["model"]: {"costs": r["op_costs"], "torch_flops": r["torch_flops"]} for r in records if "op_costs" in r}
    rows = [row for row in read_published() if row.model in cache]
    result = evaluate_published(rows, cache)
    defaults = evaluate_published(rows, cache, constants=DEFAULT_CONSTANTS)
    result["held_out_with_default_constants"] = defaults["held_out"]
    result["default_constants"] = DEFAULT_CONSTANTS.to_dict()
    print(f"\ntime: {len(rows)} models with op costs; constants refitted on their calibration half: "
          f"{result['constants']} (naive FLOP efficiency {result['naive_flop_efficiency']})")
    print("held-out half:\n" + markdown_table(result["held_out"]))
    print("held-out half by class:\n" + markdown_table(result["held_out_by_class"]))
    print("held-out half, the product's default constants:\n" + markdown_table(defaults["held_out"]))
    print("calibration half:\n" + markdown_table(result["calibration"]))
    if output is not None:
        atomic_write_text(output, json.dumps(result, indent=1) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", help="only these models (default: every bracketed one)")
    parser.add_argument("--json", type=Path, help="write one object per model to this file")
    parser.add_argument("--precision", choices=PRECISIONS, default="cuda_fp16")
    parser.add_argument("--tensors", choices=TENSORS, default="meta",
                        help="meta tensors (the core's) or torch's fake tensors (its first version)")
    parser.add_argument("--fused-attention", action="store_true",
                        help="today's timm default (fused attention) instead of the 2022 recipe's explicit one")
    parser.add_argument("--fit", action="store_true", help="refit the device model on the calibration half")
    parser.add_argument("--brackets-only", action="store_true",
                        help="measure the two bracket batches only (the rates need nothing else; no predicted batch)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--every", type=int, default=1, help="every Nth bracketed model only (a sample)")
    parser.add_argument("--resume", type=Path, help="keep the models this saved run measured; measure the rest")
    parser.add_argument("--report", type=Path, nargs="+",
                        help="print the ablation table from saved runs, and the time table from the first")
    parser.add_argument("--time-json", type=Path, help="with --report: write the time table here")
    args = parser.parse_args(argv)
    if args.report:
        ablation(args.report)
        time_report(json.loads(args.report[0].read_text()), args.time_json)
        return 0
    runs = [r for r in load_runs() if r.bracketed][::args.every]
    if args.models:
        known = {r.model: r for r in load_runs()}
        unknown = [m for m in args.models if m not in known or not known[m].bracketed]
        if unknown:
            print(f"error: not a bracketed model of the published file: {', '.join(unknown)}", file=sys.stderr)
            return 2
        runs = [known[m] for m in args.models]
    constants = {"caching": {"overhead": CALIBRATED_OVERHEAD_BYTES, "factor": 1.0},
                 "reserved": {"overhead": CALIBRATED_OVERHEAD_BYTES, "factor": 1.0},
                 "flat": {"overhead": CALIBRATED_FLAT_OVERHEAD_BYTES, "factor": CALIBRATED_FLAT_FACTOR}}
    started = time.perf_counter()
    records: list[dict] = []
    if args.resume:
        names = {run.model for run in runs}
        records = [r for r in json.loads(args.resume.read_text()) if "points" in r and r["model"] in names]
    done, resumed = {r["model"] for r in records}, len(records)
    work = [(run, args.precision, args.fused_attention, constants, not (args.fit or args.brackets_only), args.tensors)
            for run in sorted(runs, key=lambda run: hashlib.sha256(run.model.encode()).hexdigest())
            if run.model not in done]  # in hash order: a run stopped early has measured a fair sample

    def keep(record: dict) -> None:
        record["precision"], record["fused_attention"], record["tensors"] = args.precision, args.fused_attention, \
            args.tensors
        records.append(_progress(record, len(records) - resumed, len(work)))
        if args.json and len(records) % 10 == 0:  # a run stopped early keeps what it measured (--resume)
            atomic_write_text(args.json, json.dumps(records, indent=1))

    if args.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(args.jobs, maxtasksperchild=20) as pool:
            for record in pool.imap_unordered(_evaluate_star, work):
                keep(record)
    else:
        warnings.filterwarnings("ignore")
        for item in work:
            keep(evaluate(*item))
    if args.fit:
        constants = fitted_constants([r for r in records if "points" in r])
        print(f"fitted on the calibration half: {constants}")
        by_name = {run.model: run for run in runs}
        if not args.brackets_only:
            records = [_rewalk(r, by_name[r["model"]], args, constants) if "points" in r else r for r in records]
    order = {run.model: i for i, run in enumerate(runs)}
    records.sort(key=lambda r: order[r["model"]])
    seconds = time.perf_counter() - started
    report(records, constants, seconds)
    if args.json:
        atomic_write_text(args.json, json.dumps(records, indent=1))
        summary = {"constants": constants, "seconds": round(seconds, 1), "jobs": args.jobs, "cpus": os.cpu_count(),
                   "precision": args.precision, "fused_attention": args.fused_attention, "tensors": args.tensors,
                   "decay_sequence": list(DECAY_SEQUENCE)}
        atomic_write_text(args.json.with_name(args.json.stem + "_summary.json"), json.dumps(summary, indent=1))
    return 0


def _rewalk(record: dict, run: PublishedRun, args: argparse.Namespace, constants: dict) -> dict:
    """With refitted constants, the predicted batch (more steps only where the bracket is missed)."""
    points = {p["batch"]: p for p in record["points"]}
    fits = {b: card_need(p, "caching", constants) <= CARD_BYTES for b, p in points.items()}
    if fits[run.batch] and not fits[run.next_batch]:
        predicted = run.batch
    else:
        from benchmarks.published.recipe import benchmark_step

        step = benchmark_step(run.model, args.precision, args.fused_attention, tensors=args.tensors)
        predicted = walk(run, points, step, constants)
    return {**record, "points": [points[b] for b in sorted(points)], "predicted_batch": predicted,
            "peak_at_published_bytes": card_need(points[run.batch], "caching", constants),
            "peak_at_next_bytes": card_need(points[run.next_batch], "caching", constants)}


def _progress(record: dict, done: int, total: int) -> dict:
    state = record.get("error") or (f"published {record['published_batch']}, predicted {record.get('predicted_batch')}"
                                    f" ({record['seconds']:.1f} s)")
    print(f"[{done + 1}/{total}] {record['model']}: {state}", flush=True)
    return record


if __name__ == "__main__":
    sys.exit(main())
