"""The host's share of a fastai step: fit and held-out check on the fastai steps recorded on an H100.

Truth (``benchmarks/results/gpu_h100/``, one NVIDIA H100 80GB HBM3, torch 2.11, fastai 2.8.12):

1. ``plan_cuda_16G.json``: the cuda meter's timed probes of the six reference entries at micro-batch
   2/8/16/32 (fastai ``to_fp16``, GradScaler, fastai Adam stepping after every micro-batch). That
   probe stopped after two batches (fastai's optimizer state dict is filled when the optimizer is
   made, so "two batches with state" came at once) and left the first out: each value is ONE batch,
   the fit's second, whose optimizer step the GradScaler may have skipped.
2. ``gpu_check.json``: real micro-steps with ``GradientAccumulation(64)`` (an optimizer step every
   ``64 / micro_batch`` micro-batches), synchronised, the upper median of the batches after the
   first two; which batch that median is (with or without an optimizer step) follows from the count.

Each step is predicted from the estimate meter's own fake step at the same micro-batch: the card's work
(``planner.probe.steptime.device_seconds``, H100 row of the GPU table) and the host's
(``planner.probe.hosttime``: this machine's benchmark times two fitted factors), and a step takes the
slower of the two. "Before" is the model as it was (``step_seconds``: the card's roofline or 17 µs per
kernel launch, plus 20 ms per step). The factors are fitted by least Σ|log(predicted/measured)| on
both sources; held out: leave one entry out (six fits), and, stricter, leave one architecture out
(the two vit_large and the two swinv2_large entries are the same step). The H100 session's host CPU
was not recorded: the fit takes it as fast per core as the machine running this script.

Run: ``python -m benchmarks.gpu.host_time_fit`` (about a minute; writes ``benchmarks/results/host_time_fit.json``).
"""

from __future__ import annotations

import json
import statistics

import numpy as np
from scipy.optimize import minimize

from benchmarks.paths import RESULTS
from planner.base.compat import native_meta_kernels
from planner.base.entries import EntrySpec
from planner.base.gpus import get_gpu
from planner.base.plan import Host, HostWork, ItemTransform
from planner.probe.hostbench import measure_host
from planner.probe.hosttime import HostConstants, host_step_times
from planner.probe.meters.estimate import fastai_recipe
from planner.probe.meters.fake_step import FakeStep
from planner.probe.meters.opcount import OpCounter
from planner.probe.meters.phases import PHASE_FORWARD_BACKWARD, PHASE_STEP
from planner.probe.steptime import DEFAULT_CONSTANTS, StepCosts, device_seconds, step_seconds

TRUTH = RESULTS / "gpu_h100"
OUT = RESULTS / "host_time_fit.json"
GPU = get_gpu("H100")
EFFECTIVE_BATCH = 64
CHECK_SKIPPED_BATCHES = 2  # gpu_check.py leaves out the first two micro-steps


def truth() -> list[dict]:
    """Every recorded step: entry, micro-batch, measured seconds, and the share of an optimizer step in it."""
    plan = json.loads((TRUTH / "plan_cuda_16G.json").read_text())
    steps = [{"source": "probe", "entry": entry["name"], "arch": entry["arch"], "item": entry["item"],
              "size": entry["size"], "micro_batch": probe["micro_batch"], "measured": probe["step_seconds"],
              "optimizer_share": 1.0}
             for entry in plan["entries"] for probe in entry["probes"] if probe.get("step_seconds")]
    by_name = {entry["name"]: entry for entry in plan["entries"]}
    for entry in json.loads((TRUTH / "gpu_check.json").read_text())["entries"]:
        for run in entry.get("runs", []):
            if run.get("step_seconds_median") is None:
                continue
            accum = EFFECTIVE_BATCH // run["micro_batch"]
            timed = range(CHECK_SKIPPED_BATCHES, run["batches"])
            with_step = sum((i + 1) % accum == 0 for i in timed)  # GradientAccumulation steps every accum-th
            upper_median_steps = len(timed) - with_step <= len(timed) // 2  # sorted: the steps last
            planned = by_name[entry["entry"]]
            steps.append({"source": "gpu_check", "entry": entry["entry"], "arch": planned["arch"],
                          "item": planned["item"], "size": planned["size"], "micro_batch": run["micro_batch"],
                          "measured": run["step_seconds_median"], "optimizer_share": float(upper_median_steps)})
    return steps


