"""Step time from op costs: a roofline per kernel on a named GPU, plus launch and per-step overheads.

A training step's kernels come from :class:`planner.probe.meters.opcount.OpCounter` (the same fake step
the memory estimate runs). On the GPU each kernel takes the longest of its tensor-core FLOPs at the
card's tensor rate, its other FLOPs at the CUDA-core rate and its bytes at the memory bandwidth, each
rate scaled by an efficiency. Eager PyTorch launches kernels from Python asynchronously, so a step
takes the longer of the GPU's work and the host's launching (a fixed time per kernel), plus a fixed
overhead per step::

    seconds = max(Σ_kernels max(tensor_flops / (T·e_t), vector_flops / (V·e_v), bytes / (B·e_b)),
                  kernels × launch) + per_step

The five constants are the same for every model and card (fitted once on the calibration half of
timm's published RTX 3090 runs by ``benchmarks/published/estimate.py``; never per model). Three forms were
compared on that half (Σ max(roofline, launch); max(Σ roofline, n·launch); Σ roofline + n·launch):
their held-out errors were within a point of each other, and the form above is the one whose launch
constant means what it says. The plan's own fastai step takes the card's work alone from here
(:func:`device_seconds`) and weighs it against the host's share, modelled for that recipe by
``planner.probe.hosttime``. All functions here are pure arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from planner.base.gpus import GpuSpec


@dataclass(frozen=True)
class TimeConstants:
    """The step-time model's constants (efficiencies are fractions of the datasheet peak)."""

    tensor_efficiency: float
    vector_efficiency: float
    memory_efficiency: float
    launch_seconds: float
    step_seconds: float

    def to_dict(self) -> dict[str, float]:
        return {key: float(f"{value:.4g}") for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, float]) -> TimeConstants:
        return cls(**data)


# Fitted on the calibration half (88 models) of the published RTX 3090 runs, on the op costs of the
# estimate's own fake step (CUDA's autocast policy; benchmarks/published/estimate.py --report, results in
# benchmarks/results/published_gpu_time.json). Those large-batch steps never wait on the host, so they
# leave the launch cost undetermined (any value from 1.6 to 17 µs gives the same errors): it keeps the
# earlier 17 µs. The per-step cost sits at its bound (20 ms).
DEFAULT_CONSTANTS = TimeConstants(tensor_efficiency=0.5649, vector_efficiency=0.09299, memory_efficiency=0.8793,
                                  launch_seconds=1.722e-05, step_seconds=0.02)


@dataclass(frozen=True)
class StepCosts:
    """The kernels of one step as an array of rows (tensor_flops, vector_flops, bytes, count)."""

    rows: np.ndarray

    @classmethod
    def from_counter(cls, counter: Any, phase: str | None = None) -> StepCosts:
        """From an ``OpCounter``: all its kernels, or those of one phase (none when it never ran)."""
        costs = counter.costs if phase is None else counter.phase_costs.get(phase, {})
        rows = [(cost.tensor_flops, cost.vector_flops, cost.bytes, count) for cost, count in costs.items()]
        return cls(np.array(rows, dtype=float).reshape(-1, 4))

    @classmethod
    def from_list(cls, rows: Sequence[Sequence[float]]) -> StepCosts:
        return cls(np.array(rows, dtype=float).reshape(-1, 4))

    def to_list(self) -> list[list[float]]:
        return [[float(f"{value:.6g}") for value in row] for row in self.rows.tolist()]

    @property
    def kernels(self) -> int:
        return int(self.rows[:, 3].sum())

    def total(self, column: int) -> float:
        return float((self.rows[:, column] * self.rows[:, 3]).sum())

    def scaled(self, factor: float) -> StepCosts:
        """The same kernels with FLOPs and bytes multiplied by ``factor`` (e.g. a batch ratio)."""
        rows = self.rows.copy()
        rows[:, :3] *= factor
        return StepCosts(rows)


