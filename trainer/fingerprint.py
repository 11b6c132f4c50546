"""What a run trains and predicts on, recorded so that a rerun notices when the data changed.

Each file counts by its name, size and modification time (``os.stat``), and by a hash of its bytes
(BLAKE2b) kept beside them. A rerun stats the files again and reads the bytes only of the files whose
size or time differ from the record (none on the cheap path, where every time is unchanged; all of them
on a folder's first run). A copied data folder (``cp -r``, a restore from a backup) has new times but the
same bytes, so it is the same data; the record then takes the new times, and the next rerun is cheap
again. What it costs: benchmarks/RESULTS.md, "What does a run cost beyond training?".

A rerun compares the data folder with run.json's record: changed training files or classes mean the
finished models were trained on other data (the run refuses, or starts afresh with ``--retrain``); a
changed test set means the finished entries' test predictions are stale (they are predicted again from
the saved models, without retraining). ``RUN_DIR/files.json`` keeps the listing, so that the bytes can
be compared and the message can name what changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from pydantic import Field

from planner.base.atomic import atomic_write_json
from planner.base.errors import UserError
from planner.base.images import some_of
from planner.base.jsonfile import load_record
from planner.base.plan import Record
from planner.base.runfile import DataRecord, FileSet
from planner.base.threads import usable_cores
from planner_trainer.data import DataLayout

LISTING_FILE = "files.json"
LISTING_VERSION = 2
SHOWN = 3
CHUNK_BYTES = 1 << 20
Part = Literal["train", "test"]
Stamp = tuple[int, int, str]
"""A file as a run saw it: size in bytes, modification time in ns, BLAKE2b-128 of its bytes (hex)."""


class Listing(Record):
    """Every file a run saw: relative name → [size, modification time in ns, content hash]."""

    version: int = LISTING_VERSION
    train: dict[str, Stamp] = Field(default_factory=dict)
    test: dict[str, Stamp] = Field(default_factory=dict)


def content_hash(path: Path) -> str:
    """BLAKE2b-128 of the file's bytes, read in chunks (hashlib releases the GIL on them, so threads help)."""
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def listing(layout: DataLayout, known: Listing | None = None) -> Listing:
    """Stat every training and test file of the layout; a file's hash is taken from ``known`` (the run
    folder's listing) when its size and time are the ones recorded there, else its bytes are read (on a
    thread per core, at most 8)."""
    def stamps(paths: dict[str, Path], before: Mapping[str, Stamp]) -> dict[str, Stamp]:
        stats = {name: path.stat() for name, path in paths.items()}
        sized = {name: (stat.st_size, stat.st_mtime_ns) for name, stat in stats.items()}
        hashes = {name: before[name][2] for name, stamp in sized.items()
                  if name in before and before[name][:2] == stamp}
        unread = [name for name in sized if name not in hashes]
        if unread:
            with ThreadPoolExecutor(max_workers=min(8, len(usable_cores()))) as pool:
                hashes.update(zip(unread, pool.map(content_hash, (paths[name] for name in unread)), strict=True))
        return {name: (*stamp, hashes[name]) for name, stamp in sized.items()}

    return Listing(train=stamps({name: layout.root / name for name in layout.train}, known.train if known else {}),
                   test=stamps({name: layout.test_path(name) for name in layout.test}, known.test if known else {}))


def file_set(stamps: Mapping[str, Stamp]) -> FileSet:
    """The summary of a listing's part: count, bytes and the digest of names, sizes and times."""
    digest = hashlib.sha256()
    for name in sorted(stamps):
        size, mtime, _ = stamps[name]
        digest.update(f"{name}\t{size}\t{mtime}\n".encode())
    return FileSet(count=len(stamps), bytes=sum(stamp[0] for stamp in stamps.values()), digest=digest.hexdigest())


def data_record(layout: DataLayout, files: Listing) -> DataRecord:
    """run.json's record of the data: the classes and a summary of each file set."""
    return DataRecord(classes=list(layout.vocab), train=file_set(files.train), test=file_set(files.test))


def save_listing(run_dir: Path, files: Listing) -> None:
    """Keep the listing beside run.json (atomically)."""
    atomic_write_json(run_dir / LISTING_FILE, files.to_dict())


def load_listing(run_dir: Path) -> Listing | None:
    """The listing of the folder's last run, or None when it has none or it cannot be read (a listing
    of an older planner, without hashes, included: a message then gives counts instead of names, and
    files whose times changed count as changed)."""
    path = run_dir / LISTING_FILE
    if not path.exists():
        return None
    try:
        return load_record(path, Listing, what="file listing", version=LISTING_VERSION, fix="")
    except UserError:
        return None


def same_files(before: DataRecord, now: DataRecord, old: Listing | None, new: Listing, part: Part) -> bool:
    """Whether ``part`` holds the files run.json recorded: the same names, sizes and times, or else the
    same names, sizes and bytes (a copy of the folder), judged from the listing when it is the one
    run.json recorded."""
    if getattr(before, part) == getattr(now, part):
        return True
    if old is None or file_set(getattr(old, part)) != getattr(before, part):
        return False
    old_files, new_files = getattr(old, part), getattr(new, part)
    return old_files.keys() == new_files.keys() and all(
        _same_bytes(old_files[name], new_files[name]) for name in old_files)


def training_changed(before: DataRecord, now: DataRecord, old: Listing | None, new: Listing) -> bool:
    """Whether the classes or any training file differ (by name, size or bytes)."""
    return before.classes != now.classes or not same_files(before, now, old, new, "train")


def _same_bytes(old: Stamp, new: Stamp) -> bool:
    return (old[0], old[2]) == (new[0], new[2])


def describe_change(before: DataRecord, now: DataRecord, old: Listing | None, new: Listing, part: Part) -> str:
    """What changed in ``part`` ("train" or "test"), e.g. ``class c3 added, 5 files added
    (train_images/c3/a.png, train_images/c3/b.png, train_images/c3/c.png and 2 more)``; a file counts as
    changed when its bytes differ; counts only when the old listing is missing."""
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
        ("changed", sorted(name for name in set(old_files) & set(new_files)
                           if not _same_bytes(old_files[name], new_files[name]))),
    ):
        if names:
            words.append(f"{len(names)} file{'s' if len(names) > 1 else ''} {kind} ({some_of(names, SHOWN)})")
    return ", ".join(words) or "file times or sizes differ"
