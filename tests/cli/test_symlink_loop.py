"""A folder given through a symbolic link loop (``ln -s loop loop``) is one line naming the link and the
fix in every command that takes a folder, not Path.resolve's RuntimeError."""

from __future__ import annotations

from pathlib import Path

import pytest
from planner_process import run_planner
from run_data import plan_entry, write_plan


@pytest.mark.parametrize("command", ["probe", "run", "predict", "tune-weights"])
def test_a_symbolic_link_loop_is_one_line_naming_the_link(command: str, tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    given = loop / "data"  # the loop sits on the way, one folder above what was given
    plan = write_plan(tmp_path / "plan.json", [plan_entry("resnet18")])
    args = {"probe": ("probe", "--arch", "resnet18", "--size", "32", "--gpu-mem", "1G", "--device", "estimate",
                      "--data", given, "-o", tmp_path / "p.json"),
            "run": ("run", plan, "--data", given, "--out", tmp_path / "run", "--device", "cpu"),
            "predict": ("predict", given, tmp_path),
            "tune-weights": ("tune-weights", given)}[command]
    result = run_planner(*args)
    what = "data folder" if command in ("probe", "run") else "run folder"
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"error: {what} {given} cannot be opened: the symbolic link {loop} (→ loop) goes round in a loop; point "
        f"it at the {what} (ln -sfn FOLDER {loop}) or give the {what} itself")
    assert not (tmp_path / "p.json").exists() and not (tmp_path / "run").exists()
