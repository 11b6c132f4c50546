"""Results that stay true to their data, as a user meets them through the real CLI.

- A training split that cannot give every fit an optimizer step is refused before any work (the run
  and, with a data folder, the probe); a plan with micro-batch 1 is refused at load; each epoch's
  optimizer steps are recorded.
- The run folder remembers what it trained and predicted on: new test images are predicted again
  from the saved models, without training; changed training data is refused until ``--retrain``.
- Every fix an error gives is run here, and the error is gone afterwards.
- Every JSON file the project writes is strict JSON.
"""

from __future__ import annotations

import ast
import json
import math
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from planner_process import REPO, run_planner
from run_data import make_image_folder, plan_entry, write_plan

from planner.base.atomic import atomic_write_json
from planner.base.runfile import EpochRecord
from planner_trainer.one_try import describe_entry_error
from planner_trainer.training import NotTrained, check_every_fit_stepped

TRAIN = ("--no-pretrained", "--epochs", "1", "--device", "cpu")
ENTRY = "convnext_atto-crop40-32"


def strict_json(path: Path) -> object:
    """The file parsed as strict JSON: NaN, Infinity and -Infinity are refused."""
    def refuse(constant: str) -> None:
        raise ValueError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def one_entry_plan(path: Path, effective_batch_size: int = 8, micro_batch: int = 4,
                   predicted_peak_bytes: int = 200 * 2**20) -> Path:
    return write_plan(path, [plan_entry("convnext_atto", micro_batch=micro_batch,
                                        accum=effective_batch_size // micro_batch,
                                        predicted_peak_bytes=predicted_peak_bytes)], effective_batch_size)


def as_cli_arguments(command: str) -> list[str]:
    """A `planner ...` command an error message gave, as the arguments of ``run_planner``."""
    words = shlex.split(command)
    assert words[0] == "planner", command
    return words[1:]


def advised_command(message: str) -> str:
    """The `planner run ... --retrain` command at the end of an error message."""
    start = message.index("planner run ")
    return message[start:].strip().splitlines()[0]


# --- every fit trains, or the run refuses before it starts --------------------------------------------

