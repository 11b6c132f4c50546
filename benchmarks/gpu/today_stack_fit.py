"""Today's stack's device model, fitted on the H100 session's points; a calibration example; the guard's table.

Steps (each writes its output; later steps read the earlier ones' files):

``--pairs``: the H100 session's measurements (``benchmarks/results/gpu_h100/``) as calibration pairs
(``planner.probe.meters.calibration.Pair``): the published recipe's 16 points (``published.json``,
replay peaks of the same fake step from ``benchmarks/results/estimate_vs_h100.json``), and the cuda
meter's probe points of the product plan (``plan_cuda_16G.json``; the estimate meter replays each
here, a few minutes on 2 cores). Writes ``pairs_published.jsonl`` and ``pairs_plan.jsonl`` there.

``--fit``: today's constants fitted on the calibration half of the published-recipe pairs (models
split by the published check's stable hash), judged on the held-out half per family, beside the
2022 constants on the same points and beside the published brackets' table (2022's model, unchanged,
and today's constants on the same brackets); then a calibration example on the product plan's pairs:
pairs of two architectures in, constants out (guarded: only raised), the other two
architectures' error before and after; both ways round.
Writes ``benchmarks/results/today_stack_fit.json``.

``--today FILE``: after a GPU session, ``gpu_today_stack.json`` (``benchmarks/gpu/today_stack.py``) as
pairs (each point that trained, ``cudnn.benchmark`` on, with the fake step's replay of the published
recipe as today's torch runs it), written beside it as ``pairs_today.jsonl``; then today's constants
refitted on the calibration half and judged on the held-out half per family, the brackets as they
hold on today's stack (the published batch fits the capped card, the next runs out of memory), and
cuDNN's benchmark mode: reserved bytes with it on over off, per family. Writes ``today_stack.json``
beside it.

``--brackets``: the published brackets' replay peaks shipped for the calibration guard
(``planner/probe/meters/published_brackets.json``) from ``benchmarks/results/published_gpu.json``.

    python -m benchmarks.gpu.today_stack_fit --pairs --fit
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from benchmarks.paths import RESULTS
from benchmarks.published.runs import CARD_BYTES

H100 = RESULTS / "gpu_h100"
GIB = 2**30
EXAMPLE_FIT = ("convnext_large.fb_in22k", "vit_large_patch16_224")
"""The first calibration example's architectures whose pairs go in (the other two are the next plan);
the second example swaps them."""


def h100_stack():
    from planner.probe.meters.calibration import stack_of

    published = json.loads((H100 / "published.json").read_text())
    return stack_of(published["gpu"], published["torch"], "", driver="580.159.04", cudnn=published["cudnn"])


def published_pairs() -> list:
    """The published recipe's points (allocator replay from estimate_vs_h100.json, measured card bytes =
    reserved peak + non-torch bytes). The fused-attention points carry ``+fused`` in their name."""
    from planner.probe.meters.calibration import Pair

    sizes = {m["model"]: m["img_size"] for m in json.loads((H100 / "published.json").read_text())["models"]}
    rows = json.loads((RESULTS / "estimate_vs_h100.json").read_text())["published"]
    stack = h100_stack()
    return [Pair(stack, row["model"] + ("+fused" if row["attention"] == "fused" else ""),
                 (sizes[row["model"]], sizes[row["model"]]), False, row["batch"],
                 {"allocated": row["estimate_allocated"], "active": row["estimate_active"],
                  "reserved": row["estimate_reserved"]},
                 row["measured_reserved"] + row["non_torch_bytes"], "published recipe") for row in rows]


def plan_pairs() -> list:
    """The cuda meter's probe points of the product plan, each with the estimate meter's replay."""
    from planner.base.entries import EntrySpec
    from planner.base.plan import load_plan
    from planner.probe.meters import get_meter
    from planner.probe.meters.calibration import Pair

    plan = load_plan(H100 / "plan_cuda_16G.json")
    meter = get_meter("estimate")
    stack, pairs = h100_stack(), []
    for entry in plan.entries:
        spec = EntrySpec(name=entry.name, arch=entry.arch, item=entry.item, size=entry.size)
        for probe in entry.probes:
            if probe.peak_bytes is None:
                continue
            replay = meter.replay_peaks(spec, probe.micro_batch)
            pairs.append(Pair(stack, entry.arch, entry.size, False, probe.micro_batch, replay, probe.peak_bytes,
                              "cuda probe"))
            print(f"{entry.arch:34s} {probe.micro_batch:3d} measured {probe.peak_bytes / GIB:6.2f} GiB, replay "
                  f"reserved {replay['reserved'] / GIB:6.2f} GiB", flush=True)
    meter.close()
    return pairs


def write_pairs(path: Path, pairs: list) -> None:
    path.write_text("".join(json.dumps(pair.to_dict(), sort_keys=True) + "\n" for pair in pairs))
    print(f"{len(pairs)} pairs -> {path}")


def errors_row(device, pairs) -> dict:
    from planner.probe.meters.calibration import Errors

    errors = Errors.of(device, pairs)
    return {"n": errors.count, "median_abs": round(errors.median, 4), "worst_under": round(errors.worst_under, 4),
            "worst_over": round(errors.worst_over, 4), "within_5pct": round(errors.within_5, 3),
            "under_3pct": round(errors.under_3, 3)}


def point_rows(device, pairs) -> list[dict]:
    from planner.probe.meters.calibration import estimate_bytes

    return [{"arch": p.arch, "micro_batch": p.micro_batch, "measured_gib": round(p.measured_bytes / GIB, 2),
             "estimate_gib": round(estimate_bytes(device, p) / GIB, 2),
             "error": round(estimate_bytes(device, p) / p.measured_bytes - 1, 4)} for p in pairs]


def bracket_table(device, brackets, card_bytes: int) -> dict:
    from benchmarks.published.runs import Rates, bracket_outcome, half_of

    base = {"caching": "active", "reserved": "reserved", "flat": "allocated"}[device.allocator]
    table = {}
    for half in ("calibration", "held_out"):
        outcomes = [bracket_outcome(device.card_bytes(b.at_published[base]) <= card_bytes,
                                    device.card_bytes(b.at_next[base]) <= card_bytes)
                    for b in brackets if half_of(b.model) == half]
        rates = Rates.of(outcomes)
        table[half] = {"n": rates.total, "exact": round(rates.percent(rates.exact), 1),
                       "unsafe": round(rates.percent(rates.unsafe), 1),
                       "cautious": round(rates.percent(rates.cautious), 1)}
    return table


def fit(out: Path) -> None:
    from dataclasses import asdict

    from benchmarks.published.runs import family_of, half_of
    from planner.probe.meters.brackets import load_brackets
    from planner.probe.meters.calibration import calibrate, fit_constants, guard, load_pairs
    from planner.probe.meters.stacks import PUBLISHED_2022, TODAY

    published = load_pairs(H100 / "pairs_published.jsonl")
    model_of = {p.arch: p.arch.removesuffix("+fused") for p in published}
    calibration = [p for p in published if half_of(model_of[p.arch]) == "calibration"]
    held_out = [p for p in published if half_of(model_of[p.arch]) == "held_out"]
    fitted = {replay: fit_constants(calibration, replay) for replay in ("reserved", "caching", "flat")}
    result: dict = {"stack": h100_stack().to_dict(),
                    "calibration_models": sorted({model_of[p.arch] for p in calibration}),
                    "held_out_models": sorted({model_of[p.arch] for p in held_out}),
                    "fitted": {replay: asdict(device) for replay, device in fitted.items()},
                    "product_today": asdict(TODAY.device), "published_2022": asdict(PUBLISHED_2022.device)}
    table = {}
    for name, device in [("today (product)", TODAY.device), *((f"refit {r}", d) for r, d in fitted.items()),
                         ("2022 (active + 1,744 MiB)", PUBLISHED_2022.device)]:
        families = sorted({family_of(model_of[p.arch]) for p in held_out})
        table[name] = {"held_out": errors_row(device, held_out), "calibration": errors_row(device, calibration),
                       **{f"held_out {family}": errors_row(device, [p for p in held_out
                                                                    if family_of(model_of[p.arch]) == family])
                          for family in families}}
    result["today_table"] = table
    result["points_today"] = point_rows(TODAY.device, published)
    result["points_2022"] = point_rows(PUBLISHED_2022.device, published)
    brackets, card = load_brackets()
    result["published_brackets"] = {
        "2022 model (the published check's)": bracket_table(PUBLISHED_2022.device, brackets, card),
        "today's model on the same brackets": bracket_table(TODAY.device, brackets, card)}
    plan = load_pairs(H100 / "pairs_plan.jsonl")
    result["calibration_examples"] = []
    for fitted_archs in (EXAMPLE_FIT, tuple(sorted({p.arch for p in plan} - set(EXAMPLE_FIT)))):
        given = [p for p in plan if p.arch in fitted_archs]
        following = [p for p in plan if p.arch not in fitted_archs]
        calibrated = calibrate(given, brackets, card)[0]
        unguarded = fit_constants(given)
        result["calibration_examples"].append({
            "unguarded_constants": asdict(unguarded),
            "unguarded_verdict": guard(unguarded, calibrated.before.device, brackets, card),
            "unguarded_next_plan_error": errors_row(unguarded, following),
            "pairs_in": len(given), "architectures_in": list(fitted_archs),
            "constants_before": asdict(calibrated.before.device), "constants_out": asdict(calibrated.device),
            "held_back": calibrated.held_back,
            "pairs_error_before": errors_row(calibrated.before.device, given),
            "pairs_error_after": errors_row(calibrated.device, given),
            "next_plan_before": point_rows(calibrated.before.device, following),
            "next_plan_after": point_rows(calibrated.device, following),
            "next_plan_error_before": errors_row(calibrated.before.device, following),
            "next_plan_error_after": errors_row(calibrated.device, following)})
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("points")}, indent=1))


def today_pairs(path: Path) -> list:
    """Pairs of a today's-stack session: the points that trained with ``cudnn.benchmark`` on."""
    from benchmarks.published.recipe import benchmark_step
    from planner.probe.meters.allocator import steady_state_peaks
    from planner.probe.meters.calibration import Pair, stack_of

    session = json.loads(path.read_text())
    pairs = []
    for record in session["models"]:
        points = [p for p in record.get("points", []) if p["cudnn_benchmark"] and not p["oom"]
                  and p["reserved_peak_bytes"] > 0]
        if not points:
            continue
        stack = stack_of(session.get("gpu"), session["torch"], record.get("allocator") or "",
                         driver=session.get("driver"), cudnn=session.get("cudnn"))
        step = benchmark_step(record["model"], torch2_loop=True)
        size = (record["image_size"], record["image_size"])
        for point in points:
            trace = step.run(point["batch"], size)
            peaks = steady_state_peaks(list(trace.setup), list(trace.step))
            pairs.append(Pair(stack, record["model"], size, False, point["batch"],
                              {"allocated": peaks.allocated, "active": peaks.active, "reserved": peaks.reserved},
                              point["reserved_peak_bytes"] + point["non_torch_bytes"], "published recipe"))
            print(f"{record['model']:34s} {point['batch']:4d} measured {pairs[-1].measured_bytes / GIB:6.2f} GiB, "
                  f"replay reserved {peaks.reserved / GIB:6.2f} GiB", flush=True)
    return pairs


