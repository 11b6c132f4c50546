"""A rerun of `planner run` keeps a finished entry only when its files are whole: a prediction file or saved
model that is gone or damaged (deleted on purpose to train the entry again, truncated by a full disk)
trains that entry again, with one line naming the file and why; the others are kept. Real runs: timm's
``resnet10t`` and ``test_resnet`` at 32 px on generated images, on the CPU."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from run_data import plan_entry, write_plan

from planner.base.predfile import predictions_path, read_prediction_arrays
from planner.base.runfile import load_run
from planner_trainer.options import RunOptions
from planner_trainer.progress import Reporter
from planner_trainer.run import run_plan
from planner_trainer.saved_model import read_saved_model

CPU = RunOptions(epochs=1, pretrained=False, device="cpu")
KEPT, DAMAGED = "resnet10t-crop40-32", "test_resnet-crop40-32"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Lines(Reporter):
    """The run's notices and skip lines, in order."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def entry_skipped(self, name: str, reason: str) -> None:
        self.lines.append(f"skip {name}: {reason}")

    def entry_started(self, name: str, accum: int, micro_batch: int, total_epochs: int) -> None:
        self.lines.append(f"train {name}")

    def notice(self, text: str) -> None:
        self.lines.append(text)


@pytest.fixture(scope="module")
def trained(image_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A plan of two entries and the run folder that finished both (copied by each test before it changes it)."""
    root = tmp_path_factory.mktemp("resume")
    plan = write_plan(root / "plan.json", [plan_entry("resnet10t", resize=40), plan_entry("test_resnet", resize=40)])
    run_plan(plan, image_folder, root / "run", CPU)
    return plan, root / "run"


def rerun(trained: tuple[Path, Path], image_folder: Path, tmp_path: Path,
          damage: Callable[[Path], None]) -> tuple[Path, list[str]]:
    """Copy the finished run folder, damage it, rerun the same command; the folder and the run's lines."""
    plan, original = trained
    run_dir = tmp_path / "run"
    shutil.copytree(original, run_dir)
    damage(run_dir)
    lines = Lines()
    run_plan(plan, image_folder, run_dir, CPU, reporter=lines)
    return run_dir, lines.lines


def truncate(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


@pytest.mark.parametrize(("damage", "why"), [
    (lambda run: predictions_path(run, DAMAGED).unlink(), f"preds/{DAMAGED}.npz is missing (deleted?)"),
    (lambda run: predictions_path(run, DAMAGED).write_bytes(b""), f"preds/{DAMAGED}.npz is empty, not a numpy .npz"),
    (lambda run: truncate(predictions_path(run, DAMAGED), 1000),
     f"preds/{DAMAGED}.npz cannot be read as a numpy .npz without pickles (damaged? File is not a zip file)"),
    (lambda run: np.savez(predictions_path(run, DAMAGED), vocab=np.array(["c0", "c1"])),
     f"preds/{DAMAGED}.npz misses array(s) valid_probs, valid_names, valid_targets, test_probs, test_names"),
    (lambda run: truncate(run / "models" / f"{DAMAGED}.safetensors", 1000),
     f"models/{DAMAGED}.safetensors has 1000 bytes, run.json says"),
    (lambda run: (run / "models" / f"{DAMAGED}.safetensors").unlink(),
     f"models/{DAMAGED}.safetensors is missing (deleted?)"),
    (lambda run: (run / "models" / f"{DAMAGED}.json").write_text("{}"),
     f"models/{DAMAGED}.json cannot be read as a model recipe"),
], ids=["npz-deleted", "npz-empty", "npz-truncated", "npz-without-arrays", "weights-truncated", "weights-deleted",
        "recipe-invalid"])
def test_an_entry_whose_files_are_gone_or_damaged_trains_again(
    trained: tuple[Path, Path], image_folder: Path, tmp_path: Path, damage: Callable[[Path], None], why: str,
) -> None:
    before = load_run(trained[1])
    run_dir, lines = rerun(trained, image_folder, tmp_path, damage)
    assert lines[0].startswith(f"{DAMAGED}: {why}") and lines[0].endswith(": training it again"), lines
    assert lines[1:] == [f"skip {KEPT}: finished earlier (preds/{KEPT}.npz)", f"train {DAMAGED}"]
    after = load_run(run_dir)
    assert after.entries[KEPT] == before.entries[KEPT]
    assert after.entries[DAMAGED].status == "finished" and after.entries[DAMAGED].error is None
    read_prediction_arrays(predictions_path(run_dir, DAMAGED))
    read_saved_model(run_dir, DAMAGED)  # checks size and SHA-256 against run.json


def test_an_entry_whose_files_are_whole_is_kept(trained: tuple[Path, Path], image_folder: Path,
                                                tmp_path: Path) -> None:
    run_dir, lines = rerun(trained, image_folder, tmp_path, lambda run: None)
    assert lines == [f"skip {KEPT}: finished earlier (preds/{KEPT}.npz)",
                     f"skip {DAMAGED}: finished earlier (preds/{DAMAGED}.npz)"]
    assert load_run(run_dir).entries == load_run(trained[1]).entries
