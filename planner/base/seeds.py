"""The random seeds planner accepts: numpy's legacy range, 0 … 2**32 − 1, which the run's split and
tune-weights' folds (scikit-learn) seed through; refused in one line before any work, not as numpy's
traceback after it has begun."""

from __future__ import annotations

from planner.base.errors import UserError

MAX_SEED = 2**32 - 1


def check_seed(seed: int) -> None:
    """Refuse a seed outside 0 … :data:`MAX_SEED`.

    Raises:
        UserError: naming ``--seed``, its value and the range.
    """
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"--seed {seed} must be between 0 and {MAX_SEED}, e.g. 42")