def today_report(path: Path, pairs: list) -> dict:
    """Today's constants refitted on the calibration half, the held-out table per family, the brackets as
    they hold today, and cuDNN's benchmark mode on over off."""
    from dataclasses import asdict

    from benchmarks.published.runs import family_of, half_of
    from planner.probe.meters.calibration import fit_constants
    from planner.probe.meters.stacks import TODAY

    session = json.loads(path.read_text())
    calibration = [p for p in pairs if half_of(p.arch) == "calibration"]
    held_out = [p for p in pairs if half_of(p.arch) == "held_out"]
    report: dict = {"pairs": len(pairs), "calibration": len(calibration), "held_out": len(held_out)}
    if calibration:
        refit = fit_constants(calibration)
        report["refit"] = asdict(refit)
        families = sorted({family_of(p.arch) for p in held_out})
        report["table"] = {name: {"held_out": errors_row(device, held_out),
                                  **{family: errors_row(device, [p for p in held_out if family_of(p.arch) == family])
                                     for family in families}}
                           for name, device in (("today (built in)", TODAY.device), ("refit", refit))}
    holds = {}
    benchmark: dict[str, list[float]] = {}
    for record in session["models"]:
        points = {(p["batch"], p["cudnn_benchmark"]): p for p in record.get("points", [])}
        at, above = points.get((record["published_batch"], True)), points.get((record["next_batch"], True))
        if at and above:
            holds[record["model"]] = "holds" if not at["oom"] and above["oom"] else (
                "published batch runs out of memory" if at["oom"] else "next batch fits")
        off = points.get((record["published_batch"], False))
        if at and off and not at["oom"] and not off["oom"] and off["reserved_peak_bytes"]:
            benchmark.setdefault(family_of(record["model"]), []).append(
                at["reserved_peak_bytes"] / off["reserved_peak_bytes"])
    report["brackets_today"] = holds
    report["benchmark_on_over_off"] = {family: {"n": len(ratios), "min": round(min(ratios), 3),
                                                "max": round(max(ratios), 3)} for family, ratios in benchmark.items()}
    return report


