"""Each meter's measured error against real runs: the evidence for the default margin.

A meter's error on one point is ``predicted / measured − 1`` (negative: it predicted too little);
the default margin covers its worst (``planner/probe/margins.py``, ``planner/base/margin.py``).

- ``cuda``: the H100 session's cuda-meter plan (``results/gpu_h100/plan_cuda_16G.json``) against
  `planner run` of its first entry under the same 16 GiB cap (``results/gpu_h100/gpu_run_check.json``),
  and every GPU session's rehearsed plans against their runs (``results/<card>/run_holds.json``,
  the product's allocator configuration) once one has run.
- ``estimate``: today's device model on the published recipe measured on the H100
  (``results/today_stack_fit.json``, every point: calibration and held out), and the estimate meter's
  prediction, computed here, for the H100 `planner run` above at the micro-batch it trained at.
- ``cpu``: `planner probe --device cpu` and then `planner run` of that plan on this machine (resnet18
  and convnext_atto, 32 px, micro-batch 16, frozen + 2 unfrozen epochs, validation, TTA), compared in
  live fp32 bytes as both meters count them.

Usage::

    python -m benchmarks.planning.margin_evidence [--out benchmarks/results/margin_evidence.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

from benchmarks.paths import RESULTS
from planner.base.entries import EntrySpec, reference_entries
from planner.base.margin import margin_covering
from tests.planner_process import run_planner
from tests.run_data import make_image_folder

H100 = RESULTS / "gpu_h100"
CPU_ARCHS = ("resnet18", "convnext_atto")


def point(what: str, predicted: float, measured: float) -> dict:
    return {"what": what, "predicted": predicted, "measured": measured, "error": round(predicted / measured - 1, 4)}


def cuda_points() -> list[dict]:
    plan = json.loads((H100 / "plan_cuda_16G.json").read_text())
    run = json.loads((H100 / "gpu_run_check.json").read_text())
    (entry,) = [entry for entry in plan["entries"] if entry["name"] == run["entry"]]
    assert entry["micro_batch"] == run["trained"]["micro_batch"], "the run trained another micro-batch"
    points = [point(f"{run['entry']} at {entry['micro_batch']}, H100, 16 GiB cap", entry["predicted_peak_bytes"],
                    run["measured_peak_bytes"])]
    for holds in sorted(RESULTS.glob("*/run_holds.json")):  # a GPU session's rehearsed plans and their runs
        points += [point(f"{row['entry']}, {holds.parent.name}", row["planned_peak_bytes"], row["run_peak_bytes"])
                   for row in json.loads(holds.read_text()) if row["product_default"] and row["run_peak_bytes"]]
    return points


def estimate_points() -> list[dict]:
    from planner.probe.meters import get_meter

    fit = json.loads((RESULTS / "today_stack_fit.json").read_text())
    points = [point(f"{p['arch']} at {p['micro_batch']}, published recipe, H100", p["estimate_gib"], p["measured_gib"])
              for p in fit["points_today"]]
    run = json.loads((H100 / "gpu_run_check.json").read_text())
    entry: EntrySpec = next(entry for entry in reference_entries() if entry.name == run["entry"])
    meter = get_meter("estimate")
    try:
        predicted = meter.measure(entry, run["trained"]["micro_batch"]).peak_bytes
    finally:
        meter.close()
    return [*points, point(f"planner run of {run['entry']} at {run['trained']['micro_batch']}, H100", predicted,
                           run["measured_peak_bytes"])]


def cpu_points() -> list[dict]:
    points = []
    with tempfile.TemporaryDirectory(prefix="margin_evidence_") as tmp:
        data = make_image_folder(Path(tmp) / "data", per_class=20)
        for arch in CPU_ARCHS:
            plan_path, out = Path(tmp) / f"{arch}.json", Path(tmp) / f"run_{arch}"
            probed = run_planner("probe", "--arch", arch, "--size", "32", "--gpu-mem", "4G", "--device", "cpu",
                                 "--effective-bs", "16", "--data", data, "-o", plan_path)
            assert probed.returncode == 0, probed.stderr
            ran = run_planner("run", plan_path, "--data", data, "--out", out, "--no-pretrained", "--epochs", "2",
                              "--device", "cpu")
            assert ran.returncode == 0, ran.stderr
            (planned,) = json.loads(plan_path.read_text())["entries"]
            (trained,) = json.loads((out / "run.json").read_text())["entries"].values()
            points.append(point(f"{arch} at {planned['micro_batch']}, 32 px, planner run on the CPU",
                                planned["predicted_peak_bytes"], trained["memory"]["peak_bytes"]))
    return points


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "margin_evidence.json")
    args = parser.parse_args(argv)
    meters = {"cuda": cuda_points(), "estimate": estimate_points(), "cpu": cpu_points()}
    result = {"machine": f"{platform.node()} ({platform.processor() or platform.machine()})", "meters": {}}
    for name, points in meters.items():
        worst = min(0.0, *(p["error"] for p in points))
        result["meters"][name] = {"points": points, "worst_under": worst, "margin": margin_covering(worst)}
        print(f"{name:9s} {len(points):3d} points, worst under {worst:+.1%} -> margin {margin_covering(worst):.0%}")
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
