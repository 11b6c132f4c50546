"""The published brackets' replay peaks, shipped with planner for the calibration guard.

``planner calibrate`` may not accept constants that leave more of timm's published brackets unsafe
than the constants they replace (:func:`planner.probe.meters.calibration.guard`). That check needs,
per bracketed model, the fake step's replay peaks at the batch that trained and at the next one, and
the card they were measured on: ``published_brackets.json``, derived from
``benchmarks/results/published_gpu.json`` (the published check's output) by
``python -m benchmarks.gpu.today_stack_fit --brackets`` (a test checks that it matches).
"""

from __future__ import annotations

import json
from pathlib import Path

from planner.probe.meters.calibration import Bracket

BRACKETS_FILE = Path(__file__).with_name("published_brackets.json")
PEAKS = ("allocated", "active", "reserved")


def load_brackets(path: Path = BRACKETS_FILE) -> tuple[list[Bracket], int]:
    """The shipped brackets and the card (bytes) they were measured on."""
    table = json.loads(path.read_text(encoding="utf-8"))
    count = len(PEAKS)
    brackets = [Bracket(row[0], dict(zip(PEAKS, row[1:1 + count], strict=True)),
                        dict(zip(PEAKS, row[1 + count:], strict=True))) for row in table["brackets"]]
    return brackets, int(table["card_bytes"])
