"""The step-time model on a second card: predictions for an H100 against this project's H100 session.

Truth (``benchmarks/results/gpu_h100/``, one NVIDIA H100 80GB HBM3, torch 2.11):

1. ``published.json``: timm's published recipe (SGD Nesterov, fp16 autocast, explicit attention, own
   1000-class head) at the published batch for a sample of models, samples per second;
2. ``plan_cuda_16G.json``: the cuda meter's timed probe steps of the reference entries (fastai
   training micro-batches with ``to_fp16``, GradScaler, batch transforms on the GPU, an optimizer
   step after every micro-batch), median seconds per batch at each probed micro-batch.

Predictions use the GPU table's H100 row and planner's default constants (fitted on the RTX 3090
calibration half only): for (1) the published fake step of ``benchmarks/published/steptime.py``; for (2) the
estimate meter's fake step of the same entry at the same micro-batch (forward/backward + optimizer
step), the slower of the card's work and the host's (``planner.probe.hosttime``, this machine's
benchmark). ``results/h100_time_check.json`` is from before the host model;
``benchmarks.gpu.host_time_fit`` holds the product check before and after it. Run:
``python -m benchmarks.gpu.time_vs_gpu`` (writes ``benchmarks/results/h100_time_check.json``).
"""

from __future__ import annotations

import json
import statistics

from benchmarks.paths import RESULTS
from benchmarks.published.steptime import PublishedRow, count_published_step, read_cache, read_published
from planner.base.entries import EntrySpec
from planner.base.gpus import get_gpu
from planner.base.plan import ItemTransform
from planner.probe.hostbench import this_host
from planner.probe.hosttime import host_step_times
from planner.probe.steptime import DEFAULT_CONSTANTS, StepCosts, step_seconds

TRUTH = RESULTS / "gpu_h100"
OUT = RESULTS / "h100_time_check.json"


def published_check(gpu_name: str = "H100") -> list[dict]:
    """Predicted against measured samples per second for the published recipe on the H100."""
    gpu = get_gpu(gpu_name)
    rows = {row.model: row for row in read_published()}
    cache = read_cache()
    results = []
    for model in json.loads((TRUTH / "published.json").read_text())["models"]:
        row: PublishedRow = rows[model["model"]]
        run = next(r for r in model["runs"] if r["batch"] == row.batch and r.get("attention_path") != "fused")
        record = cache.get(row.model) or count_published_step(row)
        if "costs" not in record:
            continue
        predicted = row.batch / step_seconds(StepCosts.from_list(record["costs"]), gpu, DEFAULT_CONSTANTS)
        results.append({"model": row.model, "batch": row.batch,
                        "measured_samples_per_sec": round(run["samples_per_sec"], 1),
                        "predicted_samples_per_sec": round(predicted, 1),
                        "ratio": round(predicted / run["samples_per_sec"], 3)})
    return results


def product_check(gpu_name: str = "H100") -> list[dict]:
    """Predicted against measured seconds per fastai micro-batch (cuda meter probes) on the H100."""
    from planner.probe.meters import get_meter

    plan = json.loads((TRUTH / "plan_cuda_16G.json").read_text())
    meter = get_meter("estimate", gpu=get_gpu(gpu_name))
    results = []
    for entry in plan["entries"]:
        spec = EntrySpec(name=entry["name"], arch=entry["arch"], item=ItemTransform(**entry["item"]),
                         size=tuple(entry["size"]))
        for probe in entry["probes"]:
            if probe.get("step_seconds") is None:
                continue
            point = meter.measure(spec, probe["micro_batch"])
            host = host_step_times(point.host_work, this_host(), gpu_name)
            predicted = max(point.predicted_times.forward_backward + point.predicted_times.optimizer_step,
                            host.forward_backward + host.optimizer_step)
            results.append({"entry": entry["name"], "micro_batch": probe["micro_batch"],
                            "measured_step_seconds": round(probe["step_seconds"], 4),
                            "predicted_step_seconds": round(predicted, 4),
                            "ratio": round(predicted / probe["step_seconds"], 3)})
    meter.close()
    return results


def summary(results: list[dict]) -> dict:
    errors = [abs(result["ratio"] - 1) for result in results]
    return {"n": len(errors), "median_abs_error": round(statistics.median(errors), 3),
            "max_abs_error": round(max(errors), 3)} if errors else {"n": 0}


def main() -> None:
    published = published_check()
    product = product_check()
    result = {"gpu": "H100 (NVIDIA H100 80GB HBM3)", "constants": DEFAULT_CONSTANTS.to_dict(),
              "published": {"summary": summary(published), "models": published},
              "product": {"summary": summary(product),
                          "at_planned_micro_batch": summary([r for r in product if r["micro_batch"] >= 16]),
                          "probes": product}}
    OUT.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({key: result[key]["summary"] for key in ("published", "product")}, indent=1))
    for line in published + product:
        print(line)


if __name__ == "__main__":
    main()
