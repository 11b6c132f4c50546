"""`planner run` into a log (stdout a pipe, as in CI or under nohup): every line once, no progress bars.

A live display writes each redraw of its bars into a file as new lines: a finished entry's epoch bar
then appears again and again, also after the entry's "done" line. rich takes FORCE_COLOR (set by many
CI set-ups for coloured logs) or TTY_COMPATIBLE=1 to mean a terminal, so the output itself must be one.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from planner_process import run_planner
from run_data import plan_entry, write_plan

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.mark.parametrize("env", [{}, {"FORCE_COLOR": "1"}, {"TTY_COMPATIBLE": "1"}], ids=["plain", "FORCE_COLOR",
                                                                                         "TTY_COMPATIBLE"])
def test_every_epoch_line_appears_once_in_a_log(tmp_path: Path, image_folder: Path, env: dict[str, str]) -> None:
    entry = plan_entry("convnext_atto")
    plan = write_plan(tmp_path / "plan.json", [entry])
    done = run_planner("run", plan, "--data", image_folder, "--out", tmp_path / "run", "--no-pretrained",
                       "--epochs", "1", "--device", "cpu", env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = re.split(r"[\r\n]", ANSI.sub("", done.stdout))
    epochs = [line for line in lines if line.startswith(f"{entry.name} epoch ")]
    assert [line.split(":")[0] for line in epochs] == [f"{entry.name} epoch 1/2 (frozen)",
                                                      f"{entry.name} epoch 2/2 (unfrozen)"], done.stdout
    assert set(Counter(epochs).values()) == {1}
    assert [line for line in lines if line.startswith(f"done {entry.name}")] != []
    named = [line for line in lines if line.startswith((entry.name, "entries"))]
    assert named == epochs, "progress-bar lines in the log:\n" + "\n".join(named)


def test_live_bars_need_an_interactive_terminal_not_only_rich_saying_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import os

    from rich.console import Console

    from planner_trainer.progress import live_bars

    monkeypatch.delenv("TTY_INTERACTIVE", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    log = Console(file=io.StringIO(), force_terminal=True)
    assert log.is_terminal and not live_bars(log)  # rich calls it a terminal (as with FORCE_COLOR); it is a file
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as terminal:
        assert live_bars(Console(file=terminal))
        monkeypatch.setenv("TERM", "dumb")
        assert not live_bars(Console(file=terminal))
    os.close(leader)
