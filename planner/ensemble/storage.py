"""Where the Optuna study lives: the run folder by default, a local disk when that is a network one.

SQLite needs a local file system (``planner.base.filesystems``). ``planner run --backend ray`` needs the run
folder on a shared one, often NFS. So:

- no ``--storage``, run folder on a local disk: ``RUN_DIR/optuna.db``, as before;
- no ``--storage``, run folder on a network file system: ``LOCAL_STUDIES/<run folder name>-<hash of
  its path>/optuna.db``, where ``LOCAL_STUDIES`` is ``$XDG_CACHE_HOME/planner/studies`` (default
  ``~/.cache/planner/studies``) on this machine's disk. The same run folder always maps to the same
  file, so a rerun on this machine resumes the study; weights.json and the command's output name it;
- ``--storage sqlite:///FILE`` with FILE on a network file system: refused, naming a local path and
  the server alternative;
- any other ``--storage`` (PostgreSQL, MySQL, a local SQLite file): used as given.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from planner.base.atomic import check_writable
from planner.base.errors import UserError
from planner.base.filesystems import PROC_MOUNTS, network_mount
from planner.base.locations import cache_folder
from planner.base.paths import resolved_folder

DEFAULT_STUDY = "tune-weights"  # the study's name in the storage unless --study names one

STUDY_FILE = "optuna.db"
SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class StudyStorage:
    """The storage URL to open, and a sentence for the user when it is not where they would look."""

    url: str
    note: str | None = None


def sqlite_file(storage: str) -> Path | None:
    """The database file of a SQLite URL; None for other databases and in-memory SQLite."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(storage)
    except ArgumentError:
        return None  # opening it reports the bad URL
    if not url.drivername.startswith("sqlite") or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def check_sqlite_file(path: Path, storage: str) -> None:
    """Refuse a SQLite path that cannot hold a study, before anything is written beside it.

    Raises:
        UserError: its folder is missing or a file, the path is a folder, the file is not SQLite, or it
            cannot be written (a read-only file or file system, no permission).
    """
    where = f"--storage {storage}"
    folder = path.expanduser().absolute().parent
    if not folder.is_dir():
        problem = "is a file" if folder.exists() else "does not exist"
        raise UserError(f"{where}: the folder {folder} {problem}: create it or give another path")
    if path.is_dir():
        raise UserError(f"{where}: {path} is a folder: name a database file in it, e.g. {path / STUDY_FILE}")
    if path.is_file() and path.stat().st_size and not path.read_bytes()[:16] == SQLITE_MAGIC:
        raise UserError(f"{where}: {path} is not an SQLite database: give a new file name or an Optuna study file")
    check_writable(path, "--storage", folder=False)  # its folder takes the lock file and the write-ahead log


def local_studies() -> Path:
    """This machine's folder for studies of run folders on network file systems."""
    return cache_folder("studies")


def study_storage(run_dir: Path, storage: str | None, mounts_file: Path = PROC_MOUNTS) -> StudyStorage:
    """The storage for ``planner tune-weights`` (module docstring).

    Args:
        run_dir: the run folder.
        storage: ``--storage`` as given, or None.
        mounts_file: the mount table to read (tests pass their own).

    Raises:
        UserError: ``storage`` is a SQLite file on a network file system or one that cannot hold a
            study (``check_sqlite_file``).
    """
    if storage is not None:
        path = sqlite_file(storage)
        if path is not None:
            check_sqlite_file(path, storage)
        mount = None if path is None else network_mount(path, mounts_file)
        if mount is not None:
            raise UserError(
                f"--storage {storage}: {path} is on a network file system ({mount.fstype} from {mount.source}), "
                f"where SQLite's locks and write-ahead log do not work: give a file on a local disk (e.g. "
                f"--storage sqlite:///{local_studies() / STUDY_FILE}) or a server, e.g. "
                "--storage postgresql://USER:PASSWORD@HOST/DB"
            )
        return StudyStorage(storage)
    run_dir = resolved_folder(run_dir, "run folder")
    mount = network_mount(run_dir, mounts_file)
    if mount is None:
        return StudyStorage(f"sqlite:///{run_dir / STUDY_FILE}")
    key = hashlib.sha256(str(run_dir).encode()).hexdigest()[:12]
    local = local_studies() / f"{run_dir.name}-{key}" / STUDY_FILE
    return StudyStorage(
        f"sqlite:///{local}",
        note=(f"the run folder is on a network file system ({mount.fstype}), where SQLite does not work: the study "
              f"is kept on this machine, in {local} (a rerun here resumes it; --storage to choose)"),
    )
