"""Load a run's ``preds/*.npz`` files and refuse any set that cannot be averaged row by row.

Each file holds plain arrays (read with ``allow_pickle=False``): ``valid_probs`` (rows × classes),
``valid_names``, ``valid_targets``, ``test_probs``, ``test_names`` and ``vocab``. The entry name is
the file stem. Weights fitted on held-out rows mean something only if every model saw the same rows
in the same order with the same classes, so every difference is a one-line ``UserError``; test rows
are matched by file name (the same files in another order are aligned).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from planner.base.errors import PERMISSION_FIX, UserError
from planner.base.predfile import PREDS_FOLDER, predictions_path, read_prediction_arrays
from planner.base.runfile import RUN_FILE, EntryRecord, load_run

ROW_SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class RunPredictions:
    """Every model's held-out and test probabilities over one shared set of rows and classes.

    ``valid_probs`` is (models, rows, classes) and ``test_probs`` (models, test rows, classes), in the
    order of ``names`` (sorted entry names).
    """

    names: tuple[str, ...]
    vocab: tuple[str, ...]
    valid_names: tuple[str, ...]
    valid_targets: np.ndarray
    valid_probs: np.ndarray
    test_names: tuple[str, ...]
    test_probs: np.ndarray


def load_predictions(run_dir: Path) -> RunPredictions:
    """Read and check every ``RUN_DIR/preds/*.npz``.

    Args:
        run_dir: the run folder written by ``planner run``.

    Returns:
        The stacked predictions, models in sorted entry-name order.

    Raises:
        UserError: the preds folder is missing, holds fewer than two files, a file is unreadable or
            misses an array, an array has the wrong type, shape or values (NaN, inf, negative, rows
            not summing to 1), or two files differ in held-out names, order, targets, vocab or test
            names.
    """
    folder = run_dir / PREDS_FOLDER
    if not folder.is_dir() and not entries_without_predictions(run_dir, ()):
        raise UserError(f"{folder} not found: run `planner run` first, or pass the run folder it wrote")
    paths = _prediction_files(folder)
    if len(paths) < 2:
        raise UserError(
            f"{folder} holds {len(paths)} prediction file(s); tune-weights needs at least two models"
            + _without_predictions_clause(run_dir, (path.stem for path in paths))
            + f": add entries to the plan and rerun planner run (finished ones are kept), or predict with one "
            f"model: planner predict {run_dir} IMAGES"
        )
    files = [_read(path) for path in paths]
    first, first_path = files[0], paths[0]
    files = [first, *(_test_rows_aligned(first, first_path, arrays, path) for arrays, path in
                      zip(files[1:], paths[1:], strict=True))]
    for arrays, path in zip(files[1:], paths[1:], strict=True):
        _same(first, first_path, arrays, path)
    return RunPredictions(
        names=tuple(path.stem for path in paths),
        vocab=tuple(first["vocab"].tolist()),
        valid_names=tuple(first["valid_names"].tolist()),
        valid_targets=first["valid_targets"].astype(np.int64),
        valid_probs=np.stack([arrays["valid_probs"] for arrays in files]).astype(np.float64),
        test_names=tuple(first["test_names"].tolist()),
        test_probs=np.stack([arrays["test_probs"] for arrays in files]).astype(np.float64),
    )


def _prediction_files(folder: Path) -> list[Path]:
    """The folder's ``*.npz`` files, sorted; none when it does not exist.

    Raises:
        UserError: this user may not list the folder (said as such, not as a folder without files).
    """
    try:
        return sorted(path for path in folder.iterdir() if path.suffix == ".npz")
    except FileNotFoundError:
        return []
    except PermissionError:
        raise UserError(f"{folder} cannot be read: permission denied for this user: {PERMISSION_FIX}") from None


def held_out_digest(run_dir: Path, name: str) -> str:
    """A short SHA-256 of an entry's held-out rows as saved (names, targets, probabilities): what its
    weight is fit on. A retrained entry changes it; test images predicted again do not."""
    arrays = read_prediction_arrays(predictions_path(run_dir, name))
    digest = hashlib.sha256()
    for key in ("valid_names", "valid_targets", "valid_probs"):
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    return digest.hexdigest()[:16]


def entries_without_predictions(run_dir: Path, names: Iterable[str]) -> list[EntryRecord]:
    """The entries run.json lists whose prediction file is not among ``names`` (failed, skipped,
    interrupted), in name order; none when run.json is missing or cannot be read (preds/ is what is fit)."""
    try:
        run = load_run(run_dir)
    except UserError:
        return []
    present = set(names)
    return [] if run is None else [entry for name, entry in sorted(run.entries.items()) if name not in present]


def _without_predictions_clause(run_dir: Path, names: Iterable[str]) -> str:
    """The entries without predictions with why (run.json's status and error), as a clause to end a refusal
    with; "" when there are none."""
    missing = entries_without_predictions(run_dir, names)
    if not missing:
        return ""
    shown = "; ".join(f"{entry.name} {entry.status}" + (f" ({entry.error})" if entry.error else "")
                      for entry in missing[:3])
    more = f"; and {len(missing) - 3} more" if len(missing) > 3 else ""
    return f"; not finished in {run_dir / RUN_FILE}: {shown}{more}"


def _read(path: Path) -> dict[str, np.ndarray]:
    """One file's arrays, each checked on its own."""
    arrays = read_prediction_arrays(path)
    _check_file(arrays, path)
    return arrays


def _check_file(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Types, shapes and values of one file's arrays."""
    for name in ("valid_names", "test_names", "vocab"):
        array = arrays[name]
        if array.dtype.kind != "U" or array.ndim != 1:
            raise UserError(f"{path}: {name} must be a 1-d array of strings, got {array.dtype} {array.shape}")
    vocab, targets = arrays["vocab"], arrays["valid_targets"]
    if len(vocab) < 2 or len(set(vocab.tolist())) != len(vocab):
        raise UserError(f"{path}: vocab must hold at least two distinct class names")
    if len(set(arrays["test_names"].tolist())) != len(arrays["test_names"]):
        raise UserError(f"{path}: test_names holds the same file twice")
    if targets.dtype.kind not in "iu" or targets.shape != arrays["valid_names"].shape:
        raise UserError(f"{path}: valid_targets must be integers, one per valid_names row")
    if len(targets) == 0:
        raise UserError(f"{path}: no held-out rows")
    if targets.min() < 0 or targets.max() >= len(vocab):
        raise UserError(f"{path}: valid_targets must index vocab (0..{len(vocab) - 1})")
    for split in ("valid", "test"):
        _check_probs(
            arrays[f"{split}_probs"], len(arrays[f"{split}_names"]), len(vocab), f"{path}: {split}_probs"
        )


def _check_probs(probs: np.ndarray, rows: int, classes: int, where: str) -> None:
    """Float (rows × classes) probabilities: finite, non-negative, each row summing to ~1."""
    if probs.dtype.kind != "f" or probs.shape != (rows, classes):
        raise UserError(
            f"{where} must be floats of shape ({rows}, {classes}), got {probs.dtype} {probs.shape}"
        )
    if not np.isfinite(probs).all():
        raise UserError(f"{where} holds NaN or inf")
    if (probs < 0).any():
        raise UserError(f"{where} holds negative probabilities")
    sums = probs.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1) > ROW_SUM_TOLERANCE)
    if bad.size:
        raise UserError(
            f"{where}: {bad.size} row(s) do not sum to 1 (row {bad[0]} sums to {sums[bad[0]]:.6g})"
        )


def _test_rows_aligned(first: dict[str, np.ndarray], first_path: Path, other: dict[str, np.ndarray],
                       path: Path) -> dict[str, np.ndarray]:
    """``other`` with its test rows in ``first``'s order when both hold the same test files (a model
    trained later or elsewhere may list them in another order).

    Raises:
        UserError: the two files hold different test files; the message names some of each.
    """
    mine, theirs = first["test_names"].tolist(), other["test_names"].tolist()
    if mine == theirs:
        return other
    if set(mine) != set(theirs):
        only_first = sorted(set(mine) - set(theirs))[:3]
        only_other = sorted(set(theirs) - set(mine))[:3]
        raise UserError(
            f"{path.name} and {first_path.name} predict different test files (only in {first_path.name}: "
            f"{', '.join(only_first) or '-'}; only in {path.name}: {', '.join(only_other) or '-'}): train every "
            "entry on the same test_images/"
        )
    row = {name: index for index, name in enumerate(theirs)}
    order = np.array([row[name] for name in mine])
    return {**other, "test_names": other["test_names"][order], "test_probs": other["test_probs"][order]}


def _same(first: dict[str, np.ndarray], first_path: Path, other: dict[str, np.ndarray], path: Path) -> None:
    """Refuse two files that do not describe the same rows and classes."""
    for name, what in (
        ("vocab", "class names (vocab)"),
        ("valid_names", "held-out file names"),
        ("valid_targets", "held-out targets"),
        ("test_names", "test file names"),
    ):
        a, b = first[name], other[name]
        if a.shape == b.shape and (a == b).all():
            continue
        how = "in another order" if sorted(a.tolist()) == sorted(b.tolist()) else "that differ"
        raise UserError(
            f"{path.name} and {first_path.name} have {what} {how}: predictions must come from one run "
            "with one held-out split"
        )
