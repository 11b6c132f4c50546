"""tune-weights' output set: weights.json is written last and names submission.csv and weights.png by
checksum; a reader refuses a set mixed from two studies. Killed writers' temporary files are removed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tune_weights_data import informative_and_noise, write_run

from planner.base.atomic import atomic_write_text, remove_stale_temporaries
from planner.base.errors import UserError
from planner.ensemble.options import TuneOptions
from planner.ensemble.record import load_weights
from planner.ensemble.tune import tune_weights


def test_weights_json_names_its_set_and_a_mixed_set_is_refused(tmp_path: Path) -> None:
    probs, targets = informative_and_noise(rows=200)
    run = write_run(tmp_path / "run", ["a", "b"], probs, targets)
    tune_weights(TuneOptions(run_dir=run, trials=10, folds=2))
    first_index = (run / "weights.json").read_bytes()
    assert set(load_weights(run)) == {"a", "b"}

    tune_weights(TuneOptions(run_dir=run, trials=40, folds=2, seed=7, force_weights=True))
    assert (run / "weights.json").read_bytes() != first_index
    assert set(load_weights(run)) == {"a", "b"}  # a whole new set
    (run / "weights.json").write_bytes(first_index)  # what an interruption before the index leaves
    with pytest.raises(UserError, match=r"weights.png is not the one weights.json names.*rerun planner tune-weights"):
        load_weights(run)


def test_only_temporaries_of_dead_writers_on_this_host_are_removed(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.json", "{}")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    stale = tmp_path / f".a.json.tmp-{host}-{int(dead.stdout)}-abc_1.tmp"
    live = tmp_path / f".a.json.tmp-{host}-{os.getpid()}-abc_2.tmp"
    elsewhere = tmp_path / f".a.json.tmp-another-host-{int(dead.stdout)}-abc_3.tmp"
    for path in (stale, live, elsewhere):
        path.write_text("half")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(["a.json", live.name, elsewhere.name])