@pytest.mark.parametrize("effective", [64, 32])
def test_a_training_split_smaller_than_the_effective_batch_is_refused_before_any_work(
        effective: int, image_folder: Path, tmp_path: Path) -> None:
    # 36 images, 6 held out: 30 to train on. At 64 fastai's loader gave no batch (train_loss nan); at 32
    # (2 × 16) the losses looked normal but GradientAccumulation(32) never stepped: 0 weights changed.
    plan = one_entry_plan(tmp_path / "plan.json", effective_batch_size=effective, micro_batch=effective // 2)
    result = run_planner("run", plan, "--data", image_folder, "--out", tmp_path / "run", *TRAIN)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: the training split holds 30 image(s)")
    assert f"fewer than the effective batch {effective}" in result.stderr
    assert "--effective-bs 16 or smaller" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_the_probe_refuses_an_effective_batch_its_data_folder_cannot_fill(image_folder: Path,
                                                                           tmp_path: Path) -> None:
    result = run_planner("probe", "--arch", "resnet18", "--size", "32", "--gpu-mem", "1G", "--device", "estimate",
                         "--data", image_folder, "--effective-bs", "64", "-o", tmp_path / "plan.json")
    assert result.returncode == 2, result.stderr
    assert "training split holds 30 image(s)" in result.stderr and "Probe with --effective-bs 16" in result.stderr
    assert "micro-batch" not in result.stdout  # refused before the first probe
    assert not (tmp_path / "plan.json").exists()


def test_an_effective_batch_of_one_is_refused_before_any_model_is_built(tmp_path: Path) -> None:
    result = run_planner("probe", "--arch", "resnet18", "--size", "32", "--gpu-mem", "1G", "--device", "estimate",
                         "--effective-bs", "1", "-o", tmp_path / "plan.json")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == ("error: --effective-bs 1 is too small: fastai's head has BatchNorm, which "
                                     "cannot train on single images; use --effective-bs 2 or more")
    assert result.stdout == ""  # no probe started


def test_a_plan_with_micro_batch_one_is_refused_at_load(image_folder: Path, tmp_path: Path) -> None:
    plan = one_entry_plan(tmp_path / "plan.json")
    data = json.loads(plan.read_text())
    data["entries"][0].update(micro_batch=1, accum=8)  # as a hand edit would; the probe never writes it
    plan.write_text(json.dumps(data))
    result = run_planner("run", plan, "--data", image_folder, "--out", tmp_path / "run", *TRAIN)
    assert result.returncode == 2, result.stderr
    assert "entries.0: Value error, micro_batch must be at least 2" in result.stderr
    assert "rerun" not in result.stderr and not (tmp_path / "run").exists()


def test_a_fit_without_an_optimizer_step_fails_the_entry(tmp_path: Path) -> None:
    from planner_trainer.try_spec import TrySpec

    epochs = [EpochRecord(epoch=0, phase="frozen", train_loss=None, valid_loss=1.0, error_rate=0.5, seconds=1.0,
                          optimizer_steps=0),
              EpochRecord(epoch=1, phase="unfrozen", train_loss=0.9, valid_loss=1.0, error_rate=0.5, seconds=1.0,
                          optimizer_steps=2)]
    spec = TrySpec(entry=plan_entry("resnet18"), accum=2, inputs=_inputs(effective_batch_size=8))
    with pytest.raises(NotTrained, match="the frozen fit made no optimizer step"):
        check_every_fit_stepped(epochs, n_train=6, spec=spec)
    stepped = [epoch.model_copy(update={"optimizer_steps": 1}) for epoch in epochs]
    check_every_fit_stepped(stepped, n_train=30, spec=spec)  # no error


def _inputs(effective_batch_size: int):
    from planner.base.runfile import RunSettings
    from planner_trainer.data import DataLayout
    from planner_trainer.split import Split
    from planner_trainer.try_spec import RunInputs

    layout = DataLayout(root=Path("."), train=("train_images/a/1.png",), vocab=("a", "b"), test=())
    split = Split(valid_pct=0.2, seed=0, n_train=1, valid=["train_images/a/1.png"])
    return RunInputs(effective_batch_size=effective_batch_size, layout=layout, split=split,
                     settings=RunSettings(epochs=1, lr=0.01, pretrained=False), device="cpu", seed=0)


def test_entry_errors_promise_a_rerun_only_where_one_can_end_otherwise() -> None:
    # huggingface_hub's offline error is an OSError, like an image's: the real one is met through the CLI in
    # test_offline_pretrained_weights_advise_a_fix_that_works; here its type name and text as it says them.
    offline = describe_entry_error(type("LocalEntryNotFoundError", (OSError,), {})(
        "An error happened while trying to locate the file on the Hub and we cannot find the requested files "
        "in the local cache."))
    assert "pretrained weights could not be downloaded" in offline  # not "an image could not be read"
    assert "--no-pretrained into another --out folder" in offline
    other = describe_entry_error(ValueError("Expected more than 1 value per channel when training"))
    assert "see run.log" in other and "rerun" not in other


# --- a run folder that remembers its data -------------------------------------------------------------

@dataclass
class History:
    """A run folder through its data's changes: each command's (exit code, stdout, stderr)."""

    data: Path
    plan: Path
    run_dir: Path
    first: tuple
    first_test_files: dict
    more_tests: tuple
    npz_after_more_tests: dict
    predicted_after_more_tests: tuple
    again: tuple
    new_class: tuple
    retrained: tuple
    run_after_retrain: dict


def cli(*args: str | Path) -> tuple[int, str, str]:
    result = run_planner(*args)
    return result.returncode, result.stdout, result.stderr


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    """Trained while test_images was empty; then test images added; then a rerun; then a class added;
    then the advised --retrain."""
    root = tmp_path_factory.mktemp("history")
    data = make_image_folder(root / "data", test=4)
    held_back = root / "test_images_later"
    shutil.move(data / "test_images", held_back)
    (data / "test_images").mkdir()
    # convnext_atto at 32 px needs about 60 MiB on the CPU: a plan that said 8 MiB is passed.
    plan, run_dir = one_entry_plan(root / "plan.json", predicted_peak_bytes=8 * 2**20), root / "run"
    command = ("run", plan, "--data", data, "--out", run_dir, *TRAIN)

    first = cli(*command)
    first_test_files = json.loads((run_dir / "run.json").read_text())["entries"][ENTRY]["test_files"]
    for path in held_back.iterdir():
        shutil.copy(path, data / "test_images" / path.name)
    more_tests = cli(*command)
    with np.load(run_dir / "preds" / f"{ENTRY}.npz") as npz:
        npz_after_more_tests = {name: npz[name] for name in npz.files}
    predicted = cli("predict", run_dir, data / "test_images", "--probs", "--uniform", "-o", root / "p.csv")
    again = cli(*command)
    (data / "train_images" / "c9").mkdir()
    for path in sorted((data / "train_images" / "c0").iterdir())[:3]:
        shutil.copy(path, data / "train_images" / "c9" / path.name)
    new_class = cli(*command)
    retrained = cli(*command, "--retrain")
    return History(data, plan, run_dir, first, first_test_files, more_tests, npz_after_more_tests,
                   (*predicted, (root / "p.csv").read_text() if predicted[0] == 0 else ""), again, new_class,
                   retrained, json.loads((run_dir / "run.json").read_text()))


def test_a_run_without_test_images_says_so(history: History) -> None:
    code, out, err = history.first
    assert code == 0, err
    assert "no test images in" in out and "rerun this command to predict them with the saved models" in out
    assert history.first_test_files["count"] == 0


def test_a_measured_peak_that_passed_the_plan_is_said_in_one_line(history: History) -> None:
    _code, out, _err = history.first
    (line,) = [line for line in out.splitlines() if "passed the plan's" in line]
    assert line.startswith(f"{ENTRY}: the measured peak ") and "passed the plan's 8 MiB (+" in line
    assert "predicted by the cpu meter" in line


def test_new_test_images_are_predicted_from_the_saved_models_without_training(history: History) -> None:
    code, out, err = history.more_tests
    assert code == 0, err
    assert f"re-predict {ENTRY}: test_images changed" in out and "no training" in out
    assert f"train {ENTRY}" not in out and f"skip {ENTRY}: finished earlier" in out
    arrays = history.npz_after_more_tests
    assert arrays["test_names"].tolist() == [f"img_{i}.png" for i in range(4)]
    assert arrays["test_probs"].shape == (4, 3) and np.allclose(arrays["test_probs"].sum(axis=1), 1, atol=1e-4)
    # The same probabilities as `planner predict` with the saved model (the run's seeded TTA).
    code, _out, err, csv_text = history.predicted_after_more_tests
    assert code == 0, err
    rows = [line.split(",") for line in csv_text.splitlines()[1:]]
    assert np.allclose(np.array([[float(x) for x in row[2:]] for row in rows]), arrays["test_probs"], atol=1e-5)


def test_a_rerun_with_unchanged_data_predicts_nothing_again(history: History) -> None:
    code, out, err = history.again
    assert code == 0, err
    assert "re-predict" not in out and f"skip {ENTRY}: finished earlier" in out


def test_changed_training_data_is_refused_until_retrain(history: History) -> None:
    code, out, err = history.new_class
    assert code == 2, err
    assert err.startswith("error: the training data in")
    assert "class c9 added, 3 files added (train_images/c9/img_0.png, train_images/c9/img_1.png, " in err
    assert "--retrain" in err and f"train {ENTRY}" not in out
    code, out, err = history.retrained  # the advised fix
    assert code == 0, err
    assert f"train {ENTRY}" in out
    assert history.run_after_retrain["inputs"]["classes"] == ["c0", "c1", "c2", "c9"]
    with np.load(history.run_dir / "preds" / f"{ENTRY}.npz") as npz:
        assert npz["vocab"].tolist() == ["c0", "c1", "c2", "c9"]


def test_every_fit_records_its_optimizer_steps(history: History) -> None:
    # 39 images (3 classes of 12, c9 of 3); held out 2+2+2+1: 32 to train on, micro-batch 4: 8 batches
    # an epoch, accum 2: 4 steps an epoch.
    epochs = history.run_after_retrain["entries"][ENTRY]["epochs"]
    assert [epoch["optimizer_steps"] for epoch in epochs] == [4, 4]


def test_every_json_file_of_a_run_folder_is_strict(history: History) -> None:
    for path in [history.plan, *history.run_dir.rglob("*.json")]:
        strict_json(path)


# --- the --no-save-models circle --------------------------------------------------------------------

def test_without_saved_models_the_advised_command_is_one_that_works(image_folder: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    plan, run_dir = one_entry_plan(tmp_path / "plan.json"), tmp_path / "run"
    code, _out, err = cli("run", plan, "--data", data, "--out", run_dir, *TRAIN, "--no-save-models")
    assert code == 0, err

    code, _out, err = cli("predict", run_dir, data / "test_images", "-o", tmp_path / "p.csv")
    assert code == 2 and "has no saved model" in err
    advice = advised_command(err)
    shutil.copy(data / "test_images" / "img_0.png", data / "test_images" / "img_new.png")
    code, out, err = cli("run", plan, "--data", data, "--out", run_dir, *TRAIN)  # the test set changed
    assert code == 2 and "trained without saving the model (--no-save-models)" in err
    assert advised_command(err) == advice  # both errors give the same command

    code, out, err = cli(*as_cli_arguments(advice), "--device", "cpu")
    assert code == 0, err
    assert f"train {ENTRY}" in out
    code, out, err = cli("predict", run_dir, data / "test_images", "-o", tmp_path / "p.csv")
    assert code == 0, err
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 1 + 7


def test_offline_pretrained_weights_advise_a_fix_that_works(image_folder: Path, tmp_path: Path) -> None:
    plan = one_entry_plan(tmp_path / "plan.json")
    offline = run_planner("run", plan, "--data", image_folder, "--out", tmp_path / "run", "--epochs", "1",
                          "--device", "cpu", env={"HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 1
    assert "train from random weights with --no-pretrained into another --out folder" in offline.stdout
    advised = run_planner("run", plan, "--data", image_folder, "--out", tmp_path / "other", *TRAIN,
                          env={"HF_HUB_OFFLINE": "1"})
    assert advised.returncode == 0, advised.stderr


# --- strict JSON ------------------------------------------------------------------------------------

def test_json_is_written_strict_with_null_for_missing_values(tmp_path: Path) -> None:
    path = atomic_write_json(tmp_path / "x.json", {"loss": math.nan, "rows": [1.5, math.inf, -math.inf], "n": 3})
    assert strict_json(path) == {"loss": None, "rows": [1.5, None, None], "n": 3}


def test_every_json_file_the_project_writes_goes_through_the_strict_writer() -> None:
    """No module but the atomic writer turns data into JSON text (the estimate store hashes its
    question with json.dumps, which writes no file)."""
    writers = {}
    for path in [*(REPO / "planner").rglob("*.py"), *(REPO / "trainer").rglob("*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("dump", "dumps") and \
                    isinstance(node.value, ast.Name) and node.value.id == "json":
                writers.setdefault(path.relative_to(REPO).as_posix(), set()).add(node.attr)
            if isinstance(node, ast.Attribute) and node.attr in ("model_dump_json", "to_json"):
                writers.setdefault(path.relative_to(REPO).as_posix(), set()).add(node.attr)
    assert writers == {"planner/base/atomic.py": {"dumps"}, "planner/probe/meters/estimate_store.py": {"dumps"}}
