"""Honest scores: fit weights on K−1 folds of the held-out rows, score them on the fold left out.

In-sample scores flatter every fitted method, since the weights saw the rows they are scored on;
cross-fitting scores each fold with weights that never saw it. Gains over the plain average are
paired per fold, so the fold-to-fold spread that every method shares cancels out of their errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold

from planner.base.errors import UserError
from planner.ensemble.objectives import error_rate, log_loss

# A method's fit: P_true of the training rows (models, rows) → weights (models,).
Fit = Callable[[np.ndarray], np.ndarray]
BASELINE = "uniform"


@dataclass(frozen=True)
class Score:
    """One number per fold, with its mean and standard error (std with ddof=1 / sqrt(folds))."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def se(self) -> float:
        return float(np.std(self.values, ddof=1) / math.sqrt(len(self.values)))


@dataclass(frozen=True)
class MethodScores:
    """A method's cross-fitted scores and its paired gains over the plain average (positive = better)."""

    log_loss: Score
    error_rate: Score
    log_loss_gain: Score
    error_rate_gain: Score


def fold_indices(targets: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded (train, test) row indices: stratified by target when every class has ``folds`` rows.

    Raises:
        UserError: fewer than 2 folds, or more folds than rows.
    """
    if not 2 <= folds <= len(targets):
        raise UserError(f"--folds must be between 2 and the {len(targets)} held-out rows, got {folds}")
    counts = np.bincount(targets)
    if counts[counts > 0].min() >= folds:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(targets, targets))


def crossfit(
    p_true: np.ndarray,
    probs: np.ndarray,
    targets: np.ndarray,
    fits: Mapping[str, Fit],
    splits: list[tuple[np.ndarray, np.ndarray]],
) -> dict[str, MethodScores]:
    """Score every method on each fold with weights fit on the other folds.

    Args:
        p_true: (models, rows) probabilities of the true class.
        probs: (models, rows, classes) probabilities, for the error rate.
        targets: (rows,) class indices.
        fits: method name → fit; must include ``"uniform"``, the baseline of the gains.
        splits: (train, test) row indices, from ``fold_indices``.

    Returns:
        Method name → its scores, in the order of ``fits``.
    """
    losses: dict[str, list[float]] = {name: [] for name in fits}
    errors: dict[str, list[float]] = {name: [] for name in fits}
    for train, test in splits:
        for name, fit in fits.items():
            weights = fit(p_true[:, train])
            losses[name].append(log_loss(weights, p_true[:, test]))
            errors[name].append(error_rate(weights, probs[:, test], targets[test]))
    base_loss, base_error = np.array(losses[BASELINE]), np.array(errors[BASELINE])
    return {
        name: MethodScores(
            log_loss=Score(tuple(losses[name])),
            error_rate=Score(tuple(errors[name])),
            log_loss_gain=Score(tuple(base_loss - losses[name])),
            error_rate_gain=Score(tuple(base_error - errors[name])),
        )
        for name in fits
    }
