"""Fitting the device model's constants on published brackets: pure arithmetic on measured peaks.

Each bracketed model gives two numbers per device model: the bytes the estimate says the card
needs at the published batch (which trained) and at the next batch (which did not). A device
model's constants are good when ``need(published) <= card < need(next)`` for as many models as
possible. The fit minimises misses + unsafe misses (an unsafe miss, a batch the card could not
train, costs double) over the calibration half only, with one overhead for all models (and one
factor, for the flat model), never a per-model constant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.published.runs import CARD_BYTES, Outcome, bracket_outcome

MIB = 2**20


@dataclass(frozen=True)
class BracketPeaks:
    """Bytes a device model's variable part (before the overhead) gives at both bracket batches."""

    at_published: int
    at_next: int


def outcomes(brackets: Sequence[BracketPeaks], overhead_bytes: int, factor: float = 1.0,
             card_bytes: int = CARD_BYTES) -> list[Outcome]:
    """Outcome per model when the card needs ``factor × peak + overhead``."""
    return [bracket_outcome(factor * b.at_published + overhead_bytes <= card_bytes,
                            factor * b.at_next + overhead_bytes <= card_bytes) for b in brackets]


def cost(results: Sequence[Outcome]) -> int:
    """What the fit minimises: every miss counts one, an unsafe one two."""
    return sum(1 for r in results if r != "exact") + sum(1 for r in results if r == "unsafe")


@dataclass(frozen=True)
class Fit:
    overhead_bytes: int
    factor: float
    cost: int


def fit_overhead(brackets: Sequence[BracketPeaks], factors: Sequence[float] = (1.0,),
                 step_bytes: int = 16 * MIB, card_bytes: int = CARD_BYTES) -> Fit:
    """The overhead (and factor) that minimises :func:`cost`: the middle of the widest range of
    overheads that reach the minimum, so that the constant sits away from any one model's edge.

    Args:
        brackets: the calibration half's peaks.
        factors: the factors tried (``(1.0,)`` for the caching allocator model).
        step_bytes: the overhead's grid step (0 to 4 GiB is searched).
        card_bytes: the card the brackets were measured on.
    """
    grid = range(0, 4 * 1024 * MIB + 1, step_bytes)
    best: tuple[int, int, Fit] | None = None  # (cost, -width, fit)
    for factor in factors:
        costs = [cost(outcomes(brackets, overhead, factor, card_bytes)) for overhead in grid]
        lowest = min(costs)
        run_start, widest = None, (0, 0)
        for index, value in enumerate([*costs, None]):
            if value == lowest and run_start is None:
                run_start = index
            elif value != lowest and run_start is not None:
                if index - run_start > widest[1] - widest[0]:
                    widest = (run_start, index)
                run_start = None
        middle = grid[(widest[0] + widest[1] - 1) // 2]
        candidate = (lowest, -(widest[1] - widest[0]), Fit(middle, factor, lowest))
        if best is None or candidate[:2] < best[:2]:
            best = candidate
    assert best is not None
    return best[2]
