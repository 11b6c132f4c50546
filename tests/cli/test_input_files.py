"""Every file a user hands in is checked before any work: one line naming the file, the problem, the fix.

Real files in every case (plans, models files, sample submissions, prediction files, images in a data
folder, storage paths); the loaders are the ones the commands use. The last tests go through the real
CLI: exit 2, one line, nothing written.
"""

from __future__ import annotations

import codecs
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from run_data import make_image_folder, small_plan
from tune_weights_data import informative_and_noise, write_run

from planner.base.budget import parse_budget
from planner.base.entries import load_models_file
from planner.base.errors import UserError
from planner.base.images import IMAGE_SUFFIXES
from planner.base.plan import load_plan
from planner.base.runfile import load_run
from planner.ensemble.preds import load_predictions
from planner.ensemble.storage import study_storage
from planner.ensemble.submission import load_sample
from planner.probe.probe_data import probe_data_from_folder
from planner_trainer.data import scan_data
from planner_trainer.split import load_split

PNG = b"\x89PNG\r\n\x1a\n" + bytes(32)


@pytest.fixture
def plan_text(tmp_path: Path) -> str:
    return small_plan(tmp_path / "good.json").read_text(encoding="utf-8")


def refusal(load, path: Path) -> str:
    with pytest.raises(UserError) as error:
        load(path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    return message


def test_a_plan_with_a_byte_order_mark_is_read(tmp_path: Path, plan_text: str) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(codecs.BOM_UTF8 + plan_text.encode())
    assert [entry.arch for entry in load_plan(path).entries] == ["resnet18", "convnext_atto"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty"),
        (PNG, "is a PNG image, not text"),
        (b"PK\x03\x04rest", "is a zip archive"),
        (codecs.BOM_UTF16_LE + "{}".encode("utf-16-le"), "is UTF-16 text, not UTF-8: save it as UTF-8, or "),
        (b"image_id,label\na.png,c0\n", "is not JSON (it looks like CSV)"),
        (b'{"version": 1,', "is not JSON: Expecting property name enclosed in double quotes at line 1 column 15"),
        (b"[1, 2]", "holds a JSON list, not an object"),
        (b'{"version": 2}', "has version 2, this planner reads version 1"),
    ],
)
def test_a_plan_in_the_wrong_format_is_refused_by_name(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(content)
    message = refusal(load_plan, path)
    assert expected in message and "planner probe" in message  # the problem and the fix


def test_a_latin1_plan_is_refused_with_save_as_utf8(tmp_path: Path, plan_text: str) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(plan_text.replace("resnet18-crop40-32", "résnet").encode("latin-1"))
    message = refusal(load_plan, path)
    assert "is not UTF-8 (byte 0xe9" in message and "save it as UTF-8" in message


def test_a_folder_or_a_missing_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "plan.json").mkdir()
    assert "is a folder, not a file" in refusal(load_plan, tmp_path / "plan.json")
    assert "not found" in refusal(load_plan, tmp_path / "nothing.json")


def test_a_wrong_type_names_the_field(tmp_path: Path, plan_text: str) -> None:
    data = json.loads(plan_text)
    data["entries"][1]["accum"] = "two"
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    assert "entries.1.accum" in refusal(load_plan, path)


def test_run_and_split_records_use_the_same_loader(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_bytes(b'{"version": 1, "data": ')
    assert "is not JSON" in refusal(lambda path: load_run(path.parent), tmp_path / "run.json")
    (tmp_path / "split.json").write_bytes('{"valid": ["é"]}'.encode("latin-1"))
    assert "save it as UTF-8" in refusal(load_split, tmp_path / "split.json")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('[[model]]\narch = "resnet18"\nsizes = [32]\n# café\n'.encode("latin-1"), "is not UTF-8"),
        (PNG, "is a PNG image"),
        (b"", "is empty"),
    ],
)
def test_a_models_file_is_read_as_utf8_text(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "models.toml"
    path.write_bytes(content)
    assert expected in refusal(load_models_file, path)
    path.write_bytes(codecs.BOM_UTF8 + b'[[model]]\narch = "resnet18"\nsizes = [32]\n')
    assert [entry.arch for entry in load_models_file(path)] == ["resnet18"]


def test_a_sample_submission_with_a_bom_is_read_and_one_in_latin1_refused(tmp_path: Path) -> None:
    sample = tmp_path / "sample_submission.csv"
    sample.write_bytes(codecs.BOM_UTF8 + b"image_id,label\nt0.png,c0\n")
    assert load_sample(tmp_path, ("t0.png",)).header == ("image_id", "label")  # the BOM is not in the column name
    sample.write_bytes("imagé_id,label\nt0.png,c0\n".encode("latin-1"))
    assert "save it as UTF-8" in refusal(lambda path: load_sample(path.parent, ("t0.png",)), sample)
    sample.unlink()
    sample.mkdir()
    assert "is a folder" in refusal(lambda path: load_sample(path.parent, ("t0.png",)), sample)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda path: path.write_bytes(PNG), "is a PNG image, not a numpy .npz"),
        (lambda path: path.write_bytes(b""), "is empty"),
        (lambda path: path.write_text("a,b\n"), "is not a zip archive, not a numpy .npz"),
        (lambda path: path.mkdir(), "is a folder"),
    ],
)
def test_a_prediction_file_that_is_not_an_npz_is_named(tmp_path: Path, make, expected: str) -> None:
    probs, targets = informative_and_noise(rows=40)
    run = write_run(tmp_path / "run", ["a", "b"], probs, targets)
    make(run / "preds" / "c.npz")
    message = refusal(lambda path: load_predictions(run), run / "preds" / "c.npz")
    assert expected in message and "rerun planner run" in message