def compact_brackets(records: list[dict]) -> dict:
    """The table planner ships for the calibration guard (``planner/probe/meters/published_brackets.json``),
    from the published check's records: the replay peaks of every model measured at both bracket batches."""
    from planner.probe.meters.brackets import PEAKS

    rows = []
    for record in records:
        points = {point["batch"]: point for point in record.get("points", [])}
        if record["published_batch"] in points and record.get("next_batch") in points:
            rows.append([record["model"], *(points[record["published_batch"]][name] for name in PEAKS),
                         *(points[record["next_batch"]][name] for name in PEAKS)])
    return {"version": 1, "card_bytes": CARD_BYTES, "peaks": list(PEAKS), "brackets": sorted(rows)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", action="store_true")
    parser.add_argument("--fit", action="store_true")
    parser.add_argument("--brackets", action="store_true")
    parser.add_argument("--today", type=Path, metavar="FILE", help="gpu_today_stack.json of a GPU session")
    parser.add_argument("--json", type=Path, default=RESULTS / "today_stack_fit.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.brackets:
        from planner.probe.meters.brackets import BRACKETS_FILE

        records = json.loads((RESULTS / "published_gpu.json").read_text())
        BRACKETS_FILE.write_text(json.dumps(compact_brackets(records), separators=(",", ":")) + "\n")
    if args.pairs:
        write_pairs(H100 / "pairs_published.jsonl", published_pairs())
        write_pairs(H100 / "pairs_plan.jsonl", plan_pairs())
    if args.fit:
        fit(args.json)
    if args.today:
        pairs = today_pairs(args.today)
        write_pairs(args.today.with_name("pairs_today.jsonl"), pairs)
        report = today_report(args.today, pairs)
        args.today.with_name("today_stack.json").write_text(json.dumps(report, indent=1) + "\n")
        print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
