"""sample_submission.csv in the shapes Kaggle gives it: ids without extension, the id column not first.

The sample's ids are matched to the predicted test files by name or, when unambiguous, by name without
extension; the submission keeps the ids as written. A sample that names no test file, or an id that fits
two files, is refused in one line that says what to do. Real files throughout; the CLI test runs
tune-weights on a synthetic run folder (no training).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from planner_process import run_planner
from tune_weights_data import informative_and_noise, softmax, write_run

from planner.base.errors import UserError
from planner.ensemble.submission import load_sample, write_submission

TEST_FILES = ("img_0.png", "img_1.png", "img_2.png")


def sample_in(folder: Path, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "sample_submission.csv").write_text(text)
    return folder


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def refusal(data: Path, test_names: tuple[str, ...] = TEST_FILES) -> str:
    with pytest.raises(UserError) as caught:
        load_sample(data, test_names)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_ids_without_extension_in_the_second_column_get_the_labels_and_stay_as_written(tmp_path: Path) -> None:
    """The issue's sample (label first, ids without extension) through the real CLI: the submission is
    the sample's rows in its order, each label the prediction of the file the id names."""
    probs, targets = informative_and_noise(rows=60, classes=3)
    # Both models are sure that img_<k>.png is class k; written in another order than the sample's.
    order = [2, 0, 1]
    test_probs = np.stack([softmax(8.0 * np.eye(3)[order])] * 2)
    run = write_run(tmp_path / "run", ["a", "b"], probs, targets, test_probs, [f"img_{k}.png" for k in order])
    data = sample_in(tmp_path / "data", "label,image_id\nc0,img_1\nc0,img_0\nc0,img_2\n")
    done = run_planner("tune-weights", run, "--data", data, "--trials", "3", "--folds", "2", timeout=120)
    assert done.returncode == 0, done.stderr
    assert read_rows(run / "submission.csv") == [["label", "image_id"], ["c1", "img_1"], ["c0", "img_0"],
                                                 ["c2", "img_2"]]


@pytest.mark.parametrize(
    ("text", "ids", "files"),
    [
        ("image_id,label\nimg_2,x\nimg_0,x\n", ["img_2", "img_0"], ["img_2.png", "img_0.png"]),
        ("label,image_id\nx,img_1.png\nx,img_0\n", ["img_1.png", "img_0"], ["img_1.png", "img_0.png"]),
        ("row,label,file\n1,x,img_0\n2,x,img_2\n", ["img_0", "img_2"], ["img_0.png", "img_2.png"]),
    ],
    ids=["no extension", "swapped columns", "third column"],
)
def test_the_id_column_is_found_by_its_values(tmp_path: Path, text: str, ids: list[str], files: list[str]) -> None:
    sample = load_sample(sample_in(tmp_path, text), TEST_FILES)
    assert [row[sample.id_column] for row in sample.rows] == ids
    assert list(sample.files) == files and sample.header[sample.label_column] == "label"
    path = write_submission(tmp_path / "submission.csv", sample, TEST_FILES, ["c0", "c1", "c2"])
    rows = read_rows(path)
    assert [row[sample.id_column] for row in rows[1:]] == ids
    assert [row[sample.label_column] for row in rows[1:]] == [f"c{name[4]}" for name in files]


def test_class_names_that_are_file_stems_do_not_take_the_id_column(tmp_path: Path) -> None:
    """Test files 0.png, 1.png, 2.png, classes 0 and 1: the label column (all "0") names one file, the id
    column three; the id column wins though it comes second."""
    sample = load_sample(sample_in(tmp_path, "label,id\n0,0\n0,1\n0,2\n"), ("0.png", "1.png", "2.png"))
    assert (sample.id_column, sample.label_column) == (1, 0)
    assert sample.files == ("0.png", "1.png", "2.png")


def test_an_id_that_fits_two_test_files_is_refused_naming_both(tmp_path: Path) -> None:
    message = refusal(sample_in(tmp_path, "image_id,label\na,x\nb,x\n"), ("a.jpg", "a.png", "b.png"))
    assert "id a in" in message and "a.jpg, a.png" in message and "extension" in message


def test_a_sample_that_names_no_test_file_shows_an_id_and_a_file(tmp_path: Path) -> None:
    message = refusal(sample_in(tmp_path, "image_id,label\n1001,x\n1002,x\n"))
    assert "no column of" in message and "names the test files" in message
    assert "1001" in message and "img_0.png" in message and "give the sample_submission.csv" in message
    assert "predict the whole test folder" not in message


def test_ids_that_match_no_test_file_are_still_counted_and_named(tmp_path: Path) -> None:
    message = refusal(sample_in(tmp_path, "image_id,label\nimg_0,x\nimg_7,x\nimg_8.png,x\n"))
    assert message.startswith("2 of the 3 test file(s) listed in") and "(first: img_7)" in message
    assert "no prediction" in message and "predict the whole test folder" not in message


def test_a_sample_with_only_its_header_is_refused_while_there_are_test_predictions(tmp_path: Path) -> None:
    data = sample_in(tmp_path / "data", "image_id,label\n")
    assert refusal(data) == (f"sample submission {data / 'sample_submission.csv'} lists no test file (only its "
                             "header), the run predicted 3: give the competition's sample_submission.csv, or remove "
                             "it to write one row per test image")
    assert load_sample(data, ()).rows == ()  # no test images: an empty submission is right


def test_a_sample_in_another_delimiter_is_refused_with_the_fix(tmp_path: Path) -> None:
    data = sample_in(tmp_path / "data", "image_id;label\nimg_0.png;c0\n")
    assert refusal(data).endswith("got ['image_id;label']: give the competition's sample_submission.csv, "
                                  "comma-separated (image_id,label)")
