"""weights.json: the chosen weights, why, every method's scores and where the study lives.

Records are frozen pydantic models like ``plan.json``'s, written atomically, version 1.

weights.json is the index of tune-weights' output set. Each file is written atomically, but the set
is three files: ``submission.csv`` and ``weights.png`` are written first, weights.json last, naming
both with their size and SHA-256. An interruption between them leaves new files beside an old index,
and a reader that trusts only what the index names with matching checksums (:func:`load_weights`)
never takes the two for one set; the next tune-weights replaces all three.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from planner.base.atomic import atomic_write_json
from planner.base.errors import UserError
from planner.base.jsonfile import load_record
from planner.base.plan import Record
from planner.base.predfile import predictions_path
from planner.ensemble.preds import held_out_digest

if TYPE_CHECKING:
    from planner.ensemble.crossfit import Score
    from planner.ensemble.options import TuneOptions
    from planner.ensemble.results import TuneResult

WEIGHTS_VERSION = 1
WEIGHTS_FILE = "weights.json"


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


class OutputFile(Record):
    """A file of the output set, as the index names it (relative to the run folder)."""

    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class WeightsFile(Record):
    """The whole weights.json; ``files``: the rest of the set (empty in files written before it)."""

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
    files: dict[str, OutputFile] = Field(default_factory=dict)
    fit_on: dict[str, str] = Field(default_factory=dict)  # held_out_digest per entry (empty in older files)


def save_weights(result: TuneResult, options: TuneOptions, rule: str) -> Path:
    """Write ``result.weights_path`` atomically, last of the set: it names the submission and the PNG
    with their checksums.

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
        files={path.name: _output_file(path) for path in (result.submission_path, result.png_path)},
        fit_on={name: held_out_digest(result.run_dir, name) for name in names},
    )
    return atomic_write_json(result.weights_path, record.to_dict())


def load_weights(run_dir: str | Path) -> dict[str, float] | None:
    """The chosen weights of ``RUN_DIR/weights.json`` by entry name, or None when the run has none.

    Raises:
        UserError: the file is unreadable, not JSON, of another version, or a field is wrong (named).
    """
    run_dir = Path(run_dir).expanduser()
    path = run_dir / WEIGHTS_FILE
    if not path.exists():
        return None
    record = load_record(path, WeightsFile, what="weights file", version=WEIGHTS_VERSION,
                         fix=f"rerun planner tune-weights {run_dir}")
    check_output_set(run_dir, record)
    _check_fit_on(run_dir, record)
    return dict(record.weights)


def _check_fit_on(run_dir: Path, record: WeightsFile) -> None:
    """Refuse weights fit on held-out predictions that an entry's file no longer holds (it was trained
    again after tune-weights ran: the weights and submission.csv are of the old models). A missing file
    is left to the caller, which knows whether the entry is finished.

    Raises:
        UserError: names every such entry.
    """
    changed = [name for name, digest in record.fit_on.items()
               if predictions_path(run_dir, name).is_file() and held_out_digest(run_dir, name) != digest]
    if changed:
        raise UserError(f"weights.json was fit on other held-out predictions of {', '.join(changed)} (trained again "
                        f"after tune-weights ran): rerun planner tune-weights {run_dir}, or pass --uniform")


def check_output_set(run_dir: Path, record: WeightsFile) -> None:
    """Refuse a set whose files are not those its index names (an interrupted or mixed tune-weights).

    Raises:
        UserError: a file the index names is missing or has another size or checksum.
    """
    for name, expected in record.files.items():
        path = run_dir / name
        found = _output_file(path) if path.is_file() else None
        if found != expected:
            problem = "is missing" if found is None else "is not the one weights.json names (another checksum)"
            raise UserError(f"{path} {problem}: the output set of tune-weights is incomplete or mixed (an "
                            f"interrupted run, or an edited file); rerun planner tune-weights {run_dir}")


def _output_file(path: Path) -> OutputFile:
    data = path.read_bytes()
    return OutputFile(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


def _named(names: tuple[str, ...], weights: np.ndarray) -> dict[str, float]:
    return {name: float(weight) for name, weight in zip(names, weights, strict=True)}


def _score(score: Score) -> ScoreRecord:
    return ScoreRecord(mean=score.mean, se=score.se, folds=list(score.values))
