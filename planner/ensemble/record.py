"""weights.json: the chosen weights, why, every method's scores and where the study lives.

Records are frozen pydantic models like ``plan.json``'s, written atomically, version 1.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, ValidationError

from planner.base.atomic import atomic_write_json
from planner.base.errors import UserError
from planner.base.plan import Record, describe_validation_error

if TYPE_CHECKING:
    from planner.ensemble.crossfit import Score
    from planner.ensemble.options import TuneOptions
    from planner.ensemble.results import TuneResult

WEIGHTS_VERSION = 1


class ScoreRecord(Record):
    """A cross-fitted score: mean and standard error over folds, and the value of each fold."""

    mean: float
    se: float
    folds: list[float]


class CrossFitRecord(Record):
    """Scores on folds the weights never saw; gains over uniform are paired per fold, positive = better."""

    log_loss: ScoreRecord
    error_rate: ScoreRecord
    log_loss_gain: ScoreRecord
    error_rate_gain: ScoreRecord


class MethodRecord(Record):
    """One method's weights (fit on all held-out rows), in-sample scores and cross-fitted scores."""

    weights: dict[str, float]
    log_loss: float
    error_rate: float
    crossfit: CrossFitRecord


class StudyRecord(Record):
    """Where the Optuna study is stored and how far it went."""

    name: str
    storage: str
    sampler: str
    seed: int
    n_trials: int = Field(ge=0)
    ran: int = Field(ge=0)
    best_log_loss: float


class WeightsFile(Record):
    """The whole weights.json."""

    version: Literal[1] = WEIGHTS_VERSION
    created: str
    entries: list[str]
    rows: int = Field(gt=0)
    folds: int = Field(ge=2)
    method: str
    reason: str
    rule: str
    forced: bool
    weights: dict[str, float]
    methods: dict[str, MethodRecord]
    study: StudyRecord
    submission: str
    seconds: float = Field(ge=0)


def save_weights(result: TuneResult, options: TuneOptions, rule: str) -> Path:
    """Write ``result.weights_path`` atomically.

    Args:
        result: what tune-weights found.
        options: what it was asked for.
        rule: the choice rule, in words.

    Returns:
        The path written.
    """
    names = result.names
    record = WeightsFile(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        entries=list(names),
        rows=result.rows,
        folds=options.folds,
        method=result.chosen,
        reason=result.reason,
        rule=rule,
        forced=options.force_weights,
        weights=_named(names, result.weights),
        methods={
            method.name: MethodRecord(
                weights=_named(names, method.weights),
                log_loss=method.log_loss,
                error_rate=method.error_rate,
                crossfit=CrossFitRecord(
                    log_loss=_score(method.crossfit.log_loss),
                    error_rate=_score(method.crossfit.error_rate),
                    log_loss_gain=_score(method.crossfit.log_loss_gain),
                    error_rate_gain=_score(method.crossfit.error_rate_gain),
                ),
            )
            for method in result.methods
        },
        study=StudyRecord(
            name=result.study.study_name,
            storage=result.study.storage_shown,
            sampler=options.sampler,
            seed=options.seed,
            n_trials=result.study.completed,
            ran=result.study.ran,
            best_log_loss=result.study.best_value,
        ),
        submission=result.submission_path.name,
        seconds=result.seconds,
    )
    return atomic_write_json(result.weights_path, record.to_dict())


def load_weights(run_dir: Path) -> dict[str, float] | None:
    """The chosen weights of ``RUN_DIR/weights.json`` by entry name, or None when the run has none.

    Raises:
        UserError: the file is not JSON, of another version, or a field is wrong (named).
    """
    path = Path(run_dir) / "weights.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON ({error}): rerun planner tune-weights") from None
    if isinstance(data, dict) and data.get("version") != WEIGHTS_VERSION:
        raise UserError(f"{path} has version {data.get('version')!r}, this planner reads version {WEIGHTS_VERSION}")
    try:
        return dict(WeightsFile.model_validate(data).weights)
    except ValidationError as error:
        raise UserError(f"{path} is invalid: {describe_validation_error(error)}") from None


def _named(names: tuple[str, ...], weights: np.ndarray) -> dict[str, float]:
    return {name: float(weight) for name, weight in zip(names, weights, strict=True)}


def _score(score: Score) -> ScoreRecord:
    return ScoreRecord(mean=score.mean, se=score.se, folds=list(score.values))