def test_one_image_rule_for_probe_and_run(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", per_class=3, test=2)
    for path in sorted((data / "train_images").rglob("*.png"))[::2]:
        Image.open(path).save(path.with_suffix(".webp"))
        path.unlink()
    (data / "train_images" / "c0" / "notes.txt").write_text("not an image")
    run_files = [data / name for name in scan_data(data).train]
    probe_files = list(probe_data_from_folder(data).files)
    assert run_files == probe_files and len(run_files) == 9
    assert {path.suffix for path in run_files} == {".png", ".webp"} <= IMAGE_SUFFIXES


def test_a_truncated_jpeg_is_refused_before_training(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", per_class=3, test=1)
    victim = data / "train_images" / "c1" / "img_4.png"
    jpeg = victim.with_suffix(".jpg")
    Image.open(victim).save(jpeg, quality=95)
    victim.unlink()
    whole = jpeg.read_bytes()
    jpeg.write_bytes(whole[: len(whole) // 2])
    with Image.open(jpeg) as image:
        image.verify()  # the header check alone passes
    with pytest.raises(UserError, match=r"cannot read image train_images/c1/img_4\.jpg \(image file is truncated"):
        scan_data(data)


def test_a_data_folder_that_is_a_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("x")
    for load in (scan_data, probe_data_from_folder):
        assert "is a file, not a folder" in refusal(load, path)


def test_a_bare_budget_number_is_refused_naming_the_unit() -> None:
    with pytest.raises(UserError, match="has no unit, so it means 16 bytes: write the unit, for example 16G"):
        parse_budget("16")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("missing/x.db", "does not exist: create it or give another path"),
        ("adir", "is a folder: name a database file in it"),
        ("notes.csv", "is not an SQLite database"),
    ],
)
def test_a_sqlite_storage_path_is_checked_before_anything_is_written(tmp_path: Path, name: str,
                                                                     expected: str) -> None:
    (tmp_path / "adir").mkdir()
    (tmp_path / "notes.csv").write_text("a,b\n")
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(UserError, match=expected):
        study_storage(tmp_path, f"sqlite:///{tmp_path / name}")
    assert sorted(tmp_path.rglob("*")) == before


def test_bad_inputs_through_the_cli_exit_2_with_one_line_and_write_nothing(planner_cli, tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", per_class=2, test=1)
    (tmp_path / "plan.json").write_bytes(PNG)
    (tmp_path / "models.toml").write_bytes("# café\n".encode("latin-1"))
    probs, targets = informative_and_noise(rows=40)
    run = write_run(tmp_path / "run", ["a", "b"], probs, targets)
    shutil.copy(data / "sample_submission.csv", tmp_path / "sample.csv")
    (data / "sample_submission.csv").write_bytes(PNG)
    (tmp_path / "out").mkdir()
    plan = small_plan(tmp_path / "good_plan.json")
    broken = make_image_folder(tmp_path / "broken", per_class=2, test=1)
    (broken / "train_images" / "c1" / "img_2.png").write_bytes(PNG)
    before = sorted(tmp_path.rglob("*"))
    commands = {
        "is a PNG image, not text": ("run", tmp_path / "plan.json", "--data", data, "--out", tmp_path / "r"),
        "is not UTF-8": ("probe", "--gpu-mem", "1G", "--models", tmp_path / "models.toml", "-o", tmp_path / "p.json"),
        "has no unit": ("probe", "--gpu-mem", "16", "-o", tmp_path / "p.json"),
        "sample_submission.csv is a PNG image": ("tune-weights", run, "--data", data, "--trials", "5"),
        "is a folder: give a file name": ("probe", "--gpu-mem", "1G", "-o", tmp_path / "out"),
        "cannot read image train_images/c1/img_2.png": ("run", plan, "--data", broken, "--out", tmp_path / "r2"),
    }
    for expected, args in commands.items():
        done = planner_cli(*args)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: ") and done.stderr.strip().count("\n") == 0, done.stderr
        assert expected in done.stderr
    assert sorted(tmp_path.rglob("*")) == before
