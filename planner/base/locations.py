"""Where things are when the user does not say: the commands as users first type them.

``planner probe --gpu-mem 16G`` in a Kaggle-style folder (``./train_images/``) probes with those
images and records the folder in the plan; ``planner run plan.json`` takes the data folder from the
plan (or ``.``) and a run folder named after the plan, so the same command resumes;
``planner tune-weights`` takes the most recently updated run folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from planner.base.errors import UserError

RUNS_FOLDER = "runs"


def cache_folder(name: str) -> Path:
    """planner's folder ``name`` in this machine's cache: ``$XDG_CACHE_HOME/planner/NAME`` (default
    ``~/.cache/planner/NAME``), on a local disk (it may not exist yet)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "planner" / name


def data_folder_here(folder: Path = Path(".")) -> Path | None:
    """``folder`` when it holds ``train_images/`` (the reference layout), else None."""
    return folder.resolve() if (folder / "train_images").is_dir() else None


def data_for_run(given: Path | None, plan_data: str | None) -> Path:
    """--data, else the folder the plan was probed with, else ``.`` in the reference layout.

    Raises:
        UserError: none of them is there.
    """
    if given is not None:
        return given
    if plan_data is not None and Path(plan_data).is_dir():
        return Path(plan_data)
    here = data_folder_here()
    if here is None:
        raise UserError("planner run needs --data DIR (train_images/<label>/*, test_images/*): the plan names no "
                        "data folder and this folder has no train_images/")
    return here


def default_run_dir(plan_path: Path) -> Path:
    """``runs/<plan name>`` beside the plan: rerunning the same command resumes the same folder."""
    return plan_path.parent / RUNS_FOLDER / plan_path.stem


def latest_run_dir(root: Path = Path(".")) -> Path:
    """The run folder below ``root`` (``runs/*``, ``*``, or ``root`` itself) whose run.json was updated last.

    Raises:
        UserError: there is none.
    """
    candidates = [root / "run.json", *root.glob("*/run.json"), *root.glob(f"{RUNS_FOLDER}/*/run.json")]
    updated = {}
    for path in candidates:
        try:
            updated[path.parent] = str(json.loads(path.read_text(encoding="utf-8"))["updated"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if not updated:
        raise UserError(f"no run folder (with a run.json) in {root.resolve()} or its runs/: give RUN_DIR, e.g. "
                        "planner tune-weights runs/plan")
    return max(updated, key=updated.__getitem__)
