"""Fault injection for `planner run` and `planner tune-weights`: kill -9 at a chosen moment, then check.

Used by tests/cli/test_faults.py (a few kills) and benchmarks/robustness/faults.py (the long loop). A kill lands
``delay`` seconds after the process's first write to its folder (run.json for `planner run`) or
after its start (tune-weights), so that the moments drawn for a run fall in training, not in imports.
After a kill every file the process left must be whole and readable (its temporary files aside, which
the next run removes), and a rerun must end with what an uninterrupted run wrote.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.planner_process import REPO

PREDS_ARRAYS = ("valid_probs", "valid_names", "valid_targets", "test_probs", "test_names", "vocab")


def planner(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """The real CLI in a subprocess, one torch thread (bitwise-reproducible CPU training); ``env`` adds variables."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "COLUMNS": "160", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "planner", *map(str, args)], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen, timeout: float = 900) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


@dataclass(frozen=True)
class Kill:
    """What a kill hit: how long after the first write, and whether the process had already ended."""

    delay: float
    ended_before: bool


def run_and_kill(args: tuple[str | Path, ...], started_when: Path | None, delay: float,
                 timeout: float = 900) -> Kill:
    """Start the CLI, wait until ``started_when`` exists (None: from the start), then ``delay`` seconds,
    then SIGKILL it."""
    process = planner(*args)
    deadline = time.monotonic() + timeout
    while started_when is not None and not started_when.exists() and process.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    end = time.monotonic() + delay
    while process.poll() is None and time.monotonic() < end:
        time.sleep(0.01)
    ended = process.poll() is not None
    if not ended:
        process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    return Kill(delay=delay, ended_before=ended)


def is_temporary(path: Path) -> bool:
    """A writer's temporary file (``planner.base.atomic``): half-written by design, removed by the next run."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def unreadable_files(folder: Path) -> list[str]:
    """Every file of a run folder that is not whole: "NAME: why". Temporary files are left out.

    JSON files must parse, prediction files must hold every array, safetensors files must load, and a
    finished entry's model must match the size and checksum run.json records.
    """
    from safetensors.numpy import load_file

    from planner.base.runfile import load_run
    from planner.ensemble.record import load_weights
    from planner_trainer.split import load_split

    problems = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not is_temporary(p)):
        name = path.relative_to(folder).as_posix()
        try:
            if path.suffix == ".json" and path.name not in ("run.json", "split.json", "weights.json"):
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as npz:
                    [npz[array] for array in PREDS_ARRAYS]
            elif path.suffix == ".safetensors":
                load_file(path)
            elif path.suffix in (".csv", ".log"):
                path.read_text(encoding="utf-8")
        except Exception as error:  # any failure to read is what this check looks for
            problems.append(f"{name}: {type(error).__name__}: {error}")
    for loader, file in ((load_run, "run.json"), (load_split, "split.json")):
        if (folder / file).exists():
            try:
                loader(folder if file == "run.json" else folder / file)
            except Exception as error:
                problems.append(f"{file}: {error}")
    if (folder / "weights.json").exists():
        try:
            load_weights(folder)
        except Exception as error:
            if "incomplete or mixed" not in str(error):  # a mixed set must be refused; anything else is a bug
                problems.append(f"weights.json: {error}")
    return problems


def prediction_arrays(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every preds/*.npz of a run folder, by entry."""
    arrays = {}
    for path in sorted((folder / "preds").glob("*.npz")):
        with np.load(path, allow_pickle=False) as npz:
            arrays[path.stem] = {name: npz[name] for name in PREDS_ARRAYS}
    return arrays


def differences(reference: dict[str, dict[str, np.ndarray]], other: dict[str, dict[str, np.ndarray]]) -> list[str]:
    """Entries or arrays that are not bitwise equal."""
    if sorted(reference) != sorted(other):
        return [f"entries {sorted(other)} != {sorted(reference)}"]
    return [f"{entry}.{name}" for entry in reference for name in PREDS_ARRAYS
            if not np.array_equal(reference[entry][name], other[entry][name])]


def weights_outcome(folder: Path) -> dict:
    """What tune-weights decided, from weights.json: chosen method, weights of every method, the study."""
    record = json.loads((folder / "weights.json").read_text(encoding="utf-8"))
    return {"method": record["method"], "weights": record["weights"],
            "methods": {name: method["weights"] for name, method in record["methods"].items()},
            "trials": record["study"]["n_trials"], "best": record["study"]["best_log_loss"],
            "submission": (folder / record["submission"]).read_text(encoding="utf-8")}


def model_differences(reference: Path, other: Path) -> list[str]:
    """Saved models (models/*.safetensors) whose tensors are not bitwise equal. The files' bytes may
    differ: safetensors writes its metadata in a per-process random (hash map) order."""
    from safetensors.numpy import load_file

    names = sorted(path.name for path in (reference / "models").glob("*.safetensors"))
    found = sorted(path.name for path in (other / "models").glob("*.safetensors"))
    if names != found:
        return [f"models {found} != {names}"]
    problems = []
    for name in names:
        a, b = load_file(reference / "models" / name), load_file(other / "models" / name)
        if sorted(a) != sorted(b) or any(not np.array_equal(a[key], b[key]) for key in a):
            problems.append(name)
    return problems
