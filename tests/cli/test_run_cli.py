"""`planner run` end to end, as a user runs it: real fastai training on the CPU in a subprocess.

One run is interrupted (SIGINT) after its first entry's predictions appear, resumed, then rerun; the
tests read what those runs left. Bad inputs must give one line on stderr and exit 2.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from planner_process import REPO
from run_data import make_image_folder, small_plan

FIRST, SECOND = "resnet18-crop40-32", "convnext_atto-crop40-32"
TRAIN_OPTIONS = ["--no-pretrained", "--epochs", "1", "--device", "cpu"]


def default_sigint() -> None:
    """Ctrl-C's default in the child: a shell without job control starts background jobs (e.g. a
    suite run with ``&``) with SIGINT ignored, which Python and so planner would inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def planner(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "planner", *map(str, args)], cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=default_sigint,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})},
    )


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=600)
    return process.returncode, out, err


@dataclass
class Runs:
    """What the interrupted, resumed and repeated runs left."""

    run_dir: Path
    interrupted: tuple[int, str, str]
    after_interrupt: dict
    files_after_interrupt: list[str]
    models_after_interrupt: list[str]
    first_npz_bytes: bytes
    resumed: tuple[int, str, str]
    repeated: tuple[int, str, str]
    repeated_seconds: float


def first_is_finished(run_dir: Path) -> bool:
    """Whether run.json (written atomically: never half a file) says the first entry is finished."""
    path = run_dir / "run.json"
    entry = json.loads(path.read_text())["entries"].get(FIRST, {}) if path.exists() else {}
    return entry.get("status") == "finished"


