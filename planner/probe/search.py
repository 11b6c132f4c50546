"""Choosing the micro-batch: pure arithmetic on probe points, no model and no device in sight.

Candidates are the divisors of the effective batch (fastai's ``GradientAccumulation`` counts
samples, so any other micro-batch changes the effective batch), never 1 while BatchNorm trains.
Instead of walking the divisors until one stops failing, two cheap probes at small micro-batches
fit the memory curve

    peak(b) = max(step phase line, forward/backward line)

(memory is close to affine in b, but at small b the optimizer step, with weights, gradients,
optimizer state and its temporaries, can set a flat peak). Where a probe costs the same at any
micro-batch and cannot crash (fake steps: the estimate meter), the two opening probes are the two
largest candidates instead: the largest is the answer when it fits (one probe), and otherwise the
pair lies nearest the edge of the larger answers. The largest candidate predicted to fit
``budget × (1 − margin)`` is then confirmed with real steps, and the next larger candidate is
probed too when its prediction is within ``edge`` of the limit. Refits use the two largest
measured points, the ones nearest the edge, because the affine model holds only locally.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from planner.base.errors import UserError
from planner.base.plan import MemoryCurve, ProbePoint, batch_divisors

MAX_PROBES = 8


def candidate_micro_batches(effective_batch_size: int, has_batchnorm: bool) -> list[int]:
    """Divisors of the effective batch, ascending; 1 is left out when BatchNorm trains.

    Raises:
        UserError: no candidate is left (an effective batch of 1 with BatchNorm).
    """
    divisors = batch_divisors(effective_batch_size)
    candidates = [b for b in divisors if b > 1] if has_batchnorm else divisors
    if not candidates:
        raise UserError(
            f"effective batch {effective_batch_size} leaves no micro-batch: BatchNorm cannot train on "
            "single images; use --effective-bs 2 or more"
        )
    return candidates


def _line(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """Intercept and (non-negative) slope through the two points of largest b, or flat for one."""
    (b1, y1), (b2, y2) = (points[0], points[0]) if len(points) == 1 else points[-2:]
    slope = max(0.0, (y2 - y1) / (b2 - b1)) if b2 != b1 else 0.0
    return y2 - slope * b2, slope


def fit_curve(points: Sequence[ProbePoint]) -> MemoryCurve | None:
    """Fit the memory curve on the measured (non-OOM) points; None with fewer than two."""
    measured = sorted((p for p in points if not p.oom), key=lambda p: p.micro_batch)
    if len({p.micro_batch for p in measured}) < 2:
        return None
    fixed, per_sample = _line([(p.micro_batch, p.forward_backward_bytes or p.peak_bytes) for p in measured])
    step, step_per_sample = _line([(p.micro_batch, p.step_bytes or 0) for p in measured])
    return MemoryCurve(fixed_bytes=fixed, per_sample_bytes=per_sample, step_bytes=step,
                       step_per_sample_bytes=step_per_sample)


def shift_curve(curve: MemoryCurve, point: ProbePoint) -> MemoryCurve:
    """Move a borrowed curve (another entry's, same architecture and size) through our own point."""
    delta = (point.peak_bytes or 0) - curve.predict(point.micro_batch)
    return curve.model_copy(update={"fixed_bytes": curve.fixed_bytes + delta,
                                    "step_bytes": curve.step_bytes + delta})


def proportional_curve(point: ProbePoint) -> MemoryCurve:
    """The cautious guess from one point: everything grows with the batch."""
    return MemoryCurve(fixed_bytes=0.0, per_sample_bytes=(point.peak_bytes or 0) / point.micro_batch,
                       step_bytes=0.0)


@dataclass(frozen=True)
class SearchResult:
    """The chosen micro-batch and the evidence for it."""

    micro_batch: int
    fits: bool
    peak_bytes: int | None
    curve: MemoryCurve | None
    points: tuple[ProbePoint, ...]

    @property
    def ooms(self) -> int:
        return sum(p.oom for p in self.points)


class _Evidence:
    """What the probes so far say about each candidate."""

    def __init__(self, limit: float, prior: MemoryCurve | None):
        self.limit = limit
        self.prior = prior
        self.points: list[ProbePoint] = []

    def add(self, point: ProbePoint) -> None:
        self.points.append(point)

    def measured(self, b: int) -> ProbePoint | None:
        return next((p for p in self.points if p.micro_batch == b), None)

    def known_fit(self) -> list[int]:
        return sorted(p.micro_batch for p in self.points if not p.oom and p.peak_bytes <= self.limit)

    def ceiling(self) -> float:
        """The smallest micro-batch known not to fit (OOM or over the limit)."""
        failed = [p.micro_batch for p in self.points if p.oom or p.peak_bytes > self.limit]
        return min(failed, default=math.inf)

    def curve(self) -> MemoryCurve | None:
        own = fit_curve(self.points)
        if own is not None:
            return own
        measured = [p for p in self.points if not p.oom]
        if self.prior is not None:
            return shift_curve(self.prior, measured[-1]) if measured else self.prior
        return proportional_curve(measured[-1]) if measured else None

    def predicted_fit(self, b: int, curve: MemoryCurve | None) -> bool:
        point = self.measured(b)
        if point is not None:
            return not point.oom and point.peak_bytes <= self.limit
        if b >= self.ceiling():
            return False
        if b <= max(self.known_fit(), default=0):
            return True
        return curve is not None and curve.predict(b) <= self.limit


def _next_probe(candidates: Sequence[int], evidence: _Evidence, edge: float) -> int | None:
    """The candidate to probe next, or None when the answer is settled."""
    curve = evidence.curve()
    fitting = [b for b in candidates if evidence.predicted_fit(b, curve)]
    if not fitting:
        return None if evidence.measured(candidates[0]) else candidates[0]
    target = fitting[-1]
    if evidence.measured(target) is None:
        return target
    larger = [b for b in candidates if b > target]
    if not larger or evidence.measured(larger[0]) is not None or larger[0] >= evidence.ceiling():
        return None
    near_edge = curve is None or curve.predict(larger[0]) <= evidence.limit * (1 + edge)
    return larger[0] if near_edge else None


def _opening_probes(candidates: Sequence[int], from_the_top: bool) -> list[int]:
    """Two cheap probes: the smallest candidate and the largest one up to four times it; or, where
    every probe costs the same (``from_the_top``), the largest candidate and the next one down."""
    if from_the_top:
        return list(reversed(candidates[-2:]))
    smallest = candidates[0]
    second = max((b for b in candidates if smallest < b <= 4 * smallest), default=None)
    if second is None and len(candidates) > 1:
        second = candidates[1]
    return [smallest] if second is None else [smallest, second]


def search_micro_batch(
    measure: Callable[[int], ProbePoint],
    candidates: Sequence[int],
    limit_bytes: float,
    *,
    prior: MemoryCurve | None = None,
    edge: float = 0.10,
    max_probes: int = MAX_PROBES,
    from_the_top: bool = False,
) -> SearchResult:
    """Find the largest candidate micro-batch whose measured peak stays under ``limit_bytes``.

    Args:
        measure: runs real (or fake) steps at a micro-batch and returns the probe point.
        candidates: allowed micro-batches, ascending (see :func:`candidate_micro_batches`).
        limit_bytes: budget minus safety margin.
        prior: a curve from an entry with the same architecture and size; it replaces the two
            opening probes.
        edge: probe the next larger candidate when its prediction is within this fraction of the
            limit, since the curve is only nearly affine.
        max_probes: a bound on probes, for pathological curves.
        from_the_top: probes cost the same at any micro-batch and cannot run out of memory (fake
            steps): open with the two largest candidates (the largest alone when it fits).

    Returns:
        The result; ``fits`` is False when even the smallest candidate does not fit, and then
        ``micro_batch`` is the smallest candidate and ``peak_bytes`` its measured peak (None if OOM).
    """
    evidence = _Evidence(limit_bytes, prior)
    opening = [] if prior is not None else _opening_probes(candidates, from_the_top)
    for b in opening:
        evidence.add(measure(b))
        if evidence.known_fit() if from_the_top else not evidence.known_fit():
            break  # the largest candidate fits: the answer; or the smallest fails: nothing larger can
    while len(evidence.points) < max_probes:
        b = _next_probe(candidates, evidence, edge)
        if b is None:
            break
        evidence.add(measure(b))
    fitting = evidence.known_fit()
    chosen = fitting[-1] if fitting else candidates[0]
    point = evidence.measured(chosen)
    return SearchResult(micro_batch=chosen, fits=bool(fitting),
                        peak_bytes=point.peak_bytes if point else None,
                        curve=evidence.curve(), points=tuple(evidence.points))


def walk_from_top_trials(candidates: Sequence[int], chosen: int, fits: bool) -> int:
    """Trials a person makes walking accumulation 1, 2, 4, ... (micro-batch from the top) down to
    the first that fits: every candidate from the largest down to the chosen one."""
    return len(candidates) if not fits else sum(1 for b in candidates if b >= chosen)
