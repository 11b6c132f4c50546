"""Saved models and `planner predict`, on a real two-entry run (resnet18 and convnext_atto, 1 epoch, CPU).

The run and tune-weights run once through the real CLI; predict must reproduce the run's test
probabilities (TTA, to float tolerance) and its submission, the held-out TTA probabilities and plain
log loss too, leave out a corrupt image with one line, and refuse a weights file with a flipped byte.
A third entry trained into a copy of the tuned run (timm's tiny ``test_resnet``) must not be left out
by the old weights.json without a word: predict refuses them unless told ``--uniform``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from planner_process import run_planner
from run_data import plan_entry, small_plan, write_plan

from planner_trainer.predictions import log_loss

ENTRIES = ("convnext_atto-crop40-32", "resnet18-crop40-32")
TOLERANCE = 1e-5


def planner(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_planner(*args)


@dataclass(frozen=True)
class Run:
    run_dir: Path
    data: Path


@pytest.fixture(scope="module")
def run(image_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("predict")
    run_dir = root / "run"
    trained = planner("run", small_plan(root / "plan.json"), "--data", image_folder, "--out", run_dir,
                      "--no-pretrained", "--epochs", "1", "--device", "cpu")
    assert trained.returncode == 0, trained.stderr
    tuned = planner("tune-weights", run_dir, "--trials", "10", "--folds", "2")
    assert tuned.returncode == 0, tuned.stderr
    return Run(run_dir, image_folder)


@pytest.fixture(scope="module")
def grown(run: Run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tuned run folder with a third entry trained into it after tune-weights ran."""
    root = tmp_path_factory.mktemp("grown")
    run_dir = root / "run"
    shutil.copytree(run.run_dir, run_dir)
    plan = write_plan(root / "plan.json", [plan_entry("resnet18"), plan_entry("convnext_atto"),
                                           plan_entry("test_resnet")])
    trained = planner("run", plan, "--data", run.data, "--out", run_dir, "--no-pretrained", "--epochs", "1",
                      "--device", "cpu")
    assert trained.returncode == 0, trained.stderr
    return run_dir


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def npz(run: Run, entry: str) -> dict[str, np.ndarray]:
    with np.load(run.run_dir / "preds" / f"{entry}.npz", allow_pickle=False) as arrays:
        return {key: arrays[key] for key in arrays.files}


