"""The data folder's images checked before training: every unreadable image and every broken symbolic
link named at once, in one line, so that one rerun finds them all fixed; a link to an image is an image.

Real files and links in temporary folders; the refusals users meet go through the real CLI, before any
training starts.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from planner_process import run_planner
from run_data import make_image_folder, small_plan

from planner.base.errors import UserError
from planner.probe.probe_data import probe_data_from_folder
from planner_trainer.data import scan_data


def refusal(data: Path) -> str:
    with pytest.raises(UserError) as caught:
        scan_data(data)
    message = str(caught.value)
    assert "\n" not in message
    return message


def linked_copy(data: Path, elsewhere: Path) -> Path:
    """``data`` with every image moved to ``elsewhere`` and a symbolic link left in its place, as when a
    Kaggle or Colab data folder links its images from ``/kaggle/input``."""
    for image in sorted(data.rglob("*.png")):
        target = elsewhere / image.relative_to(data)
        target.parent.mkdir(parents=True, exist_ok=True)
        image.rename(target)
        image.symlink_to(target)
    return data


def test_every_unreadable_image_is_named_at_once(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", per_class=3, test=2)
    for name in ("train_images/c0/img_1.png", "train_images/c2/img_8.png", "test_images/img_1.png"):
        (data / name).write_bytes(b"\x89PNG\r\n\x1a\n not really")
    message = refusal(data)
    assert message.startswith("cannot read 3 images: train_images/c0/img_1.png, train_images/c2/img_8.png, "
                              "test_images/img_1.png (the first: ")
    assert message.endswith("): replace or remove them")


def test_many_unreadable_images_name_the_first_five_and_the_count(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", per_class=3, test=2)
    for index in range(8):
        (data / "train_images" / f"c{index // 3}" / f"img_{index}.png").write_bytes(b"")
    message = refusal(data)
    shown = ", ".join(f"train_images/c{index // 3}/img_{index}.png" for index in range(5))
    assert message.startswith(f"cannot read 8 images: {shown} and 3 more (the first: ")


def test_linked_images_are_images_and_broken_links_are_refused_through_the_cli(tmp_path: Path) -> None:
    data = linked_copy(make_image_folder(tmp_path / "data", per_class=3, test=2), tmp_path / "input")
    layout = scan_data(data)
    assert len(layout.train) == 9 and layout.test == ("img_0.png", "img_1.png")
    assert len(probe_data_from_folder(data).files) == 9

    for name in ("train_images/c0/img_0.png", "train_images/c1/img_4.png", "test_images/img_1.png"):
        (tmp_path / "input" / name).unlink()
    done = run_planner("run", small_plan(tmp_path / "plan.json"), "--data", data, "--out", tmp_path / "run",
                       "--device", "cpu", timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: 3 broken symbolic links in {data}: train_images/c0/img_0.png, "
                                  "train_images/c1/img_4.png, test_images/img_1.png (the first points to "
                                  f"{tmp_path / 'input' / 'train_images/c0/img_0.png'}, which does not exist): "
                                  "restore their targets or remove the links")
    assert not (tmp_path / "run").exists()


def test_the_probe_refuses_broken_links_too(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", per_class=3, test=1)
    (data / "train_images" / "c1" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (data / "train_images" / "c3").symlink_to(tmp_path / "no_folder")
    with pytest.raises(UserError, match=r"train_images/c3 is a broken symbolic link \(its target .*no_folder does "
                                        r"not exist\): restore the target or remove the link"):
        probe_data_from_folder(data)
    os.unlink(data / "train_images" / "c3")
    with pytest.raises(UserError, match=r"c1/gone\.jpg is a broken symbolic link"):
        probe_data_from_folder(data)


def test_the_probe_refuses_an_unreadable_image_it_would_read_in_one_line(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", per_class=4, test=1)
    image = data / "train_images" / "c1" / "img_5.png"
    image.write_bytes(image.read_bytes()[:100])  # truncated: PIL opens its header, decoding fails
    done = run_planner("probe", "--arch", "resnet10t", "--size", "32", "--gpu-mem", "2G", "--effective-bs", "4",
                       "--data", data, "-o", tmp_path / "plan.json", timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: cannot read image train_images/c1/img_5.png (")
    assert done.stderr.endswith("): replace or remove it\n")
    assert not (tmp_path / "plan.json").exists()


def test_a_class_folder_whose_images_sit_in_a_sub_folder_is_named_with_the_fix(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", per_class=3, test=1)
    nested = data / "train_images" / "c2" / "c2"  # as an archive extracted into its own folder leaves it
    nested.mkdir()
    for image in sorted((data / "train_images" / "c2").glob("*.png")):
        image.rename(nested / image.name)
    assert refusal(data) == ("class folder train_images/c2 holds no image, only the sub-folder(s) c2: put its "
                             "images directly in train_images/c2/ (sub-folders are not read)")
    nested.rename(tmp_path / "elsewhere")
    assert refusal(data) == "class folder train_images/c2 holds no image: add its images or remove the folder"


def test_test_images_in_sub_folders_are_refused_before_a_run_that_would_predict_none(tmp_path: Path) -> None:
    """Two sub-folders with the same file name: sub-folders are not read, so the run would train and
    then have no test prediction for sample_submission.csv; refused up front instead."""
    data = make_image_folder(tmp_path / "data", per_class=3, test=2)
    for index, folder in enumerate(("a", "b")):
        (data / "test_images" / folder).mkdir()
        (data / "test_images" / f"img_{index}.png").rename(data / "test_images" / folder / "same.png")
    assert refusal(data) == ("test_images holds no image, only the sub-folder(s) a, b: put the test images "
                             "directly in test_images/ (sub-folders are not read), each name once")
    (data / "test_images" / "a" / "same.png").rename(data / "test_images" / "same.png")
    assert scan_data(data).test == ("same.png",)  # beside an image, a sub-folder is left alone


def test_a_single_class_is_refused_with_the_layout_training_needs(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", classes=1, per_class=3, test=1)
    assert refusal(data).endswith("holds 1 class folder(s); training needs at least two: one folder of images per "
                                  "class, train_images/<label>/*")
