"""The commands as users first type them, in a Kaggle-style folder: no --data, no --out, no RUN_DIR."""

from __future__ import annotations

import json
import shutil

import pytest

from planner import __version__


def test_version(planner_cli):
    result = planner_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"planner {__version__}"


@pytest.mark.slow
def test_probe_run_and_tune_weights_with_nothing_but_the_plan(planner_cli, tmp_path, image_folder):
    here = tmp_path / "competition"
    shutil.copytree(image_folder, here)
    models = here / "models.json"
    models.write_text(json.dumps({"model": [
        {"arch": "resnet18", "item": {"resize": 40, "method": "crop"}, "sizes": [32]},
        {"arch": "resnet10t", "item": {"resize": 40, "method": "crop"}, "sizes": [32]},
    ]}))
    probed = planner_cli("probe", "--gpu-mem", "2G", "--models", models, "--device", "cpu", "--effective-bs", "8",
                         cwd=here)
    assert probed.returncode == 0, probed.stderr
    assert probed.stderr == ""  # no library warnings: each command's stderr stays empty
    plan = json.loads((here / "plan.json").read_text())
    assert plan["data"] == str(here.resolve())  # ./train_images was found and recorded

    train = ("run", "plan.json", "--no-pretrained", "--epochs", "1", "--device", "cpu")
    ran = planner_cli(*train, cwd=here)
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr == ""
    assert f"run {(here / 'runs' / 'plan').resolve()}: 2 entries" in ran.stdout
    run = json.loads((here / "runs" / "plan" / "run.json").read_text())
    assert {record["status"] for record in run["entries"].values()} == {"finished"}
    again = planner_cli(*train, cwd=here)  # the same command resumes the same folder
    assert again.returncode == 0 and again.stdout.count("finished earlier") == 2

    tuned = planner_cli("tune-weights", "--trials", "5", "--folds", "2", cwd=here)
    assert tuned.returncode == 0, tuned.stderr
    assert tuned.stderr == ""
    assert "run folder: runs/plan (the most recently updated)" in tuned.stdout
    assert (here / "runs" / "plan" / "submission.csv").exists()


def test_run_without_data_anywhere_is_one_line(planner_cli, tmp_path):
    from run_data import plan_entry, write_plan

    plan = write_plan(tmp_path / "plan.json", [plan_entry("resnet18")])
    result = planner_cli("run", plan, "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: planner run needs --data DIR")
    tuned = planner_cli("tune-weights", cwd=tmp_path)
    assert tuned.returncode == 2 and "no run folder" in tuned.stderr


def test_outputs_that_cannot_be_written_are_refused_before_any_work(planner_cli, tmp_path):
    from run_data import plan_entry, write_plan

    probed = planner_cli("probe", "--gpu-mem", "16G", "--arch", "resnet18", "--size", "32", "--device", "cpu",
                         "-o", tmp_path)
    assert probed.returncode == 2 and probed.stderr.strip() == f"error: -o {tmp_path} is a folder: give a file name"
    plan = write_plan(tmp_path / "plan.json", [plan_entry("resnet18")])
    ran = planner_cli("run", plan, "--data", tmp_path, "--out", plan, "--device", "cpu")
    assert ran.returncode == 2 and ran.stderr.strip() == f"error: --out {plan} is a file: give a folder"


@pytest.mark.parametrize(("args", "start", "named"), [
    (["probe", "--device", "tpu"], "error: invalid value for '--device': ", "'tpu'"),
    (["probe", "--gpu-meme", "16G"], "error: no such option", "--gpu-meme"),  # click versions word the rest apart
    (["run", "plan.json", "--epochs", "x"], "error: invalid value for '--epochs': ", "integer"),
    (["tune-weights", "--trials"], "error: option '--trials' requires an argument", "--trials"),
    (["frobnicate"], "error: no such command 'frobnicate'", "frobnicate"),
])
def test_a_mistyped_command_line_is_one_line_with_where_the_options_are(planner_cli, tmp_path, args, start, named):
    result = planner_cli(*args, cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(start) and named in result.stderr, result.stderr
    assert result.stderr.rstrip().endswith(" --help")  # where every option is listed
    assert list(tmp_path.iterdir()) == []


def test_planner_alone_shows_its_commands(planner_cli):
    result = planner_cli()
    assert "probe" in result.stdout and "tune-weights" in result.stdout and not result.stderr
