"""The README's quick start, run as written: install line and test line as CI runs them, and the demo.

The demo runs with reduced flags here (``--limit 300 --epochs 1 --trials 30``: 300 of the 1,797
digits, one epoch, 30 Optuna trials) to keep the suite short; the README's plain ``planner demo``
is the same code path on all the digits.
"""

import re
import shutil
import subprocess

import pandas as pd
from planner_process import REPO, run_planner

REDUCED_DEMO_FLAGS = ("--limit", "300", "--epochs", "1", "--trials", "30")


def quick_start_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Quick start\s+```bash\n(.*?)```", readme, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def test_quick_start_install_and_test_lines_are_what_ci_runs():
    install, tests = quick_start_commands()
    ci = (REPO / ".ci" / "run").read_text()
    assert install.startswith("pip install -e '.[dev") and " && planner demo" in install
    assert "pip install -q -e '.[dev" in ci
    assert tests == "python -m pytest -q" and tests in ci


def test_quick_start_demo_runs_end_to_end(tmp_path):
    install, _ = quick_start_commands()
    demo = install.split("&&", 1)[1].split()
    assert demo == ["planner", "demo"]
    if shutil.which("planner"):  # the installed console script, as a user types it
        result = subprocess.run(["planner", "demo", *REDUCED_DEMO_FLAGS], cwd=tmp_path, capture_output=True,
                                text=True, timeout=900, env={**__import__("os").environ, "COLUMNS": "160"})
    else:
        result = run_planner("demo", *REDUCED_DEMO_FLAGS, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    out = tmp_path / "planner-demo"
    sample = pd.read_csv(out / "data" / "sample_submission.csv")
    submission = pd.read_csv(out / "run" / "submission.csv")
    assert list(submission.columns) == ["image_id", "label"]
    assert submission["image_id"].tolist() == sample["image_id"].tolist()
    assert set(submission["label"].astype(str)) <= {str(d) for d in range(10)}
    assert result.stdout.count("held-out accuracy") == 4  # three models and the ensemble
    assert "ensemble" in result.stdout and "submission:" in result.stdout