@pytest.fixture(scope="module")
def runs(image_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    root = tmp_path_factory.mktemp("cli")
    plan, run_dir = small_plan(root / "plan.json"), root / "run"
    command = ("run", plan, "--data", image_folder, "--out", run_dir, *TRAIN_OPTIONS)

    process = planner(*command)
    while not first_is_finished(run_dir) and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # Ctrl-C while the second entry trains
    interrupted = finish(process)
    after_interrupt = json.loads((run_dir / "run.json").read_text())
    files_after_interrupt = sorted(path.name for path in (run_dir / "preds").iterdir())
    models_after_interrupt = sorted(path.name for path in (run_dir / "models").iterdir())
    first_npz_bytes = (run_dir / "preds" / f"{FIRST}.npz").read_bytes()

    resumed = finish(planner(*command))
    started = time.perf_counter()
    repeated = finish(planner(*command))
    return Runs(run_dir, interrupted, after_interrupt, files_after_interrupt, models_after_interrupt,
                first_npz_bytes, resumed, repeated, time.perf_counter() - started)


def test_interrupt_keeps_the_finished_entry_and_no_partial_file(runs: Runs) -> None:
    code, out, err = runs.interrupted
    assert code == 130, err
    assert err.strip() == ("interrupted (Ctrl-C): finished entries are kept; rerun the same command to resume")
    assert f"interrupted {SECOND}: rerun the same command to resume" in out
    entries = runs.after_interrupt["entries"]
    assert entries[FIRST]["status"] == "finished"
    assert entries[SECOND]["status"] == "interrupted"  # not "running" for ever
    assert runs.files_after_interrupt == [f"{FIRST}.npz"]  # nothing of the second, not even a temp file
    assert runs.models_after_interrupt == [f"{FIRST}.json", f"{FIRST}.safetensors"]  # the same for models


def test_resume_trains_only_the_unfinished_entry(runs: Runs) -> None:
    code, out, err = runs.resumed
    assert code == 0, err
    assert f"skip {FIRST}" in out
    assert f"train {SECOND}" in out and f"train {FIRST}" not in out
    assert (runs.run_dir / "preds" / f"{FIRST}.npz").read_bytes() == runs.first_npz_bytes


def test_rerun_skips_every_finished_entry(runs: Runs) -> None:
    code, out, err = runs.repeated
    assert code == 0, err
    assert f"skip {FIRST}" in out and f"skip {SECOND}" in out
    assert "train " not in out and "epoch" not in out
    assert runs.repeated_seconds < 60  # no training, no fastai import: a few seconds


def test_predictions_share_rows_vocab_and_are_probabilities(runs: Runs, image_folder: Path) -> None:
    split = json.loads((runs.run_dir / "split.json").read_text())
    files = [np.load(runs.run_dir / "preds" / f"{name}.npz", allow_pickle=False) for name in (FIRST, SECOND)]
    for npz in files:
        assert npz["valid_names"].tolist() == split["valid"]
        assert npz["vocab"].tolist() == ["c0", "c1", "c2"]
        assert npz["test_names"].tolist() == sorted(p.name for p in (image_folder / "test_images").iterdir())
        targets = [npz["vocab"].tolist().index(name.split("/")[1]) for name in split["valid"]]
        assert npz["valid_targets"].tolist() == targets
        for split_name in ("valid", "test"):
            probs, names = npz[f"{split_name}_probs"], npz[f"{split_name}_names"]
            assert probs.dtype == np.float32 and probs.shape == (len(names), 3)
            assert np.allclose(probs.sum(axis=1), 1, atol=1e-5) and (probs >= 0).all()
    assert files[0]["valid_targets"].tolist() == files[1]["valid_targets"].tolist()


def test_run_json_records_measured_peaks_beside_predictions(runs: Runs, image_folder: Path) -> None:
    run = json.loads((runs.run_dir / "run.json").read_text())
    assert run["data"] == str(image_folder.resolve())
    assert run["settings"] == {"epochs": 1, "lr": 0.01, "pretrained": False, "tta_n": 4, "tta_beta": 0.25}
    for name in (FIRST, SECOND):
        entry = run["entries"][name]
        assert entry["status"] == "finished" and entry["predictions"] == f"preds/{name}.npz"
        assert entry["device"] == "cpu" and entry["precision"] == "fp32" and entry["predicted_on"] == "cpu"
        assert entry["predicted_peak_bytes"] == 200 * 2**20
        memory = entry["memory"]
        assert memory["meter"] == "cpu" and memory["sampled_batches"] > 0
        assert memory["peak_bytes"] == max(memory["phase_peaks"].values())
        assert memory["phase_peaks"]["unfrozen_train"] > memory["phase_peaks"]["frozen_train"]
        assert [epoch["phase"] for epoch in entry["epochs"]] == ["frozen", "unfrozen"]
        assert 0 <= entry["metrics"]["error_rate"] <= 1 and entry["metrics"]["n_valid"] == 6
    log = (runs.run_dir / "run.log").read_text()
    assert f"done {FIRST}" in log and f"skip {FIRST}" in log


def test_output_is_plain_lines_in_a_ci_log(runs: Runs) -> None:
    _code, out, _err = runs.resumed
    assert "\r" not in out
    assert f"{SECOND} epoch 2/2 (unfrozen)" in out


def test_a_different_split_into_the_same_folder_is_refused(runs: Runs, image_folder: Path) -> None:
    plan = runs.run_dir.parent / "plan.json"
    code, _out, err = finish(planner("run", plan, "--data", image_folder, "--out", runs.run_dir,
                                    *TRAIN_OPTIONS, "--valid-pct", "0.3"))
    assert code == 2
    assert err.strip().count("\n") == 0 and "split.json" in err and "--valid-pct 0.3" in err


def one_line_error(*args: str | Path, env: dict[str, str] | None = None) -> str:
    code, _out, err = finish(planner(*args, env=env))
    assert code == 2, err
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    return err.strip()


@pytest.fixture
def data_copy(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "data", per_class=3, test=1)


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("corrupt_image", "cannot read image train_images/c1/img_3.png"),
        ("empty_class", "class folder train_images/c9 holds no image"),
        ("no_train_images", "has no train_images folder"),
        ("plan_version", "has version 2"),
        ("plan_field", "entries.0.micro_batch"),
    ],
)
def test_bad_inputs_get_one_line_and_exit_2(
    breakage: str, expected: str, data_copy: Path, tmp_path: Path
) -> None:
    plan = small_plan(tmp_path / "plan.json")
    if breakage == "corrupt_image":
        (data_copy / "train_images" / "c1" / "img_3.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    elif breakage == "empty_class":
        (data_copy / "train_images" / "c9").mkdir()
    elif breakage == "no_train_images":
        (data_copy / "train_images").rename(data_copy / "images")
    else:
        data = json.loads(plan.read_text())
        if breakage == "plan_version":
            data["version"] = 2
        else:
            data["entries"][0]["micro_batch"] = "four"
        plan.write_text(json.dumps(data))
    error = one_line_error("run", plan, "--data", data_copy, "--out", tmp_path / "run", *TRAIN_OPTIONS)
    assert expected in error
    assert not (tmp_path / "run" / "run.json").exists()


