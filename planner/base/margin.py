"""The margin a plan keeps free, from a meter's measured error.

A meter that predicted ``p`` for a run that then measured ``m`` has the relative error
``e = p / m − 1`` (negative: it predicted too little). A plan keeps its predicted peaks under
``budget × (1 − margin)``; a run then peaks at ``p / (1 + e) ≤ budget × (1 − margin) / (1 + e)``,
which fits the card when ``margin ≥ −e``. So the margin that covers a meter is its worst measured
under-prediction, rounded up to a whole percent (the step a plan shows), and never below 1 %.
"""

from __future__ import annotations

import math

MIN_MARGIN = 0.01
"""The smallest margin a measured error gives: a meter measured exact still keeps one percent."""


def margin_covering(worst_under: float) -> float:
    """The smallest whole-percent margin (at least :data:`MIN_MARGIN`) under which a run whose peak a
    meter under-predicted by ``-worst_under`` (``worst_under = predicted / measured − 1``) still fits."""
    return max(MIN_MARGIN, math.ceil(round(-worst_under * 100, 6)) / 100)


def card_needed(peak_bytes: float, margin: float) -> float:
    """The smallest card a predicted peak fits with ``margin`` of it kept free: ``peak / (1 − margin)``
    (an entry fits when its peak is under ``budget × (1 − margin)``)."""
    return peak_bytes / (1 - margin)


def format_margin(margin: float) -> str:
    """A margin as a percentage, exact to a hundredth of a percent (``0.04`` → ``4%``, ``0.025`` → ``2.5%``):
    a margin given as 2.5 % is not shown as 2 %."""
    return f"{round(margin * 100, 2):g}%"
