"""The default margin of a plan: the measured probe-to-run error of the meter that planned it.

Users do not pick a margin to be safe: each meter's worst measured under-prediction of a real run's
peak (``predicted / measured − 1``) gives the margin that covers it (``planner.base.margin``). The
measurements (``python -m benchmarks.planning.margin_evidence`` gathers them into
``benchmarks/results/margin_evidence.json``; a test checks the figures below against that file):

- ``estimate``: the error of the device model in use, on what it was fitted on (the plan's
  ``measured_on.device_model``: today's stack on the H100, or this card's own pairs after
  ``planner calibrate``), and for a built-in device model also the estimate of `planner run`'s
  phases against the run itself (the H100's `planner run` of the reference's convnext_large).
- ``cuda``: the last GPU comparison of a cuda-meter plan with `planner run` of it under the same
  16 GiB cap (H100, torch 2.11). That probe took two training steps; today's cuda meter rehearses the
  run (``planner.probe.meters.fastai_steps``), which closes most of that gap on the CPU, but until a GPU
  measures the rehearsal against a run this error stands.
- ``cpu``: `planner run` on the CPU against the cpu meter's plan (resnet18 and convnext_atto at
  32 px): the run's peak never passed the plan.

``--margin`` given by the user replaces it, and the plan records which.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.base.margin import margin_covering
from planner.base.plan import MeasuredOn


@dataclass(frozen=True)
class MeasuredError:
    """A meter's worst measured error against real runs.

    Attributes:
        worst_under: the most negative ``predicted / measured − 1`` measured (0: never under).
        points: how many measured runs or steps it is the worst of.
        measured: what was measured, where.
    """

    worst_under: float
    points: int
    measured: str


CUDA_METER = MeasuredError(
    worst_under=-0.138, points=1,
    measured="the two-step cuda meter's plan against planner run under a 16 GiB cap (H100, convnext_large: "
             "11.84 GiB planned, 13.73 GiB measured)")
ESTIMATE_RUNS = MeasuredError(
    worst_under=-0.037, points=1,
    measured="an H100 planner run of convnext_large under 16 GiB: 13.23 GiB estimated, 13.73 GiB measured")
CPU_METER = MeasuredError(
    worst_under=0.0, points=2,
    measured="planner run on the CPU against the cpu meter's plan (resnet18, convnext_atto)")


def meter_error(measured_on: MeasuredOn) -> MeasuredError | None:
    """The measured error of the meter that planned (None: an estimate with constants given by hand)."""
    if measured_on.device == "cuda":
        return CUDA_METER
    if measured_on.device == "cpu":
        return CPU_METER
    model = measured_on.device_model
    if model is None or model.worst_under is None:
        return None
    fit = "its device model's fit"
    if model.calibrated:
        return MeasuredError(worst_under=min(model.worst_under, 0.0), points=model.points, measured=fit)
    return MeasuredError(worst_under=min(model.worst_under, ESTIMATE_RUNS.worst_under, 0.0),
                         points=model.points + ESTIMATE_RUNS.points, measured=f"{fit}; {ESTIMATE_RUNS.measured}")


def measured_margin(measured_on: MeasuredOn) -> tuple[float, str]:
    """The margin covering the planning meter's measured error, and the plan's sentence saying so.

    Raises:
        ValueError: an estimate meter without a measured device model (give the margin).
    """
    error = meter_error(measured_on)
    if error is None:
        raise ValueError("the estimate's device constants were given by hand: give the margin too")
    margin = margin_covering(error.worst_under)
    return margin, (f"covers the {measured_on.device} meter's worst measured under-prediction, "
                    f"{error.worst_under:+.1%} over {error.points} point{'s' * (error.points != 1)} ({error.measured})")
