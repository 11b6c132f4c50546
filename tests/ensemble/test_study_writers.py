"""One writer per SQLite study file: a second process is refused and pointed at a server database."""

from __future__ import annotations

import fcntl

import numpy as np
import pytest

from planner.base.errors import UserError
from planner.ensemble.storage import sqlite_file
from planner.ensemble.study import run_study


def test_a_second_writer_of_a_sqlite_study_is_refused(tmp_path) -> None:
    p_true = np.random.default_rng(0).uniform(0.2, 0.9, size=(2, 50))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    with open(tmp_path / "optuna.db.lock", "a") as other:  # what another tune-weights holds while it runs
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError, match=r"one writer at a time.*postgresql://") as error:
            run_study(p_true, ("a", "b"), trials=3, storage=storage)
        assert "\n" not in str(error.value)
        fcntl.flock(other, fcntl.LOCK_UN)
    assert run_study(p_true, ("a", "b"), trials=3, storage=storage).completed == 3
    assert run_study(p_true, ("a", "b"), trials=5, storage=storage).completed == 5  # the lock was released


def test_only_sqlite_files_are_locked() -> None:
    assert str(sqlite_file("sqlite:////runs/a/optuna.db")) == "/runs/a/optuna.db"
    assert str(sqlite_file("sqlite:///optuna.db")) == "optuna.db"
    for url in ("sqlite://", "sqlite:///:memory:", "postgresql://user:pw@db/optuna", "mysql+pymysql://u@h/d"):
        assert sqlite_file(url) is None
