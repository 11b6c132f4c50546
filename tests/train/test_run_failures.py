"""`planner run` when an entry fails for a reason other than memory, and when two runs share a folder."""

from __future__ import annotations

import json
import os

import pytest
from run_data import plan_entry, write_plan

from planner.base.errors import UserError
from planner.ensemble.preds import load_predictions
from planner_trainer.options import RunOptions
from planner_trainer.run import one_writer, run_plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_an_entry_that_fails_is_recorded_and_the_others_still_train(tmp_path, image_folder):
    broken = plan_entry("resnet18").model_copy(update={"name": "broken", "arch": "resnet_does_not_exist"})
    plan = write_plan(tmp_path / "plan.json", [broken, plan_entry("resnet18")])
    result = run_plan(plan, image_folder, tmp_path / "run", RunOptions(epochs=1, pretrained=False, device="cpu"))
    assert result.failed == ["broken"]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    record = run["entries"]["broken"]
    assert record["status"] == "failed"
    assert record["error"].startswith("RuntimeError: Unknown model")
    assert "fix the entry's arch" in record["error"] and "rerun the same command" in record["error"]
    assert run["entries"]["resnet18-crop40-32"]["status"] == "finished"
    assert "failed broken: RuntimeError: Unknown model" in (tmp_path / "run" / "run.log").read_text()


def test_a_second_run_on_the_same_folder_is_refused_naming_the_first(tmp_path):
    refused = pytest.raises(UserError, match=rf"in use by pid {os.getpid()} on .* since .*another --out")
    with one_writer(tmp_path / "run"), refused, one_writer(tmp_path / "run"):
        pass
    with one_writer(tmp_path / "run"):  # released when the first run ends
        pass


def test_an_entry_whose_training_diverges_fails_and_leaves_no_prediction_file(tmp_path, image_folder):
    plan = write_plan(tmp_path / "plan.json", [plan_entry("resnet10t")])
    options = RunOptions(epochs=1, lr=1e30, pretrained=False, device="cpu")
    result = run_plan(plan, image_folder, tmp_path / "run", options)
    assert result.failed == ["resnet10t-crop40-32"]
    record = result.run.entries["resnet10t-crop40-32"]
    assert record.error.startswith("training diverged: ") and "NaN or infinite (lr 1e+30)" in record.error
    assert "train with a lower --lr into another --out folder" in record.error
    assert not (tmp_path / "run" / "preds").exists() or not any((tmp_path / "run" / "preds").iterdir())
    assert not (tmp_path / "run" / "models").exists() or not any((tmp_path / "run" / "models").iterdir())
    with pytest.raises(UserError, match=r"tune-weights needs at least two models; not finished in .*run\.json: "
                                        r"resnet10t-crop40-32 failed \(training diverged: "):
        load_predictions(tmp_path / "run")
