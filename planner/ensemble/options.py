"""What `planner tune-weights` is asked: its options and their defaults, in one place.

The CLI's defaults come from this record and the record checks its values (one line naming the
option); each flag's help text is the CLI's, beside its parsing. It imports nothing heavy (no Optuna), so
that ``planner --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from planner.base.errors import UserError
from planner.base.fields import normalize_fields
from planner.base.seeds import check_seed

MIN_FOLDS = 2


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
    study: str | None = None  # None: the default study of these predictions (planner.ensemble.study)
    hand_weights: Mapping[str, float] = field(default_factory=dict)
    folds: int = 5
    force_weights: bool = False

    def __post_init__(self) -> None:
        """Refuse an unknown sampler, too few trials or folds or a seed out of range, in one line naming
        the option.

        Raises:
            UserError: a value of the wrong type (``planner.base.fields``), or the first such option.
        """
        from planner.ensemble.study import SAMPLERS  # here, not above: Optuna is heavy to import

        normalize_fields(self)
        if self.sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if self.trials < 1:
            raise UserError(f"--trials must be at least 1, got {self.trials}")
        if self.folds < MIN_FOLDS:
            raise UserError(f"--folds must be at least {MIN_FOLDS}, got {self.folds}")
        check_seed(self.seed)
