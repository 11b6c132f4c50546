"""The Python API for notebooks: docs/python-api.md's example runs as written and returns records."""

from __future__ import annotations

import os
import re
from pathlib import Path

from planner_process import REPO

import planner.api


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
