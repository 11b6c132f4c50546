"""Held-out scores of one entry's predictions (the file format is ``planner.base.predfile``)."""

from __future__ import annotations

import numpy as np

LOG_LOSS_EPS = 1e-15


def error_rate(probs: np.ndarray, targets: np.ndarray) -> float:
    """The fraction of rows whose most probable class is not the target."""
    return float(np.mean(np.argmax(probs, axis=1) != targets))


def log_loss(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log probability of the target class (clipped at 1e-15)."""
    picked = np.asarray(probs, dtype=np.float64)[np.arange(len(targets)), targets]
    return float(-np.mean(np.log(np.clip(picked, LOG_LOSS_EPS, 1.0))))
