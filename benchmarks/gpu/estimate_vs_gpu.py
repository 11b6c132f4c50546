"""The device-free estimate beside peaks measured on a real GPU, point by point.

Two kinds of measured file (``benchmarks/results/gpu_h100/``, from the GPU session):
- a plan written by the cuda meter (``plan_cuda_16G.json``): for every probe of every entry, the
  estimate meter's peak at the same micro-batch (the product: fastai recipe, fp16, fused attention
  where timm uses it) beside the measured one (reserved peak + non-torch bytes);
- ``published.json`` (timm's 2022 recipe reproduced on today's stack: ``zero_grad`` frees the
  gradients, backward after the autocast block): the core's allocated and reserved peaks for the
  same model, batch and attention path, beside the measured ones.

    python -m benchmarks.gpu.estimate_vs_gpu --plan benchmarks/results/gpu_h100/plan_cuda_16G.json \\
        --published benchmarks/results/gpu_h100/published.json --json benchmarks/results/estimate_vs_h100.json
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

GIB = 2**30


def plan_rows(path: Path) -> list[dict]:
    from planner.base.entries import EntrySpec
    from planner.base.plan import load_plan
    from planner.probe.meters import get_meter

    plan = load_plan(path)
    meter = get_meter("estimate")
    rows = []
    for entry in plan.entries:
        spec = EntrySpec(name=entry.name, arch=entry.arch, item=entry.item, size=entry.size)
        for probe in entry.probes:
            if probe.peak_bytes is None:
                continue
            estimate = meter.measure(spec, probe.micro_batch).peak_bytes
            rows.append({"entry": entry.name, "micro_batch": probe.micro_batch, "measured_bytes": probe.peak_bytes,
                         "estimate_bytes": estimate, "error": round(estimate / probe.peak_bytes - 1, 4)})
            print(f"{entry.name:48s} {probe.micro_batch:3d}  measured {probe.peak_bytes / GIB:6.2f} GiB  "
                  f"estimate {estimate / GIB:6.2f} GiB  {estimate / probe.peak_bytes - 1:+.1%}", flush=True)
    meter.close()
    return rows


def published_rows(path: Path) -> list[dict]:
    from benchmarks.published.recipe import benchmark_step
    from planner.probe.meters.allocator import steady_state_peaks

    rows = []
    for model in json.loads(path.read_text())["models"]:
        for fused in (False, True):
            runs = [r for r in model["runs"] if not r.get("oom") and
                    (r["attention_path"] == ("fused" if fused else "explicit") or
                     (r["attention_path"] is None and not fused))]
            if not runs:
                continue
            step = benchmark_step(model["model"], fused_attention=fused, torch2_loop=True)
            for run in runs:
                trace = step.run(run["batch"], (model["img_size"], model["img_size"]))
                peaks = steady_state_peaks(list(trace.setup), list(trace.step))
                row = {"model": model["model"], "batch": run["batch"], "attention": run["attention_path"],
                       "measured_allocated": run["allocated_peak_bytes"], "estimate_allocated": peaks.allocated,
                       "measured_reserved": run["reserved_peak_bytes"], "estimate_reserved": peaks.reserved,
                       "estimate_active": peaks.active, "non_torch_bytes": run["non_torch_bytes"]}
                rows.append(row)
                print(f"{model['model']:34s} {run['batch']:4d} {run['attention_path'] or '-':8s} allocated "
                      f"{run['allocated_peak_bytes'] / GIB:6.2f} vs {peaks.allocated / GIB:6.2f} "
                      f"({peaks.allocated / run['allocated_peak_bytes'] - 1:+.1%}); reserved "
                      f"{run['reserved_peak_bytes'] / GIB:6.2f} vs {peaks.reserved / GIB:6.2f} "
                      f"({peaks.reserved / run['reserved_peak_bytes'] - 1:+.1%}), active {peaks.active / GIB:6.2f}",
                      flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path)
    parser.add_argument("--published", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    result = {}
    if args.published:
        result["published"] = published_rows(args.published)
    if args.plan:
        result["plan"] = plan_rows(args.plan)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
