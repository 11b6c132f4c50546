"""What `planner tune-weights` is asked: its options and their defaults, in one place.

The CLI's defaults and ``--help`` come from this record; it imports nothing heavy (no Optuna), so
that ``planner --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TuneOptions:
    """What ``planner tune-weights`` was asked for (see the command's --help); ``run_dir`` None: the most
    recently updated run folder here or in ``runs/``."""

    run_dir: Path | None = None
    data: Path | None = None
    trials: int = 500
    sampler: str = "tpe"
    seed: int = 0
    storage: str | None = None
    study: str = "tune-weights"
    hand_weights: Mapping[str, float] = field(default_factory=dict)
    folds: int = 5
    force_weights: bool = False