def test_run_json_records_each_saved_model_with_size_and_checksum(run: Run) -> None:
    record = json.loads((run.run_dir / "run.json").read_text())
    for entry in ENTRIES:
        model = record["entries"][entry]["model"]
        data = (run.run_dir / model["weights"]).read_bytes()
        assert model["weights"] == f"models/{entry}.safetensors"
        assert (model["bytes"], model["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
        recipe = json.loads((run.run_dir / model["recipe"]).read_text())
        assert recipe["arch"] == entry.split("-")[0] and recipe["vocab"] == ["c0", "c1", "c2"]
        assert recipe["grad_checkpointing"] is False and recipe["precision"] == "fp32"
        assert recipe["batch"]["size"] == [32, 32] and recipe["item"] == {"resize": 40, "method": "crop"}
        assert recipe["tta"]["batch_size"] == 4 and set(recipe["versions"]) >= {"torch", "timm", "fastai"}


def test_predicting_the_test_folder_reproduces_the_run_and_its_submission(run: Run, tmp_path: Path) -> None:
    out = tmp_path / "predictions.csv"
    result = planner("predict", run.run_dir, run.data / "test_images", "--probs", "-o", out, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    rows = read_csv(out)
    submission = {row["image_id"]: row["label"] for row in read_csv(run.run_dir / "submission.csv")}
    assert {row["image_id"]: row["label"] for row in rows} == submission

    weights = json.loads((run.run_dir / "weights.json").read_text())["weights"]
    expected = sum(weight * npz(run, entry)["test_probs"].astype(np.float64) for entry, weight in weights.items())
    names = npz(run, ENTRIES[0])["test_names"].tolist()
    assert [row["image_id"] for row in rows] == names
    predicted = np.array([[float(row[label]) for label in ("c0", "c1", "c2")] for row in rows])
    difference = np.abs(predicted - expected).max()
    print(f"agreement (TTA, ensemble, test folder): max |difference| {difference:.2e}")
    assert difference < TOLERANCE


def test_each_saved_model_reproduces_its_test_and_held_out_tta_and_plain_scores(run: Run) -> None:
    from planner_trainer.options import PredictOptions
    from planner_trainer.predict import predict

    test = predict(run.run_dir, [run.data / "test_images"], options=PredictOptions(device="cpu"))
    split = json.loads((run.run_dir / "split.json").read_text())
    held_out = [run.data / name for name in split["valid"]]
    valid = predict(run.run_dir, held_out, options=PredictOptions(device="cpu"))
    plain = predict(run.run_dir, held_out, options=PredictOptions(device="cpu", tta=False))
    metrics = json.loads((run.run_dir / "run.json").read_text())
    for entry in ENTRIES:
        arrays = npz(run, entry)
        test_gap = np.abs(test.entry_probs[entry] - arrays["test_probs"]).max()
        valid_gap = np.abs(valid.entry_probs[entry] - arrays["valid_probs"]).max()
        plain_gap = abs(log_loss(plain.entry_probs[entry], arrays["valid_targets"])
                        - metrics["entries"][entry]["metrics"]["log_loss_no_tta"])
        print(f"{entry}: test TTA {test_gap:.2e}, held-out TTA {valid_gap:.2e}, plain log loss {plain_gap:.2e}")
        assert test_gap < TOLERANCE and valid_gap < TOLERANCE and plain_gap < TOLERANCE


def test_a_corrupt_image_is_listed_and_the_others_predicted(run: Run, tmp_path: Path) -> None:
    folder = tmp_path / "new"
    folder.mkdir()
    for name in ("img_0.png", "img_1.png", "img_2.png"):
        shutil.copy(run.data / "test_images" / name, folder / f"new_{name}")
    (folder / "broken.png").write_bytes((run.data / "test_images" / "img_3.png").read_bytes()[:60])
    out = tmp_path / "new.csv"
    result = planner("predict", run.run_dir, folder, "--no-tta", "-o", out, "--device", "cpu")
    assert result.returncode == 1, result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: cannot read image") and "broken.png" in errors[0]
    assert "Traceback" not in result.stderr
    rows = read_csv(out)
    assert [row["image_id"] for row in rows] == ["new_img_0.png", "new_img_1.png", "new_img_2.png"]
    assert all(row["label"] in ("c0", "c1", "c2") for row in rows)


def test_a_weights_file_with_a_flipped_byte_is_refused(run: Run, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run.run_dir, copy)
    weights = json.loads((copy / "weights.json").read_text())["weights"]
    damaged = max(weights, key=weights.get)  # an entry predict loads (zero weights are left out)
    path = copy / "models" / f"{damaged}.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    result = planner("predict", copy, run.data / "test_images", "-o", tmp_path / "p.csv", "--device", "cpu")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "fails its checksum" in result.stderr and damaged in result.stderr
    assert not (tmp_path / "p.csv").exists()


def test_load_model_gives_a_fastai_learner_that_predicts(run: Run) -> None:
    from planner_trainer.saved_model import load_model

    learn = load_model(run.run_dir, ENTRIES[1])
    label, index, probs = learn.predict(run.data / "test_images" / "img_0.png")
    assert label == ("c0", "c1", "c2")[int(index)] == ("c0", "c1", "c2")[int(probs.argmax())]
    assert abs(float(probs.sum()) - 1) < 1e-5
    assert sum(p.numel() for p in learn.model.parameters()) == json.loads(
        (run.run_dir / "models" / f"{ENTRIES[1]}.json").read_text())["parameters"]


def test_weights_tuned_before_an_entry_was_trained_are_refused_naming_it(grown: Path, run: Run,
                                                                          tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    result = planner("predict", grown, run.data / "test_images", "-o", out, "--device", "cpu")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: weights.json leaves out test_resnet-crop40-32 ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"planner tune-weights {grown}" in result.stderr and "--uniform" in result.stderr
    assert not out.exists()


def test_uniform_averages_every_saved_model_ignoring_weights_json(grown: Path, run: Run, tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    result = planner("predict", grown, run.data / "test_images", "--uniform", "--no-tta", "-o", out,
                     "--device", "cpu")
    assert result.returncode == 0, result.stderr
    every = sorted((*ENTRIES, "test_resnet-crop40-32"))
    assert "weights (uniform): " + ", ".join(f"{entry} 0.333" for entry in every) in result.stdout
    assert [row["image_id"] for row in read_csv(out)] == [f"img_{i}.png" for i in range(6)]


def test_uniform_needs_no_weights_json_and_ignores_given_weights(run: Run) -> None:
    from planner_trainer.options import PredictOptions
    from planner_trainer.predict import predict

    image = [run.data / "test_images" / "img_0.png"]
    for weights in (None, {"not-an-entry": 1.0}):
        result = predict(run.run_dir, image, weights, PredictOptions(device="cpu", tta=False, uniform=True))
        assert result.weights_source == "uniform" and result.weights == {entry: 0.5 for entry in ENTRIES}


def test_weights_on_an_entry_without_a_saved_model_are_refused_before_any_model_loads(run: Run,
                                                                                      tmp_path: Path) -> None:
    """As after ``planner run --no-save-models`` for one entry: run.json records no model for it."""
    from planner.base.errors import UserError
    from planner_trainer.options import PredictOptions
    from planner_trainer.predict import predict

    copy = tmp_path / "run"
    shutil.copytree(run.run_dir, copy, ignore=shutil.ignore_patterns("models"))
    record = json.loads((copy / "run.json").read_text())
    record["entries"][ENTRIES[1]]["model"] = None
    (copy / "run.json").write_text(json.dumps(record))
    weights = {ENTRIES[0]: 0.5, ENTRIES[1]: 0.5}
    with pytest.raises(UserError) as caught:
        predict(copy, [run.data / "test_images"], weights, PredictOptions(device="cpu"))
    message = str(caught.value)
    assert message.startswith(f"weights.json weighs entries with no saved model in {copy}: {ENTRIES[1]} (")
    assert "--uniform" in message and "\n" not in message


def test_a_broken_link_is_listed_with_the_unreadable_images_and_a_valid_link_predicted(run: Run,
                                                                                       tmp_path: Path) -> None:
    from planner_trainer.options import PredictOptions
    from planner_trainer.predict import predict

    folder = tmp_path / "linked"
    folder.mkdir()
    (folder / "a.png").symlink_to(run.data / "test_images" / "img_0.png")
    (folder / "b.png").symlink_to(tmp_path / "gone.png")
    result = predict(run.run_dir, [folder], options=PredictOptions(device="cpu", tta=False))
    assert result.paths == (folder / "a.png",) and result.names == ("a.png",)  # the link's own name
    assert [miss.path for miss in result.unreadable] == [folder / "b.png"]
    assert result.unreadable[0].reason == f"a broken symbolic link: its target {tmp_path / 'gone.png'} does not exist"


def test_a_link_and_its_target_are_two_images_each_named_by_its_own_name(tmp_path: Path) -> None:
    from PIL import Image

    from planner_trainer.predict import list_images

    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    (tmp_path / "alias.png").symlink_to(tmp_path / "photo.png")
    given = [tmp_path, tmp_path / "photo.png", tmp_path / "sub" / ".." / "alias.png"]
    (tmp_path / "sub").mkdir()
    assert list_images(given) == [tmp_path / "alias.png", tmp_path / "photo.png"]  # each file once
