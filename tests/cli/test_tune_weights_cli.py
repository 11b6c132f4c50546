"""`planner tune-weights` through the real CLI in a subprocess: bad prediction sets are one line, exit 2."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from planner_process import run_planner
from tune_weights_data import accurate_and_cautious, informative_and_noise, rewrite, write_run


def planner(*args: str) -> subprocess.CompletedProcess[str]:
    return run_planner(*args, timeout=120)


def reordered(run: Path) -> None:
    """Same held-out rows, another order (targets and probabilities permuted with the names)."""
    path = run / "preds" / "b.npz"
    with np.load(path) as npz:
        order = np.arange(len(npz["valid_names"]))[::-1]
        rewrite(
            path,
            valid_names=npz["valid_names"][order],
            valid_targets=npz["valid_targets"][order],
            valid_probs=npz["valid_probs"][order],
        )


def renamed(field: str) -> Callable[[Path], None]:
    def change(run: Path) -> None:
        path = run / "preds" / "b.npz"
        with np.load(path) as npz:
            values = npz[field].copy()
        values[0] = "something_else.png"
        rewrite(path, **{field: values})

    return change


def poisoned(value: float) -> Callable[[Path], None]:
    def change(run: Path) -> None:
        path = run / "preds" / "b.npz"
        with np.load(path) as npz:
            probs = npz["valid_probs"].copy()
        probs[3, 0] = value
        rewrite(path, valid_probs=probs)

    return change


def corrupt(run: Path) -> None:
    (run / "preds" / "b.npz").write_bytes(b"PK\x03\x04 not really a zip")


def pickled(run: Path) -> None:
    path = run / "preds" / "b.npz"
    with np.load(path) as npz:
        names = npz["test_names"].astype(object)
    rewrite(path, test_names=names)


def only_one(run: Path) -> None:
    (run / "preds" / "b.npz").unlink()


def no_preds(run: Path) -> None:
    for path in (run / "preds").iterdir():
        path.unlink()
    (run / "preds").rmdir()


CASES = {
    "held-out names differ": (renamed("valid_names"), "held-out file names that differ"),
    "held-out order differs": (reordered, "held-out file names in another order"),
    "vocab differs": (renamed("vocab"), "vocab"),
    "test names differ": (renamed("test_names"), "predict different test files (only in a.npz"),
    "NaN": (poisoned(np.nan), "NaN"),
    "negative": (poisoned(-0.1), "negative"),
    "row sum": (poisoned(0.9), "do not sum to 1"),
    "missing array": (lambda run: rewrite(run / "preds" / "b.npz", vocab=None), "misses array(s) vocab"),
    "corrupt npz": (corrupt, "cannot be read as a numpy .npz"),
    "pickled array": (pickled, "without pickles"),
    "one model": (only_one, "at least two models: add entries to the plan and rerun planner run"),
    "no preds folder": (no_preds, "not found"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_prediction_sets_are_refused_in_one_line(tmp_path: Path, case: str) -> None:
    probs, targets = informative_and_noise(rows=60)
    write_run(tmp_path, ["a", "b"], probs, targets)
    change, message = CASES[case]
    change(tmp_path)
    done = planner("tune-weights", str(tmp_path), "--trials", "3", "--folds", "2")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr
    assert not (tmp_path / "optuna.db").exists()


def test_unknown_hand_weight_is_refused(tmp_path: Path) -> None:
    probs, targets = informative_and_noise(rows=60)
    write_run(tmp_path, ["a", "b"], probs, targets)
    done = planner("tune-weights", str(tmp_path), "--hand-weights", "c=2")
    assert done.returncode == 2
    assert "unknown" in done.stderr and done.stderr.count("\n") == 1


def test_a_hand_weight_given_twice_is_refused(tmp_path: Path) -> None:
    probs, targets = informative_and_noise(rows=60)
    write_run(tmp_path, ["a", "b"], probs, targets)
    done = planner("tune-weights", str(tmp_path), "--hand-weights", "a=2", "--hand-weights", "a=3")
    assert done.returncode == 2
    assert "--hand-weights gives a twice: give it once" in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "optuna.db").exists()


def test_cli_writes_the_files_and_prints_the_report(tmp_path: Path) -> None:
    probs, targets = informative_and_noise(rows=200)
    write_run(tmp_path, ["good", "vit_noise"], probs, targets)
    done = planner("tune-weights", str(tmp_path), "--trials", "8", "--folds", "2", "--sampler", "cmaes")
    assert done.returncode == 0, done.stderr
    assert "slsqp" in done.stdout and "chosen:" in done.stdout
    assert "\r" not in done.stdout  # no progress-bar redraws when not a terminal
    for name in ("weights.json", "submission.csv", "weights.png", "optuna.db"):
        assert (tmp_path / name).is_file()


def test_choice_sentence_calls_a_worse_error_rate_worse(tmp_path: Path) -> None:
    """A fitted method whose log-loss gain is real but whose error rate is worse than uniform's: the
    printed reason says the log loss passed and the error rate got worse, and does not say "noise"."""
    probs, targets = accurate_and_cautious()
    write_run(tmp_path, ["accurate", "cautious"], probs, targets)
    done = planner("tune-weights", str(tmp_path), "--trials", "5", "--folds", "5")
    assert done.returncode == 0, done.stderr
    chosen = " ".join(done.stdout[done.stdout.index("chosen:"):].split("\nweights:")[0].split())
    assert chosen.startswith("chosen: uniform. "), chosen
    assert "the log-loss gain passes" in chosen and "but the error rate is worse than uniform's" in chosen, chosen
    assert "noise" not in chosen, chosen


def test_test_rows_in_another_order_are_aligned_by_file_name(tmp_path: Path) -> None:
    from planner.ensemble.preds import load_predictions

    probs, targets = informative_and_noise(rows=60)
    write_run(tmp_path, ["a", "b"], probs, targets)
    before = load_predictions(tmp_path)
    path = tmp_path / "preds" / "b.npz"
    with np.load(path) as npz:
        order = np.arange(len(npz["test_names"]))[::-1]
        rewrite(path, test_names=npz["test_names"][order], test_probs=npz["test_probs"][order])
    after = load_predictions(tmp_path)
    assert after.test_names == before.test_names
    np.testing.assert_array_equal(after.test_probs, before.test_probs)


def test_gp_sampler_runs_quietly_and_the_study_opens_in_optuna_dashboard(tmp_path: Path) -> None:
    """--sampler gp past its 10 random start-up trials: no library warning on stderr (e.g. Optuna's note
    about the optional greenlet package, or GPSampler's options on Optuna 3.6), and the dashboard
    command names the study's storage."""
    probs, targets = informative_and_noise(rows=100)
    write_run(tmp_path, ["good", "noise"], probs, targets)
    done = planner("tune-weights", str(tmp_path), "--trials", "12", "--folds", "2", "--sampler", "gp")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert f"optuna-dashboard sqlite:///{tmp_path / 'optuna.db'}" in done.stdout