def device_seconds(costs: StepCosts, gpu: GpuSpec, constants: TimeConstants) -> float:
    """The GPU's own work of ``costs`` on ``gpu``: Σ over kernels of their roofline, nothing of the host."""
    rows = costs.rows
    if not len(rows):
        return 0.0
    per_kernel = np.maximum.reduce([
        rows[:, 0] / (gpu.tensor_flops * constants.tensor_efficiency),
        rows[:, 1] / (gpu.vector_flops * constants.vector_efficiency),
        rows[:, 2] / (gpu.bandwidth * constants.memory_efficiency),
    ])
    return float((per_kernel * rows[:, 3]).sum())


def step_seconds(costs: StepCosts, gpu: GpuSpec, constants: TimeConstants, per_step: bool = True) -> float:
    """Predicted seconds of one step of ``costs`` on ``gpu`` (see the module docstring).

    ``per_step=False`` leaves the per-step overhead out (for a part of a step, such as its optimizer step).
    """
    launches = costs.kernels * constants.launch_seconds
    return max(device_seconds(costs, gpu, constants), launches) + (constants.step_seconds if per_step else 0.0)


def naive_step_seconds(flops: float, gpu: GpuSpec, efficiency: float) -> float:
    """The naive baseline: a FLOP count at a fixed fraction of the card's tensor peak."""
    return flops / (gpu.tensor_flops * efficiency)


def fit_flop_efficiency(flops: Sequence[float], seconds: Sequence[float], gpu: GpuSpec) -> float:
    """The naive baseline's efficiency that minimises Σ|log(predicted / measured)|: a median."""
    ratios = [math.log(f / (gpu.tensor_flops * s)) for f, s in zip(flops, seconds, strict=True) if f > 0]
    return math.exp(float(np.median(ratios)))


_NAMES = ("tensor_efficiency", "vector_efficiency", "memory_efficiency", "launch_seconds", "step_seconds")
_BOUNDS = ((0.05, 2.0), (0.02, 1.0), (0.1, 1.0), (1e-6, 1e-4), (1e-4, 0.02))


def log_errors(costs: Sequence[StepCosts], seconds: Sequence[float], gpu: GpuSpec,
               constants: TimeConstants) -> np.ndarray:
    """|log(predicted / measured)| per step."""
    predicted = np.array([step_seconds(c, gpu, constants) for c in costs])
    return np.abs(np.log(predicted / np.asarray(seconds, dtype=float)))


def fit_constants(costs: Sequence[StepCosts], seconds: Sequence[float], gpu: GpuSpec,
                  start: TimeConstants = DEFAULT_CONSTANTS) -> TimeConstants:
    """The constants minimising Σ|log(predicted / measured)| over the given steps (bounded search).

    Args:
        costs: each step's kernels.
        seconds: each step's measured seconds on ``gpu``.
        gpu: the card the steps were measured on.
        start: where the search starts.
    """
    from scipy.optimize import minimize

    bounds = [(float(np.log(low)), float(np.log(high))) for low, high in _BOUNDS]

    def constants_at(point: np.ndarray) -> TimeConstants:
        return TimeConstants(**dict(zip(_NAMES, np.exp(point).tolist(), strict=True)))

    def loss(point: np.ndarray) -> float:
        return float(log_errors(costs, seconds, gpu, constants_at(point)).sum())

    starts = [np.clip(np.log([getattr(start, name) for name in _NAMES]), *np.array(bounds).T),
              np.log([1.0, 0.1, 0.5, 3e-5, 3e-4])]
    results = [minimize(loss, point, method="Powell", bounds=bounds) for point in starts]  # the max()'s kinks
    for _ in range(2):  # polish the best: Powell stops early on the kinks, Nelder-Mead walks along them
        best = min(results, key=lambda result: result.fun)
        results.append(minimize(loss, best.x, method="Nelder-Mead", bounds=bounds,
                                options={"maxiter": 3000, "xatol": 1e-4, "fatol": 1e-6}))
        results.append(minimize(loss, results[-1].x, method="Powell", bounds=bounds))
    return constants_at(min(results, key=lambda result: result.fun).x)
