"""What tune-weights is asked and what it returns: the records its stages share.

In a module of their own so that the core (``tune``), the weights record (``record``) and the
report (``report``) all use them without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from planner.ensemble.crossfit import MethodScores
from planner.ensemble.study import StudyResult

# Progress: (phase, done, total) after each Optuna trial.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class MethodResult:
    """One row of the report: weights fit on all rows, scored in-sample, and cross-fitted scores."""

    name: str
    weights: np.ndarray
    log_loss: float
    error_rate: float
    crossfit: MethodScores


@dataclass(frozen=True)
class TuneResult:
    """Everything the command reports: every method, the choice and why, the study, the files."""

    run_dir: Path
    names: tuple[str, ...]
    rows: int
    folds: int
    methods: tuple[MethodResult, ...]
    chosen: str
    reason: str
    study: StudyResult
    weights_path: Path
    submission_path: Path
    png_path: Path
    seconds: float
    storage_note: str | None = None
    left_out: tuple[str, ...] = ()  # the run's entries without predictions, each "NAME (status)"

    @property
    def weights(self) -> np.ndarray:
        """The chosen method's weights, one per entry."""
        return next(method.weights for method in self.methods if method.name == self.chosen)
