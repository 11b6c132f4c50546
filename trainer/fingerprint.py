"""What a run trains and predicts on, recorded cheaply so that a rerun notices when the data changed.

Each file counts by its name, size and modification time (``os.stat``; the bytes are not read: the
data check already decodes every image once). A rerun compares the data folder with run.json's
record: changed training files or classes mean the finished models were trained on other data (the
run refuses, or starts afresh with ``--retrain``); a changed test set means the finished entries'
test predictions are stale (they are predicted again from the saved models, without retraining).
``RUN_DIR/files.json`` keeps the listing, so that the message can name what changed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import Field

from planner.base.atomic import atomic_write_json
from planner.base.errors import UserError
from planner.base.images import some_of
from planner.base.jsonfile import load_record
from planner.base.plan import Record
from planner.base.runfile import DataRecord, FileSet
from planner_trainer.data import DataLayout

LISTING_FILE = "files.json"
LISTING_VERSION = 1
SHOWN = 3


class Listing(Record):
    """Every file a run saw: relative name → [size, modification time in ns]."""

    version: int = LISTING_VERSION
    train: dict[str, tuple[int, int]] = Field(default_factory=dict)
    test: dict[str, tuple[int, int]] = Field(default_factory=dict)


def listing(layout: DataLayout) -> Listing:
    """Stat every training and test file of the layout."""
    def stamps(paths: dict[str, Path]) -> dict[str, tuple[int, int]]:
        stats = {name: path.stat() for name, path in paths.items()}
        return {name: (stat.st_size, stat.st_mtime_ns) for name, stat in stats.items()}

    return Listing(train=stamps({name: layout.root / name for name in layout.train}),
                   test=stamps({name: layout.test_path(name) for name in layout.test}))


def file_set(stamps: dict[str, tuple[int, int]]) -> FileSet:
    """The summary of a listing's part: count, bytes and the digest of names, sizes and times."""
    digest = hashlib.sha256()
    for name in sorted(stamps):
        size, mtime = stamps[name]
        digest.update(f"{name}\t{size}\t{mtime}\n".encode())
    return FileSet(count=len(stamps), bytes=sum(size for size, _ in stamps.values()), digest=digest.hexdigest())


def data_record(layout: DataLayout, files: Listing) -> DataRecord:
    """run.json's record of the data: the classes and a summary of each file set."""
    return DataRecord(classes=list(layout.vocab), train=file_set(files.train), test=file_set(files.test))


def save_listing(run_dir: Path, files: Listing) -> None:
    """Keep the listing beside run.json (atomically)."""
    atomic_write_json(run_dir / LISTING_FILE, files.to_dict())


def load_listing(run_dir: Path) -> Listing | None:
    """The listing of the folder's last run, or None when it has none or it cannot be read (a
    message then gives counts instead of names)."""
    path = run_dir / LISTING_FILE
    if not path.exists():
        return None
    try:
        return load_record(path, Listing, what="file listing", version=LISTING_VERSION, fix="")
    except UserError:
        return None


def training_changed(before: DataRecord, now: DataRecord) -> bool:
    """Whether the classes or any training file differ."""
    return before.classes != now.classes or before.train != now.train


def describe_change(before: DataRecord, now: DataRecord, old: Listing | None, new: Listing, part: str) -> str:
    """What changed in ``part`` ("train" or "test"), e.g. ``class c3 added, 5 files added
    (train_images/c3/a.png, train_images/c3/b.png, train_images/c3/c.png and 2 more)``; counts only when
    the old listing is missing."""
    words = []
    if part == "train" and before.classes != now.classes:
        added = sorted(set(now.classes) - set(before.classes))
        removed = sorted(set(before.classes) - set(now.classes))
        words += [f"class{'es' if len(added) > 1 else ''} {', '.join(added)} added"] if added else []
        words += [f"class{'es' if len(removed) > 1 else ''} {', '.join(removed)} removed"] if removed else []
    old_files = getattr(old, part) if old is not None else None
    new_files = getattr(new, part)
    if old_files is None:
        counts = (getattr(before, part).count, getattr(now, part).count)
        return ", ".join([*words, f"{counts[0]} → {counts[1]} files (names, sizes or times differ)"])
    for kind, names in (
        ("added", sorted(set(new_files) - set(old_files))),
        ("removed", sorted(set(old_files) - set(new_files))),
        ("changed", sorted(name for name in set(old_files) & set(new_files) if old_files[name] != new_files[name])),
    ):
        if names:
            words.append(f"{len(names)} file{'s' if len(names) > 1 else ''} {kind} ({some_of(names, SHOWN)})")
    return ", ".join(words) or "file times or sizes differ"

