"""tune-weights on a run folder this user may not read (made by another user, or root, without access for
others): the refusal says it is a permission problem and how to fix it, not "holds 0 prediction files" or
"delete it"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from planner_process import REPO, without_root_access
from tune_weights_data import informative_and_noise, write_run

from planner.base.errors import PERMISSION_FIX


def tune_weights(run_dir: Path) -> subprocess.CompletedProcess[str]:
    """`planner tune-weights RUN_DIR` as a user without access to what the test locked."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([*without_root_access(), sys.executable, "-m", "planner", "tune-weights", str(run_dir),
                           "--trials", "2"], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("locked", ["preds", "preds/b.npz"])
def test_an_unreadable_preds_folder_or_file_is_a_permission_problem(tmp_path: Path, locked: str) -> None:
    probs, targets = informative_and_noise(rows=60)
    write_run(tmp_path, ["a", "b"], probs, targets)
    path = tmp_path / locked
    path.chmod(0)
    try:
        result = tune_weights(tmp_path)
    finally:
        path.chmod(0o755)
    what = "" if path.is_dir() else "prediction file "
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: {what}{path} cannot be read: permission denied for this user: {PERMISSION_FIX}\n"
    assert not (tmp_path / "weights.json").exists()
