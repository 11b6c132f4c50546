"""A copied data folder (``cp -r``: the same files with new modification times) is the same data for a
rerun; a file whose bytes changed under the same name and size is still refused, by name."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from planner_process import run_planner
from run_data import make_image_folder, plan_entry, write_plan

from planner_trainer.data import scan_data
from planner_trainer.fingerprint import content_hash, listing

TRAIN = ("--no-pretrained", "--epochs", "1", "--device", "cpu")
ENTRY = "convnext_atto-crop40-32"
EDITED = "train_images/c0/photo.bmp"  # BMP: another picture of the same size has the same byte count


def bmp(path: Path, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@dataclass
class Copied:
    data: Path
    run_dir: Path
    first: subprocess.CompletedProcess
    old_times: dict[str, int]
    rerun: subprocess.CompletedProcess
    edited: subprocess.CompletedProcess


def stat_times(data: Path) -> dict[str, int]:
    return {path.relative_to(data).as_posix(): path.stat().st_mtime_ns for path in data.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def copied(tmp_path_factory: pytest.TempPathFactory) -> Copied:
    """Trained once; the data folder replaced by a `cp -r` copy and rerun; then one image's bytes edited
    (same size) and rerun."""
    root = tmp_path_factory.mktemp("copied")
    data = make_image_folder(root / "data", test=4)
    bmp(data / EDITED, seed=1)
    plan = write_plan(root / "plan.json", [plan_entry("convnext_atto", micro_batch=4, accum=2)], 8)
    command = ("run", plan, "--data", data, "--out", root / "run", *TRAIN)
    first = run_planner(*command)
    old_times = stat_times(data)
    subprocess.run(["cp", "-r", str(data), str(root / "copy")], check=True)  # new modification times
    shutil.rmtree(data)
    (root / "copy").rename(data)
    rerun = run_planner(*command)
    bmp(data / EDITED, seed=2)
    edited = run_planner(*command)
    return Copied(data, root / "run", first, old_times, rerun, edited)


def test_a_copied_data_folder_is_the_same_data(copied: Copied) -> None:
    assert copied.first.returncode == 0, copied.first.stderr
    now = stat_times(copied.data)
    assert now.keys() == copied.old_times.keys() and all(now[name] != copied.old_times[name] for name in now)
    assert copied.rerun.returncode == 0, copied.rerun.stderr
    out = copied.rerun.stdout
    assert f"skip {ENTRY}: finished earlier" in out
    assert f"train {ENTRY}" not in out and "re-predict" not in out  # neither retrained nor predicted again


def test_the_record_takes_the_copys_times(copied: Copied) -> None:
    # files.json as the copy's rerun left it (the edited rerun refused before writing anything): the copy's times
    files = json.loads((copied.run_dir / "files.json").read_text())["train"]
    times = stat_times(copied.data)
    assert {name: stamp[1] for name, stamp in files.items() if name != EDITED} == {
        name: time for name, time in times.items() if name.startswith("train_images/") and name != EDITED}
    run = json.loads((copied.run_dir / "run.json").read_text())
    assert run["entries"][ENTRY]["test_files"] == run["inputs"]["test"]  # its predictions are of this test set


def test_an_image_edited_to_the_same_size_is_refused_by_name(copied: Copied) -> None:
    result = copied.edited
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: the training data in")
    assert f"1 file changed ({EDITED})" in result.stderr and "--retrain" in result.stderr
    assert f"train {ENTRY}" not in result.stdout


def test_only_files_whose_size_or_time_changed_are_read(image_folder: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    layout = scan_data(data)
    known = listing(layout)
    assert all(stamp[2] == content_hash(data / name) for name, stamp in known.train.items())
    # A recorded hash that is not the file's: kept where the time is the recorded one (the bytes are not
    # read), replaced where the time changed.
    fake = "0" * 32
    planted = known.model_copy(update={"train": {name: (*stamp[:2], fake) for name, stamp in known.train.items()}})
    touched = layout.train[0]
    os.utime(data / touched, ns=(known.train[touched][1] + 10**9,) * 2)
    again = listing(layout, planted)
    assert again.train[touched][2] == content_hash(data / touched)
    assert all(stamp[2] == fake for name, stamp in again.train.items() if name != touched)
