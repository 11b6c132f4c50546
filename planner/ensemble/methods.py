"""Ensemble weights that need no sampler: fixed rules and the two classic fits.

Every function returns (models,) non-negative weights that sum to 1. The fits take ``P_true``
(models, rows), each model's probability of the true class, which is all the log loss needs.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from planner.base.errors import UserError
from planner.ensemble.objectives import EPS, log_loss, log_loss_grad

GREEDY_ROUNDS = 50
SINGLE = "single:"  # name prefix of the "method" that is one model alone
REFERENCE_VIT_WEIGHT = 2.0


def uniform(models: int) -> np.ndarray:
    """The plain average: every model weighs 1/models."""
    return np.full(models, 1.0 / models)


def hand(names: tuple[str, ...], overrides: dict[str, float]) -> np.ndarray:
    """The reference's hand weights: entries whose name contains "vit" weigh 2, the others 1.

    Args:
        names: entry names, in model order.
        overrides: weights given by the user per entry name; entries not named keep the rule's weight.

    Returns:
        The weights, normalised to sum to 1.

    Raises:
        UserError: an override names no entry, is negative, or all weights are zero.
    """
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise UserError(
            f"--hand-weights names unknown entr(y/ies) {', '.join(unknown)}; entries: {', '.join(names)}"
        )
    raw = np.array(
        [overrides.get(name, REFERENCE_VIT_WEIGHT if "vit" in name.lower() else 1.0) for name in names]
    )
    if (raw < 0).any() or not np.isfinite(raw).all() or raw.sum() <= 0:
        raise UserError("--hand-weights must be finite, non-negative and not all zero")
    return raw / raw.sum()


def greedy(p_true: np.ndarray, rounds: int = GREEDY_ROUNDS) -> np.ndarray:
    """Greedy ensemble selection with replacement (Caruana et al., 2004).

    Starting from an empty ensemble, each round adds (again, if it helps most) the model that most
    lowers the log loss of the running average. After ``rounds`` rounds the prefix with the lowest
    loss is kept, as Caruana picks the ensemble size on the hill-climbing set.

    Args:
        p_true: (models, rows) probabilities of the true class.
        rounds: how many models to add.

    Returns:
        Weights = how often each model was picked / picks, for the best prefix.
    """
    total = np.zeros(p_true.shape[1])
    counts = np.zeros(len(p_true))
    best_counts, best_loss = counts, np.inf
    for size in range(1, rounds + 1):
        candidates = (total + p_true) / size  # the running average if each model were added
        losses = -np.log(np.maximum(candidates, EPS)).mean(axis=1)
        pick = int(np.argmin(losses))
        total = total + p_true[pick]
        counts = counts.copy()
        counts[pick] += 1
        if losses[pick] < best_loss:
            best_counts, best_loss = counts, losses[pick]
    return best_counts / best_counts.sum()


def slsqp(p_true: np.ndarray) -> np.ndarray:
    """The convex optimum: log loss minimised over the simplex by scipy's SLSQP with the analytic gradient.

    The log loss of a mixture is convex in the weights, so this is the best any weighting can do on
    these rows (up to the solver's tolerance); it starts from the plain average.

    Args:
        p_true: (models, rows) probabilities of the true class.

    Returns:
        The optimal weights, clipped at 0 and renormalised (SLSQP may step a hair outside the bounds).
    """
    models = len(p_true)
    result = minimize(
        log_loss,
        uniform(models),
        args=(p_true,),
        jac=log_loss_grad,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * models,
        constraints=({"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)},),
        options={"ftol": 1e-12, "maxiter": 500},
    )
    weights = np.clip(result.x, 0.0, None)
    return weights / weights.sum()
