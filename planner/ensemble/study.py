"""The Optuna study: ensemble weights by a seeded sampler, stored so that a study resumes.

Parametrisation. Each model gets one parameter ``u_i`` drawn from [0, 1] and the weights are
``-log(u_i) / sum(-log(u))``, as Optuna's FAQ recommends. Independent uniform ``u_i`` make the weights
a Dirichlet(1, ..., 1) sample, so the sampler's prior is uniform on the simplex. One parameter per
model treats the models alike, ties each weight to one parameter (which TPE's per-parameter
densities see directly) and names the parameters after the entries, so the stored study reads and
the enqueued trials are written directly. The scale of ``-log(u)`` is redundant, but only in the
parameters: the weights are always the normalised ones. Stick-breaking with Beta inverse CDFs (K−1
parameters, no redundancy, also uniform) depends on the order of the models (the last takes the
remainder) and did about as well in the benchmark: 0.22 % vs 0.25 % mean excess over the SLSQP
optimum after 1,000 TPE trials, within the seed-to-seed spread (benchmarks/RESULTS.md).

Resume. ``trials`` is the number of *completed* trials the study should hold: a study that already
has 20 and is asked for 30 runs 10 more; one that has 30 runs none. A stored study remembers which
predictions it was fit on (a hash of the entry names, held-out names and each model's probability of
the true class: all the objective sees). When they changed (an entry added or trained again), a
named study is refused, and the default one is left as it is: the new predictions get their own study,
``tune-weights-<hash>``, which a rerun on the same predictions resumes. The sampler is made afresh
before every trial, seeded with ``seed + completed trials``, the two enqueued trials are enqueued
once whatever happened before, and trials a killed process left running are marked failed: so a study
killed at any point (kill -9 included) and resumed ends with the same trials, values and best
weights as one never interrupted (tests/cli/test_faults.py).

Several processes. SQLite takes one writer at a time (Optuna advises against it for parallel
optimisation: concurrent writers wait on each other and fail with "database is locked"), so a study in
a SQLite file is run by one process at a time: ``run_study`` holds an exclusive lock on ``FILE.lock``
while it runs and refuses a second process in one line. Several processes or machines share a study
through a server database (PostgreSQL, MySQL): each runs ``tune-weights`` with the same ``--storage``
and ``--study``, and ``trials`` is then the study's total (every process stops once the study holds
that many completed trials; their running trials are theirs, never marked failed). SQLite on a
network file system (where neither its locks nor these work) is never used: ``planner.ensemble.storage``.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna

from planner.base.compat import gp_sampler
from planner.base.errors import UserError, first_line
from planner.base.lock import held_exclusively
from planner.base.seeds import MAX_SEED
from planner.ensemble.objectives import log_loss, row_log_losses
from planner.ensemble.storage import DEFAULT_STUDY, sqlite_file

SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "cmaes": lambda seed: optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False),
    "gp": gp_sampler,  # its options differ across Optuna releases: planner.base.compat
}
# The value of u that stands for "weight 1 before normalising" in enqueued trials.
UNIT = float(np.exp(-1.0))


@dataclass(frozen=True)
class StudyResult:
    """What a study found: the best weights and the history of the whole (resumed) study."""

    weights: np.ndarray
    best_value: float
    completed: int
    ran: int
    history: tuple[float, ...]
    study_name: str
    storage: str | None

    @property
    def storage_shown(self) -> str:
        """The storage URL with any password masked, for reports and weights.json."""
        return shown(self.storage)


def shown(storage: str | None) -> str:
    """A storage URL with any password masked ("in memory" for None)."""
    if storage is None:
        return "in memory"
    from sqlalchemy.engine import make_url

    return make_url(storage).render_as_string(hide_password=True)


def weights_from_params(params: dict[str, float], names: tuple[str, ...]) -> np.ndarray:
    """Normalised weights ``-log(u) / sum(-log(u))`` from a trial's parameters (uniform if all u are 1)."""
    raw = -np.log(np.maximum([params[name] for name in names], np.finfo(float).tiny))
    total = raw.sum()
    return raw / total if total > 0 else np.full(len(names), 1.0 / len(names))


