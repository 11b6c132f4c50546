"""Pure numpy scores of a weighted average of model probabilities.

The log loss of a mixture needs only each model's probability of the true class: with ``P_true``
of shape (models, rows), the mix gives the true class ``w @ P_true`` and the loss is
``-mean(log(w @ P_true))``, a few microseconds for thousands of rows. The error rate needs the
whole (models, rows, classes) stack, because the argmax looks at every class.
"""

from __future__ import annotations

import numpy as np

# Floor on the mixed probability of the true class, so a model that gave it 0 costs a large finite loss.
EPS = 1e-15


def true_class_probs(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each model's probability of each row's true class.

    Args:
        probs: (models, rows, classes) probabilities.
        targets: (rows,) class indices.

    Returns:
        (models, rows) float64 array ``P_true``.
    """
    rows = np.arange(probs.shape[1])
    return probs[:, rows, targets].astype(np.float64)


def mix(weights: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Weighted average of probabilities: (models,) · (models, rows, classes) → (rows, classes)."""
    return np.tensordot(weights, probs, axes=1)


def log_loss(weights: np.ndarray, p_true: np.ndarray) -> float:
    """Mean negative log of the mixed probability of the true class (natural log).

    Args:
        weights: (models,) non-negative weights summing to 1.
        p_true: (models, rows) probabilities of the true class, from ``true_class_probs``.

    Returns:
        The log loss of the mix, as sklearn's ``log_loss`` would give for the full probabilities.
    """
    return float(-np.mean(np.log(np.maximum(weights @ p_true, EPS))))


def log_loss_grad(weights: np.ndarray, p_true: np.ndarray) -> np.ndarray:
    """Gradient of ``log_loss`` with respect to the weights: ``-mean(P_true / (w @ P_true), rows)``."""
    return -(p_true / np.maximum(weights @ p_true, EPS)).mean(axis=1)


def row_log_losses(p_true: np.ndarray) -> np.ndarray:
    """Each model's log loss on its own: (models, rows) → (models,)."""
    return -np.log(np.maximum(p_true, EPS)).mean(axis=1)


def error_rate(weights: np.ndarray, probs: np.ndarray, targets: np.ndarray) -> float:
    """Share of rows whose argmax of the mixed probabilities is not the target."""
    return float(np.mean(mix(weights, probs).argmax(axis=1) != targets))