def count(steps: list[dict]) -> None:
    """Add to each step what the fake step counts: the card's seconds (new and old model) and the host's work."""
    fakes: dict[str, FakeStep] = {}
    for step in steps:
        spec = EntrySpec(name=step["entry"], arch=step["arch"], item=ItemTransform(**step["item"]),
                         size=tuple(step["size"]))
        fake = fakes.get(spec.arch) or fakes.setdefault(spec.arch, FakeStep(fastai_recipe(spec, 10, "fp16")))
        counter = OpCounter()
        with native_meta_kernels():
            fake.run(step["micro_batch"], spec.size, modes=(counter,), on_phase=counter.set_phase)
        forward_backward, optimizer = (StepCosts.from_counter(counter, phase)
                                       for phase in (PHASE_FORWARD_BACKWARD, PHASE_STEP))
        share = step["optimizer_share"]
        step["device"] = device_seconds(forward_backward, GPU, DEFAULT_CONSTANTS) \
            + share * device_seconds(optimizer, GPU, DEFAULT_CONSTANTS)
        step["before"] = step_seconds(forward_backward, GPU, DEFAULT_CONSTANTS) \
            + share * step_seconds(optimizer, GPU, DEFAULT_CONSTANTS, per_step=False)
        step["work"] = HostWork(forward_backward_ops=counter.dispatches[PHASE_FORWARD_BACKWARD], eval_ops=0,
                                parameter_tensors=sum(p.requires_grad for p in fake.model.parameters())).to_dict()


def predict(steps: list[dict], host: Host, constants: HostConstants) -> np.ndarray:
    """Each step at the pace of the slower of the card and the host."""
    predicted = []
    for step in steps:
        times = host_step_times(HostWork(**step["work"]), host, GPU.name, constants)
        predicted.append(max(step["device"], times.forward_backward + step["optimizer_share"] * times.optimizer_step))
    return np.array(predicted)


def fit(steps: list[dict], host: Host, param_floor: float) -> HostConstants:
    """The factors minimising Σ|log(predicted / measured)|; the parameter factor at least ``param_floor``."""
    measured = np.array([step["measured"] for step in steps])
    bounds = [(np.log(0.1), np.log(100.0)), (np.log(max(param_floor, 1e-3)), np.log(100.0))]

    def loss(point: np.ndarray) -> float:
        constants = HostConstants(*np.exp(point).tolist())
        return float(np.abs(np.log(predict(steps, host, constants) / measured)).sum())

    starts = [np.log([op, max(param, param_floor)]) for op in (3.0, 10.0, 30.0) for param in (1.0, 5.0)]
    best = min((minimize(loss, start, method="Powell", bounds=bounds) for start in starts), key=lambda r: r.fun)
    return HostConstants(*(round(value, 3) for value in np.exp(best.x).tolist()))


def held_out(steps: list[dict], host: Host, key: str, param_floor: float) -> np.ndarray:
    """Each step predicted by factors fitted without its entry (or architecture: ``key``)."""
    predicted = np.zeros(len(steps))
    for group in sorted({step[key] for step in steps}):
        inside = [i for i, step in enumerate(steps) if step[key] == group]
        constants = fit([step for step in steps if step[key] != group], host, param_floor)
        predicted[inside] = predict([steps[i] for i in inside], host, constants)
    return predicted


def errors(predicted, steps: list[dict], source: str) -> dict:
    values = [abs(p / s["measured"] - 1) for p, s in zip(predicted, steps, strict=True) if s["source"] == source]
    return {"n": len(values), "median_abs_error": round(statistics.median(values), 3),
            "max_abs_error": round(max(values), 3)}


def main() -> None:
    host = measure_host()
    steps = truth()
    count(steps)
    before = np.array([step["before"] for step in steps])
    result = {"gpu": "H100 (NVIDIA H100 80GB HBM3), torch 2.11, fastai 2.8.12; host CPU not recorded",
              "benchmark_host": host.to_dict(), "fits": {}}
    for name, floor in (("parameter factor at least 1 (chosen)", 1.0), ("both factors free", 0.0)):
        constants = fit(steps, host, floor)
        entry_out = held_out(steps, host, "entry", floor)
        arch_out = held_out(steps, host, "arch", floor)
        result["fits"][name] = {
            "constants": vars(constants),
            "in_sample": {source: errors(predict(steps, host, constants), steps, source)
                          for source in ("probe", "gpu_check")},
            "leave_one_entry_out": {source: errors(entry_out, steps, source) for source in ("probe", "gpu_check")},
            "leave_one_architecture_out": {source: errors(arch_out, steps, source)
                                           for source in ("probe", "gpu_check")},
            "steps_held_out": [round(float(value), 4) for value in entry_out],
        }
    result["before"] = {source: errors(before, steps, source) for source in ("probe", "gpu_check")}
    chosen = result["fits"]["parameter factor at least 1 (chosen)"]
    result["steps"] = [{"source": step["source"], "entry": step["entry"], "micro_batch": step["micro_batch"],
                        "optimizer_share": step["optimizer_share"], "measured": round(step["measured"], 4),
                        "before": round(step["before"], 4), "device": round(step["device"], 4),
                        "held_out": held, "work": step["work"]}
                       for step, held in zip(steps, chosen["steps_held_out"], strict=True)]
    OUT.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({key: result[key] for key in ("benchmark_host", "before")}, indent=1))
    for name, fitted in result["fits"].items():
        print(name, json.dumps({key: value for key, value in fitted.items() if key != "steps_held_out"}))
    for step in result["steps"]:
        print(step["source"], step["entry"][:40], step["micro_batch"], step["measured"], step["before"],
              step["held_out"], round(step["held_out"] / step["measured"], 2))


if __name__ == "__main__":
    main()
