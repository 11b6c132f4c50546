"""Where the output goes: a terminal or log whose encoding is not UTF-8, a pipe whose reader ends early.

Neither may end a command with a traceback, and a closed pipe must leave a run resumable, as Ctrl-C does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fault_runs import finish, is_temporary, planner
from planner_process import REPO, run_planner, without_root_access
from run_data import plan_entry, write_plan

ENTRY = "resnet18-crop40-32"


@pytest.mark.parametrize("encoding", ["latin-1", "ascii"])
def test_help_in_a_terminal_that_is_not_utf8_shows_ascii_stand_ins(encoding: str) -> None:
    """`planner probe --help` at 80 columns shortens long option names with an ellipsis, which Latin-1 and
    ASCII lack: it is printed as three dots, the whole help is shown."""
    result = run_planner("probe", "--help", env={"PYTHONIOENCODING": encoding, "COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "--no-checkpoint..." in result.stdout and "--output" in result.stdout


@pytest.mark.slow
def test_a_closed_output_pipe_stops_a_run_as_ctrl_c_does_and_the_same_command_resumes(
    image_folder: Path, tmp_path: Path
) -> None:
    """`planner run plan.json | head -1`: the run stops at its next line, the entry is marked interrupted
    (not left "running"), one line on stderr says why, exit 141 as a shell reports SIGPIPE."""
    plan, run_dir = write_plan(tmp_path / "plan.json", [plan_entry("resnet18")]), tmp_path / "run"
    command = ("run", plan, "--data", image_folder, "--out", run_dir, "--no-pretrained", "--epochs", "1",
               "--device", "cpu")
    process = planner(*command)
    assert process.stdout.readline().startswith("run ")
    process.stdout.close()  # as `head -1` does after its line
    code = process.wait(timeout=900)
    err = process.stderr.read()
    assert code == 141, err
    assert err.count("\n") == 1 and err.startswith("stopped: the pipe its output went to was closed"), err
    assert json.loads((run_dir / "run.json").read_text())["entries"][ENTRY]["status"] == "interrupted"
    assert [path.name for path in run_dir.rglob("*") if is_temporary(path)] == []

    code, _, err = finish(planner(*command))
    assert code == 0, err
    assert json.loads((run_dir / "run.json").read_text())["entries"][ENTRY]["status"] == "finished"


def test_a_plan_in_a_narrow_terminal_shows_every_cell_whole(tmp_path: Path) -> None:
    """At 40 columns the plan's table cannot hold its columns' words (rich would cut every cell to an
    ellipsis): each entry is shown as "header: value" lines instead."""
    result = run_planner("probe", "--device", "estimate", "--arch", "resnet18", "--size", "32", "--gpu-mem", "1G",
                         "--effective-bs", "8", "-o", tmp_path / "plan.json", env={"COLUMNS": "40"})
    assert result.returncode == 0, result.stderr
    lines = [line.rstrip() for line in result.stdout.splitlines()]
    assert "entry:          resnet18-crop32-32" in lines
    assert "micro-batch:    8" in lines
    assert "…" not in result.stdout


def test_a_name_too_long_for_the_file_system_is_one_line(tmp_path: Path) -> None:
    """A name over 255 bytes, as an output (-o) or as an input (--data), is named in one line, exit 2."""
    long_name = "y" * 300
    plan = write_plan(tmp_path / "plan.json", [plan_entry("resnet18")])
    probe = run_planner("probe", "--device", "estimate", "--arch", "resnet18", "--size", "32", "--gpu-mem", "1G",
                        "-o", tmp_path / f"{long_name}.json")
    run = run_planner("run", plan, "--data", tmp_path / long_name)
    for result in (probe, run):
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "File name too long" in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == [plan]


def test_a_current_folder_that_was_deleted_is_one_line(tmp_path: Path) -> None:
    """A shell left in a folder another process deleted: one line with the fix, where torch's libraries
    would end the process with a oneMKL "FATAL ERROR"."""
    gone = tmp_path / "gone"
    gone.mkdir()
    script = 'cd "$1" && rmdir "$1" && exec "$2" -m planner probe --device estimate --arch resnet18 --size 32 ' \
             '--gpu-mem 1G -o "$3"'
    result = subprocess.run(["sh", "-c", script, "sh", gone, sys.executable, tmp_path / "plan.json"],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr == "error: the current folder no longer exists (deleted or moved): cd into an existing " \
                            "folder and rerun\n"
    assert list(tmp_path.iterdir()) == []


def test_a_file_this_user_may_not_read_is_one_line(tmp_path: Path) -> None:
    """A cache folder this user may not enter (made by another user, or root, with no access for others):
    `planner calibrate` names the file and the fix in one line, exit 2, instead of a PermissionError traceback."""
    pairs = tmp_path / "cache" / "planner" / "calibration" / "pairs.jsonl"
    pairs.parent.mkdir(parents=True)
    pairs.write_text("{}\n")
    (tmp_path / "cache").chmod(0)
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    try:
        result = subprocess.run([*without_root_access(), sys.executable, "-m", "planner", "calibrate"], env=env,
                                capture_output=True, text=True, timeout=300)
    finally:
        (tmp_path / "cache").chmod(0o700)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: {pairs}: Permission denied: give this user access to it (chmod, chown) or use " \
                            "another path\n"
