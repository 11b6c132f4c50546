"""The `planner run` command that trains a run folder's entries again, as the folder accepts it.

A run folder refuses a rerun with other settings (epochs, learning rate, pretrained weights, split),
so advice that says "retrain" must spell them out: the command is built from run.json and split.json,
naming only what differs from the defaults.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from planner.base.runfile import RunFile
from planner_trainer.options import RunOptions
from planner_trainer.split import SPLIT_FILE, load_split


def retrain_command(run: RunFile, run_dir: Path) -> str:
    """``planner run PLAN --data DATA --out RUN_DIR [the folder's settings] --retrain``, quoted for a shell."""
    defaults, settings = RunOptions(), run.settings
    parts = ["planner", "run", run.plan, "--data", run.data, "--out", str(run_dir)]
    if settings.epochs != defaults.epochs:
        parts += ["--epochs", str(settings.epochs)]
    if settings.lr != defaults.lr:
        parts += ["--lr", f"{settings.lr:g}"]
    if not settings.pretrained:
        parts.append("--no-pretrained")
    split_path = run_dir / SPLIT_FILE
    if split_path.exists():
        split = load_split(split_path)
        if split.valid_pct != defaults.valid_pct:
            parts += ["--valid-pct", f"{split.valid_pct:g}"]
        if split.seed != defaults.seed:
            parts += ["--seed", str(split.seed)]
    return shlex.join([*parts, "--retrain"])
