"""Faults from outside the command: SIGTERM (`kill`, `timeout`, a scheduler ending the job), a probe killed
with -9 while its workers probe, a disk that fills up, a study file where nothing can be written.

Each must end in one line and a non-zero exit, with no traceback, no half file and nothing left running,
and the same command must resume once the fault is gone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_runs import finish, is_temporary, planner
from planner_process import run_planner
from run_data import plan_entry, write_plan
from tune_weights_data import informative_and_noise, write_run

RUN_OPTIONS = ("--no-pretrained", "--epochs", "1", "--device", "cpu")
ENTRY = "resnet18-crop40-32"


def entry_status(run_dir: Path) -> str | None:
    path = run_dir / "run.json"
    return json.loads(path.read_text())["entries"].get(ENTRY, {}).get("status") if path.exists() else None


def wait_for(condition, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the command ended before the fault"


@pytest.mark.slow
def test_sigterm_stops_a_run_as_ctrl_c_does_and_the_same_command_resumes(image_folder: Path, tmp_path: Path) -> None:
    plan, run_dir = write_plan(tmp_path / "plan.json", [plan_entry("resnet18")]), tmp_path / "run"
    command = ("run", plan, "--data", image_folder, "--out", run_dir, *RUN_OPTIONS)
    process = planner(*command)
    wait_for(lambda: entry_status(run_dir) == "running", process)
    process.send_signal(signal.SIGTERM)
    code, out, err = finish(process)
    assert code == 143, err
    assert err.strip() == "terminated (SIGTERM): finished entries are kept; rerun the same command to resume"
    assert f"interrupted {ENTRY}" in out
    assert entry_status(run_dir) == "interrupted"  # not "running" for ever: the process cleaned up
    assert [path.name for path in run_dir.rglob("*") if is_temporary(path)] == []

    code, out, err = finish(planner(*command))
    assert code == 0, err
    assert entry_status(run_dir) == "finished"


def children(pid: int) -> set[int]:
    """The processes ``pid`` started (Linux's /proc)."""
    return {int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()}


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")
def test_the_probes_workers_end_when_the_probe_is_killed(tmp_path: Path) -> None:
    """kill -9 cannot stop a probe's workers; they used to go on probing for nobody for minutes."""
    models = tmp_path / "models.toml"  # a worker takes the first (a long fake step), the probe the last
    models.write_text('[[model]]\narch = "vit_base_patch16_224"\nsizes = [224]\n\n'
                      '[[model]]\narch = "resnet18"\nsizes = [32]\n')
    temporary = tmp_path / "tmp"  # the probe's own temporary folder: its workers' claims show there
    temporary.mkdir()
    process = planner("probe", "--models", models, "--gpu-mem", "16G", "--device", "estimate", "-j", "2",
                      "-o", tmp_path / "plan.json", env={"TMPDIR": str(temporary)})
    wait_for(lambda: any(temporary.glob("planner-probe-*/0")), process)  # a worker took the long one
    workers = children(process.pid)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    deadline = time.monotonic() + 10
    while any(map(running, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers and not any(map(running, workers))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB file system (tmpfs; needs root), unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small file system needs root")
    folder = tmp_path / "disk"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(folder)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.mark.slow
def test_a_full_disk_stops_a_run_in_one_line_and_the_same_command_resumes(image_folder: Path, tmp_path: Path,
                                                                          small_disk: Path) -> None:
    plan, run_dir = write_plan(tmp_path / "plan.json", [plan_entry("resnet18")]), small_disk / "run"
    command = ("run", plan, "--data", image_folder, "--out", run_dir, *RUN_OPTIONS)
    result = run_planner(*command)  # the model (45 MiB) does not fit
    assert result.returncode == 2, result.stderr
    model = run_dir / "models" / f"{ENTRY}.safetensors"
    assert result.stderr.strip() == (f"error: cannot write {model}: No space left on device: free some space there, "
                                     "or choose another place, then rerun the same command (finished work is kept)")
    assert entry_status(run_dir) == "interrupted"
    assert [path.name for path in run_dir.rglob("*") if is_temporary(path)] == []

    subprocess.run(["mount", "-o", "remount,size=200M", str(small_disk)], check=True)
    result = run_planner(*command)
    assert result.returncode == 0, result.stderr
    assert entry_status(run_dir) == "finished"


def test_a_study_on_a_full_disk_stops_in_one_line(tmp_path: Path, small_disk: Path) -> None:
    probs, targets = informative_and_noise(rows=300)
    run_dir = write_run(tmp_path / "run", ["a", "b"], probs, targets)
    (small_disk / "filler").write_bytes(bytes(1900 * 1024))  # room for the study's tables and a few trials
    storage = f"sqlite:///{small_disk / 'study.db'}"
    result = run_planner("tune-weights", run_dir, "--storage", storage, "--trials", "300", "--folds", "2")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: the study in {storage} could not be written "
                                    "(database or disk is full): rerun the same command once it can be")
    assert result.stderr.count("\n") == 1


def test_a_study_file_where_nothing_can_be_written_is_refused_before_any_work(tmp_path: Path) -> None:
    probs, targets = informative_and_noise(rows=300)
    run_dir = write_run(tmp_path / "run", ["a", "b"], probs, targets)
    result = run_planner("tune-weights", run_dir, "--storage", "sqlite:////proc/study.db", "--trials", "5")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == ("error: --storage /proc/study.db cannot be written (cannot create a file in "
                                     "/proc: No such file or directory): choose another place")
    assert not (run_dir / "weights.json").exists()
