"""The Python API for notebooks: docs/python-api.md's example runs as written and returns records; the
options records take what a notebook passes (str paths, lists, one card) and name a wrong type; probe, run
and predict chained in one process leave torch's thread count as the notebook had it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from planner_process import REPO

import planner.api
from planner.api import (
    LineReporter,
    PredictOptions,
    ProbeOptions,
    RunOptions,
    TuneOptions,
    UserError,
    load_run,
    make_plan,
    predict,
    run_plan,
    single_entry,
)


def test_the_documented_example_runs_and_returns_records(tmp_path: Path, one_torch_thread, monkeypatch) -> None:
    text = (REPO / "docs" / "python-api.md").read_text(encoding="utf-8")
    (code,) = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "docs/python-api.md", "exec"), scope)  # the documentation's own example
    plan, run, tuned, predicted = (scope[name] for name in ("plan", "run", "tuned", "predicted"))
    assert [entry.accum * entry.micro_batch for entry in plan.entries] == [16, 16]
    assert not run.failed and {record.status for record in run.run.entries.values()} == {"finished"}
    assert len(tuned.weights) == 2 and abs(sum(tuned.weights) - 1) < 1e-6
    assert len(predicted.labels) == len(os.listdir(tmp_path / "planner-notebook" / "data" / "test_images"))


def test_every_name_the_api_exports_is_there() -> None:
    assert all(hasattr(planner.api, name) for name in planner.api.__all__)


def test_options_records_take_what_a_notebook_passes_and_name_a_wrong_type(tmp_path: Path) -> None:
    options = ProbeOptions(data=str(tmp_path), output="plan.json", gpus="T4", budgets=16 * 2**30, arch="resnet10t",
                           size=[32, 32], effective_batch_size=16.0)
    assert (options.data, options.output, options.gpus, options.budgets, options.size,
            options.effective_batch_size) == (tmp_path, Path("plan.json"), ("T4",), (16 * 2**30,), (32, 32), 16)
    assert TuneOptions(run_dir="~/run").run_dir == Path.home() / "run"
    assert type(RunOptions(lr=1).lr) is float
    refused = {
        "ProbeOptions.effective_batch_size must be a whole number, got '16' (str)":
            lambda: ProbeOptions(effective_batch_size="16"),
        "ProbeOptions.gpus must be a string or a list of them, got ('T4', 4) (4: int)":
            lambda: ProbeOptions(gpus=("T4", 4)),
        "ProbeOptions.budgets (-1,) must be card sizes in bytes": lambda: ProbeOptions(budgets=-1),
        "RunOptions.pretrained must be True or False, got 'no' (str)": lambda: RunOptions(pretrained="no"),
        "RunOptions.epochs must be a whole number, got 1.5 (float)": lambda: RunOptions(epochs=1.5),
        "TuneOptions.hand_weights must be a dict from a string to a number":
            lambda: TuneOptions(hand_weights=[("a", 2)]),
        "PredictOptions.batch_size must be a whole number or None, got '8' (str)":
            lambda: PredictOptions(batch_size="8"),
    }
    for message, make in refused.items():
        with pytest.raises(UserError, match=re.escape(message)):
            make()


def test_make_plan_refuses_entries_that_are_not_entry_records_before_probing(tmp_path: Path) -> None:
    options = ProbeOptions(budgets=2**30, device="estimate", output=tmp_path / "plan.json")
    for entries, message in (("resnet10t", "entries must be a list of EntrySpec records"), ([], "entries is empty")):
        with pytest.raises(UserError, match=message):
            make_plan(options, entries=entries)
    assert not (tmp_path / "plan.json").exists()


def test_probe_run_predict_in_one_process_take_str_paths_and_give_torch_its_threads_back(
        image_folder: Path, tmp_path: Path, one_torch_thread, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    data, tests = str(image_folder), str(image_folder / "test_images")
    torch.set_num_threads(2)  # the notebook's own setting; planner trains on OMP_NUM_THREADS=1 (conftest)
    try:
        plan = make_plan(ProbeOptions(budgets=2**30, effective_batch_size=8, data=data, device="cpu",
                                      output="plan.json"), entries=single_entry("test_resnet", 32))
        assert torch.get_num_threads() == 2
        with pytest.raises(UserError, match="takes the plan file's path"):
            run_plan(plan, data, "run")
        lines: list[str] = []
        run = run_plan("plan.json", data, "run", RunOptions(epochs=1, pretrained=False, device="cpu"),
                       reporter=LineReporter(lines.append))
        assert torch.get_num_threads() == 2
        assert any(line.startswith(f"done {plan.entries[0].name}") for line in lines), lines
        assert not run.failed and set(load_run("run").entries) == {entry.name for entry in plan.entries}
        with pytest.raises(UserError, match="weights must map each entry's name to its weight"):
            predict("run", tests, [1.0])
        predicted = predict("run", tests, None, PredictOptions(device="cpu"))  # one folder, not a list of them
        assert torch.get_num_threads() == 2
        assert len(predicted.labels) == len(os.listdir(tests))
    finally:
        torch.set_num_threads(1)