def fingerprint(names: tuple[str, ...], valid_names: tuple[str, ...], p_true: np.ndarray) -> str:
    """A short hash of what a study is fit on, so that a resumed study is refused on other predictions."""
    digest = hashlib.sha256()
    digest.update("\0".join(names).encode())
    digest.update("\0".join(valid_names).encode())
    digest.update(np.ascontiguousarray(p_true, dtype=np.float64).tobytes())
    return digest.hexdigest()[:16]


def run_study(
    p_true: np.ndarray,
    names: tuple[str, ...],
    *,
    trials: int,
    sampler: str = "tpe",
    seed: int = 0,
    storage: str | None = None,
    study_name: str | None = None,
    fit_on: str | None = None,
    on_trial: Callable[[int, int], None] | None = None,
) -> StudyResult:
    """Run (or resume) a study minimising the held-out log loss of the weighted average.

    The plain average and the best single model are enqueued first, so the study is never worse
    than either. Before each trial the sampler is seeded with ``seed + completed trials`` (modulo
    2**32), so a resumed study draws what an unbroken one would have (module docstring, "Resume").

    Args:
        p_true: (models, rows) probabilities of the true class.
        names: entry names, one per model; they name the parameters.
        trials: completed trials the study should hold when this returns.
        sampler: a key of ``SAMPLERS``.
        seed: base seed of the sampler.
        storage: an Optuna storage URL (e.g. ``sqlite:///run/optuna.db``); None keeps it in memory.
        study_name: the study's name in the storage; None: ``DEFAULT_STUDY``, or ``DEFAULT_STUDY-<fit_on>``
            when that one was fit on other predictions (module docstring, "Resume").
        fit_on: fingerprint of the predictions (see ``fingerprint``); a named stored study with another is
            refused. None skips the check (in-memory studies).
        on_trial: called after each trial with (trials run so far, trials to run).

    Returns:
        The best weights and the study's history.

    Raises:
        UserError: the storage URL cannot be opened or stops taking writes (a full disk), the stored study
            was fit on other predictions, or another process is running a study in the same SQLite file.
    """
    with single_writer(storage), _writes_to(storage):
        return _run(p_true, names, trials=trials, sampler=sampler, seed=seed, storage=storage,
                    study_name=study_name, fit_on=fit_on, on_trial=on_trial)


def _run(
    p_true: np.ndarray,
    names: tuple[str, ...],
    *,
    trials: int,
    sampler: str,
    seed: int,
    storage: str | None,
    study_name: str | None,
    fit_on: str | None,
    on_trial: Callable[[int, int], None] | None,
) -> StudyResult:
    study = _open(storage, study_name or DEFAULT_STUDY)
    if study_name is None and _fit_on_other(study, fit_on):
        study = _open(storage, f"{DEFAULT_STUDY}-{fit_on}")
    if _fit_on_other(study, fit_on):
        then, now = ", ".join(study.user_attrs.get("entries", [])) or "?", ", ".join(names)
        raise UserError(
            f"study {study.study_name!r} in {shown(storage)} was fit on other predictions (entries then: {then}; "
            f"now: {now}): pass another --study name, or leave --study out to use the default study of these "
            "predictions"
        )
    stored = study.user_attrs.get("fingerprint")
    if fit_on is not None and stored is None:
        study.set_user_attr("fingerprint", fit_on)
        study.set_user_attr("entries", list(names))
    shared = storage is not None and sqlite_file(storage) is None  # a server others may write to as well
    if not shared:
        _fail_stale_trials(study)
    with _quiet():
        best = names[int(np.argmin(row_log_losses(p_true)))]
        for params in (dict.fromkeys(names, UNIT), {name: UNIT if name == best else 1.0 for name in names}):
            study.enqueue_trial(params, skip_if_exists=True)  # idempotent: a resumed study gets each once
        start = done = _completed(study)
        todo, ran = max(0, trials - done), 0
        while done < trials:
            # per trial: a resumed study draws as an unbroken one; wrapped to stay a seed near MAX_SEED
            study.sampler = SAMPLERS[sampler]((seed + done) % (MAX_SEED + 1))
            trial = study.ask()
            params = {name: trial.suggest_float(name, 0.0, 1.0) for name in names}
            study.tell(trial, log_loss(weights_from_params(params, names), p_true))
            ran += 1
            if on_trial is not None:
                on_trial(ran, todo)
            done = _completed(study) if shared else done + 1
    finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return StudyResult(
        weights=weights_from_params(study.best_params, names),
        best_value=study.best_value,
        completed=len(finished),
        ran=len(finished) - start,
        history=tuple(float(trial.value) for trial in finished),
        study_name=study.study_name,
        storage=storage,
    )


