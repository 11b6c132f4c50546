"""Fault injection: kill -9 at seeded random moments of `planner run` and `planner tune-weights`.

After each kill no file the process left may be truncated or unreadable (its temporary files aside),
and rerunning the same command must end with exactly what an uninterrupted run wrote: the same
predictions and models (bitwise: one torch thread, seeded) and the same tune-weights outcome. The
loop with many more kills is benchmarks/robustness/faults.py (benchmarks/RESULTS.md, "What happens with
bad inputs, faults and interruptions?").
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from fault_runs import (
    differences,
    finish,
    is_temporary,
    model_differences,
    planner,
    prediction_arrays,
    run_and_kill,
    unreadable_files,
    weights_outcome,
)
from run_data import small_plan
from tune_weights_data import informative_and_noise, write_run

RUN_OPTIONS = ("--no-pretrained", "--epochs", "1", "--device", "cpu")
TUNE_OPTIONS = ("--trials", "80", "--folds", "2")


@pytest.fixture(scope="module")
def reference_run(image_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, float]:
    """An uninterrupted run of the two-entry plan: its plan, its folder, its seconds after run.json appeared."""
    root = tmp_path_factory.mktemp("reference")
    plan, run_dir = small_plan(root / "plan.json"), root / "run"
    process = planner("run", plan, "--data", image_folder, "--out", run_dir, *RUN_OPTIONS)
    while not (run_dir / "run.json").exists() and process.poll() is None:
        time.sleep(0.01)
    started = time.monotonic()
    code, _out, err = finish(process)
    assert code == 0, err
    return plan, run_dir, time.monotonic() - started


@pytest.mark.parametrize("seed", [3, 8])
def test_run_killed_anywhere_resumes_to_the_same_predictions(
    seed: int, reference_run: tuple[Path, Path, float], image_folder: Path, tmp_path: Path
) -> None:
    plan, reference, seconds = reference_run
    delay = random.Random(seed).uniform(0, seconds)
    for attempt in range(4):  # a machine less loaded than the reference's may finish first: kill sooner
        run_dir = tmp_path / f"run{attempt}"
        command = ("run", plan, "--data", image_folder, "--out", run_dir, *RUN_OPTIONS)
        if not run_and_kill(command, run_dir / "run.json", delay / 2**attempt).ended_before:
            break
    else:
        pytest.fail("every run finished before its kill")
    assert unreadable_files(run_dir) == []

    code, _out, err = finish(planner(*command))
    assert code == 0, err
    assert differences(prediction_arrays(reference), prediction_arrays(run_dir)) == []
    assert model_differences(reference, run_dir) == []
    assert [path.name for path in run_dir.rglob("*") if is_temporary(path)] == []  # the kill's half files removed


@pytest.fixture(scope="module")
def predictions_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two models' predictions and the output set of an earlier, shorter study (30 trials)."""
    probs, targets = informative_and_noise(rows=300)
    run_dir = write_run(tmp_path_factory.mktemp("preds") / "run", ["a", "b"], probs, targets)
    code, _out, err = finish(planner("tune-weights", run_dir, "--trials", "30", "--folds", "2"))
    assert code == 0, err
    return run_dir


def copy_of(folder: Path, to: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, to))


@pytest.fixture(scope="module")
def reference_weights(predictions_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, float]:
    """tune-weights resumed once, uninterrupted: what it decided and how long it took."""
    run_dir = copy_of(predictions_folder, tmp_path_factory.mktemp("tune") / "run")
    started = time.monotonic()
    code, _out, err = finish(planner("tune-weights", run_dir, *TUNE_OPTIONS))
    assert code == 0, err
    return weights_outcome(run_dir), time.monotonic() - started


@pytest.mark.parametrize("seed", [5, 12])
def test_tune_weights_killed_anywhere_resumes_to_the_same_weights(
    seed: int, predictions_folder: Path, reference_weights: tuple[dict, float], tmp_path: Path
) -> None:
    reference, seconds = reference_weights
    delay = random.Random(seed).uniform(0, seconds)
    for attempt in range(4):  # as above
        run_dir = copy_of(predictions_folder, tmp_path / f"run{attempt}")
        if not run_and_kill(("tune-weights", run_dir, *TUNE_OPTIONS), None, delay / 2**attempt).ended_before:
            break
    else:
        pytest.fail("every tune-weights finished before its kill")
    assert unreadable_files(run_dir) == []  # a mixed set would be refused by its reader, never taken as one

    code, _out, err = finish(planner("tune-weights", run_dir, *TUNE_OPTIONS))
    assert code == 0, err
    assert weights_outcome(run_dir) == reference  # the resumed study ends as the unbroken one did
    assert [path.name for path in run_dir.iterdir() if is_temporary(path)] == []


def test_cpu_epochs_record_the_threads_they_trained_with(reference_run: tuple[Path, Path, float]) -> None:
    import json

    record = json.loads((reference_run[1] / "run.json").read_text())
    threads = [epoch["threads"] for entry in record["entries"].values() for epoch in entry["epochs"]]
    assert threads == [1, 1, 1, 1]  # OMP_NUM_THREADS=1 (planner.base.threads: an explicit setting wins)
