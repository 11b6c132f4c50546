"""One held-out split per run folder, drawn once and shared by every entry.

The reference drew a new random split for each model, so its validation predictions could not be
used to fit ensemble weights. Here the split is drawn once (seeded, stratified by class), written to
``RUN_DIR/split.json`` as file names, and read back by every later entry and every rerun. A rerun
that asks for another split into the same folder is refused rather than silently mixing splits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from planner.base.atomic import atomic_write_json
from planner.base.errors import UserError
from planner.base.jsonfile import load_record
from planner.base.plan import Record
from planner.base.trainsize import held_out_count
from planner_trainer.data import DataLayout, label_of

SPLIT_VERSION = 1
SPLIT_FILE = "split.json"


class Split(Record):
    """The held-out split: how it was drawn and which files it holds (sorted relative names)."""

    version: Literal[1] = SPLIT_VERSION
    valid_pct: float = Field(gt=0, lt=1)
    seed: int
    stratified: bool = True
    n_train: int = Field(ge=1)
    valid: list[str] = Field(min_length=1)


def draw_split(train: Sequence[str], valid_pct: float, seed: int) -> Split:
    """Draw a stratified held-out split: ``round(valid_pct × n)`` files of each class.

    Each class with at least two images gives at least one held-out image and keeps at least one for
    training; a class with one image stays in training.

    Args:
        train: relative names of the training images (``train_images/<label>/<file>``).
        valid_pct: the held-out fraction, strictly between 0 and 1.
        seed: seeds the draw.

    Returns:
        The split, held-out names sorted.

    Raises:
        UserError: the draw would hold out no file at all.
    """
    check_holds_out(train, valid_pct)
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[str]] = {}
    for name in sorted(train):
        by_label.setdefault(label_of(name), []).append(name)
    valid: list[str] = []
    for label in sorted(by_label):
        names = by_label[label]
        count = held_out_count(len(names), valid_pct)
        valid.extend(names[i] for i in rng.permutation(len(names))[:count])
    return Split(valid_pct=valid_pct, seed=seed, n_train=len(train) - len(valid), valid=sorted(valid))


def check_holds_out(train: Sequence[str], valid_pct: float) -> None:
    """Refuse training images from which no held-out split can be drawn: every class has a single image
    (it stays in training), so no entry could be scored and tune-weights would have nothing to fit.

    Raises:
        UserError: no class would give a held-out image; the line names the classes and the fix.
    """
    sizes = Counter(map(label_of, train))
    if sizes and not any(held_out_count(size, valid_pct) for size in sizes.values()):
        labels = sorted(sizes)
        shown = ", ".join(labels[:5]) + (f" and {len(labels) - 5} more" if len(labels) > 5 else "")
        raise UserError(f"no held-out split can be drawn: every class in train_images has a single image ({shown}), "
                        "and a class keeps its only image for training; add a second image to the classes")


def load_split(path: Path) -> Split:
    """Read and validate a split file.

    Raises:
        UserError: the file is unreadable, not JSON, of another version, or a field is wrong.
    """
    return load_record(path, Split, what="held-out split", version=SPLIT_VERSION,
                       fix="use another --out folder (or remove the damaged split.json and every preds/*.npz)")


def shared_split(run_dir: Path, layout: DataLayout, valid_pct: float, seed: int) -> Split:
    """The run folder's split: drawn and written on the first run, read and checked on later ones.

    Args:
        run_dir: the run folder.
        layout: the checked data folder.
        valid_pct: the held-out fraction asked for.
        seed: the seed asked for.

    Returns:
        The split every entry of the run uses.

    Raises:
        UserError: the folder's split was drawn with another ``valid_pct`` or ``seed``, or names
            held-out files that are no longer in the data folder.
    """
    path = run_dir / SPLIT_FILE
    if not path.exists():
        split = draw_split(layout.train, valid_pct, seed)
        atomic_write_json(path, split.to_dict())
        return split
    split = load_split(path)
    if (split.valid_pct, split.seed) != (valid_pct, seed):
        raise UserError(
            f"{path} was drawn with --valid-pct {split.valid_pct} --seed {split.seed}, this run asks for "
            f"--valid-pct {valid_pct} --seed {seed}: every entry of a run folder must share one split, "
            "so rerun with the folder's values or use another --out folder"
        )
    known = set(layout.train)
    missing = [name for name in split.valid if name not in known]
    if missing:
        raise UserError(
            f"held-out file {missing[0]} of {path} is not in {layout.root} "
            f"({len(missing)} missing): use the data folder the run started with, or another --out folder"
        )
    return split
