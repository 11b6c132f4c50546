"""Prediction files ``RUN_DIR/preds/<entry>.npz``: the format the trainer writes and the ensemble reads.

Plain numpy arrays only (they load with ``allow_pickle=False``), written atomically so that a file
that exists is whole:

- ``valid_probs``: float32 (held-out rows × classes), TTA probabilities (rows sum to 1);
- ``valid_names``: str, held-out items relative to the data folder, in ``split.json`` order;
- ``valid_targets``: int64, index of each held-out item's class in ``vocab``;
- ``test_probs``: float32 (test rows × classes), TTA probabilities;
- ``test_names``: str, test file names (``img_7.png``), sorted;
- ``vocab``: str, the class names, sorted; the same for every entry of a run.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from planner.base.atomic import atomic_write
from planner.base.errors import PERMISSION_FIX, UserError
from planner.base.jsonfile import describe_bytes

PREDS_FOLDER = "preds"
ZIP_MAGIC = b"PK\x03\x04"  # an .npz is a zip archive
PREDICTION_ARRAYS = ("valid_probs", "valid_names", "valid_targets", "test_probs", "test_names", "vocab")


@dataclass(frozen=True)
class Predictions:
    """One entry's predictions, as saved."""

    valid_probs: np.ndarray
    valid_names: np.ndarray
    valid_targets: np.ndarray
    test_probs: np.ndarray
    test_names: np.ndarray
    vocab: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays by file key, with the saved dtypes."""
        return {
            "valid_probs": np.asarray(self.valid_probs, dtype=np.float32),
            "valid_names": np.asarray(self.valid_names, dtype=str),
            "valid_targets": np.asarray(self.valid_targets, dtype=np.int64),
            "test_probs": np.asarray(self.test_probs, dtype=np.float32),
            "test_names": np.asarray(self.test_names, dtype=str),
            "vocab": np.asarray(self.vocab, dtype=str),
        }


def predictions_path(run_dir: Path, name: str) -> Path:
    """Where an entry's prediction file lives."""
    return run_dir / PREDS_FOLDER / f"{name}.npz"


def save_predictions(path: Path, predictions: Predictions) -> Path:
    """Write the arrays to ``path`` atomically (temp file + rename).

    Returns:
        The final path.
    """
    return atomic_write(path, lambda f: np.savez(f, **predictions.arrays()))


def read_prediction_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of one prediction file, as saved (their types and values are the reader's to check).

    Raises:
        UserError: the file is missing, cannot be read (no permission: named as such), is not an .npz
            (named: a PNG, text...), cannot be read without pickles, or misses an array.
    """
    arrays = _arrays_or_problem(path)
    if isinstance(arrays, dict):
        return arrays
    problem, denied = arrays
    fix = PERMISSION_FIX if denied else "rerun planner run: it trains that entry again"
    raise UserError(f"prediction file {path} {problem}: {fix}")


def prediction_file_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole prediction file ("is missing (deleted?)", "is empty", "misses array(s)
    vocab"...), or None when every array loads: what a rerun checks before keeping a finished entry."""
    arrays = _arrays_or_problem(path)
    return None if isinstance(arrays, dict) else arrays[0]


def _arrays_or_problem(path: Path) -> dict[str, np.ndarray] | tuple[str, bool]:
    """The file's arrays, or what is wrong with it and whether it is a missing permission."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "is missing (deleted?)", False
    except PermissionError:
        return "cannot be read: permission denied for this user", True
    except IsADirectoryError:
        return "is a folder, not a file", False
    except OSError as error:
        return f"cannot be read ({error.strerror or error})", False
    if not data.startswith(ZIP_MAGIC):
        kind = "empty" if not data else describe_bytes(data) or "not a zip archive"
        return f"is {kind}, not a numpy .npz", False
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            missing = [name for name in PREDICTION_ARRAYS if name not in npz.files]
            if missing:
                return f"misses array(s) {', '.join(missing)}", False
            return {name: npz[name] for name in PREDICTION_ARRAYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        return f"cannot be read as a numpy .npz without pickles (damaged? {error})", False