def _fit_on_other(study: optuna.Study, fit_on: str | None) -> bool:
    """Whether the stored study holds trials of other predictions than ``fit_on`` (None: never)."""
    stored = study.user_attrs.get("fingerprint")
    return fit_on is not None and stored != fit_on and (stored is not None or bool(study.trials))


def _completed(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def _fail_stale_trials(study: optuna.Study) -> None:
    """Mark trials left running by a killed process as failed (only with no other writer: a SQLite file
    under its lock, or memory), so that a resumed study continues exactly as an unbroken one."""
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def _open(storage: str | None, study_name: str) -> optuna.Study:
    """Create the study, or load it from the storage if it exists there (the sampler is set after).

    An SQLite file is switched to write-ahead logging with ``synchronous=NORMAL``: Optuna commits
    about 14 times per trial and each default commit waits for the disk: 81 ms a trial on the dev
    machine against 20 ms (benchmarks/RESULTS.md). A crash cannot corrupt the file; a power cut may
    lose the last trials, which a resumed study runs again.
    """
    from sqlalchemy import event
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with _quiet():
            rdb = None if storage is None else optuna.storages.RDBStorage(storage)
            if rdb is not None and rdb.engine.name == "sqlite":
                event.listen(rdb.engine, "connect", _fast_sqlite)
                rdb.engine.dispose()  # connections opened so far did not run the listener
            return optuna.create_study(
                storage=rdb, study_name=study_name, direction="minimize", load_if_exists=True
            )
    except (SQLAlchemyError, ValueError, ImportError) as error:
        raise UserError(f"cannot open Optuna storage {storage!r}: {first_line(error)}") from None


@contextmanager
def _writes_to(storage: str | None) -> Iterator[None]:
    """Trials written to ``storage`` while the block runs; a storage that stops taking them (a full disk, a
    server gone) is one line naming it and its error, not Optuna's traceback. Each trial is committed as it
    ends, so a rerun resumes with those stored.

    Raises:
        UserError: the storage refused a write.
    """
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (optuna.exceptions.StorageInternalError, SQLAlchemyError) as error:
        cause: BaseException = error
        while cause.__cause__ is not None or cause.__context__ is not None:  # the database's own words
            cause = cause.__cause__ or cause.__context__
        raise UserError(f"the study in {shown(storage)} could not be written ({first_line(cause)}): rerun the same "
                        "command once it can be (space freed, the server back) to resume with the trials stored, "
                        "or give another --storage") from None


@contextmanager
def single_writer(storage: str | None) -> Iterator[None]:
    """Hold an exclusive lock on ``FILE.lock`` beside a SQLite study file while the block runs.

    Raises:
        UserError: another process holds it (another tune-weights is writing the same file).
    """
    path = None if storage is None else sqlite_file(storage)
    if path is None:
        yield
        return
    refusal = (f"another process ({{}}) is running a study in {path}: SQLite takes one writer at a time; wait "
               "for it, or run several processes or machines on a server database with --storage "
               "postgresql://USER:PASSWORD@HOST/DB (docs/tune-weights.md)")
    with held_exclusively(Path(f"{path}.lock"), refusal.format):
        yield


def _fast_sqlite(connection: sqlite3.Connection, _record: object) -> None:
    """SQLAlchemy "connect" listener: WAL journal, fsync at checkpoints only."""
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")


class _quiet:
    """Silence Optuna's per-trial INFO lines while the block runs, then restore the verbosity."""

    def __enter__(self) -> None:
        self._before = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    def __exit__(self, *exc: object) -> None:
        optuna.logging.set_verbosity(self._before)
