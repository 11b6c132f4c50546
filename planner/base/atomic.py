"""Atomic file writes: write a temporary file beside the target, fsync, then rename over it.

A reader (or a resumed run) therefore sees either the old file or the whole new one, never half.
A writer killed mid-write (kill -9, a power cut) leaves its temporary file behind; the name says
which host and process wrote it (``.NAME.tmp-HOST-PID-XXXX.tmp``), so :func:`remove_stale_temporaries`
can remove those of processes that no longer run without touching a live writer's.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a temporary file in ``path``'s folder and rename it to ``path``.

    Args:
        path: the final file name; its parent folder is created if missing.
        write: a function that writes the whole content to the binary file object it gets.

    Returns:
        The final path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TEMP_TAG}{socket.gethostname()}-{os.getpid()}-",
                               suffix=".tmp")
    try:
        with naming(path):
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; give what open() would
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """An OSError raised in the block names ``path`` when it names no file (a failed ``write`` names none), so
    that its message says which file could not be written."""
    try:
        yield
    except OSError as error:
        if error.filename is None:
            error.filename = str(path)
        raise


WRITE_FAULTS = {errno.ENOSPC: "free some space there", errno.EDQUOT: "free some space there (or raise the quota)",
                errno.EROFS: "make it writable"}
"""Errors of a file system that takes no more writes, and the fix of each."""


def write_fault(error: BaseException) -> str | None:
    """One line for an error of a file system that takes no more writes (full, over quota, read-only), naming
    the file and the fix; None for any other error. Atomic writes leave no half file, so rerunning the
    command once the fault is fixed resumes it."""
    if not isinstance(error, OSError) or error.errno not in WRITE_FAULTS:
        return None
    where = f"cannot write {error.filename}" if error.filename else "cannot write a file"
    return (f"{where}: {error.strerror}: {WRITE_FAULTS[error.errno]}, or choose another place, then rerun the same "
            "command (finished work is kept)")


TEMP_TAG = ".tmp-"
_TEMP_NAME = re.compile(r"^\..+\.tmp-(?P<host>.+)-(?P<pid>\d+)-[a-z0-9_]+\.tmp$")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files of writers on this host that no longer run; returns those removed.

    Only files named by :func:`atomic_write` are considered, and only those of this host: a writer on
    another machine sharing the folder cannot be checked from here.
    """
    if not folder.is_dir():
        return []
    removed = []
    host = socket.gethostname()
    for path in folder.iterdir():
        match = _TEMP_NAME.match(path.name)
        if match and match["host"] == host and not _running(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented, strict JSON to ``path`` atomically.

    Python's ``json`` writes NaN and Infinity, which are not JSON: strict readers (``jq``, JavaScript,
    Go, ``json.loads(..., parse_constant=...)``) refuse the file. A float that is not finite is a value
    that is missing (a loss fastai could not compute), so it is written as ``null``.
    """
    return atomic_write_text(path, json.dumps(finite_or_null(data), indent=2, allow_nan=False) + "\n")


def append_json_lines(path: str | Path, records: list[Any]) -> None:
    """Append ``records`` to ``path``, one strict JSON object per line (keys sorted), in one write: a log
    that only grows (JSON Lines), where a whole-file rewrite would lose lines other processes add. After a
    last line cut short (a full disk, a power cut), the records start on a line of their own."""
    path = Path(path)
    text = "".join(json.dumps(finite_or_null(record), allow_nan=False, sort_keys=True) + "\n" for record in records)
    with naming(path), path.open("a+b") as handle:  # appends go to the end, wherever it has read
        end = handle.seek(0, os.SEEK_END)
        if end:
            handle.seek(end - 1)
            if handle.read(1) != b"\n":
                text = "\n" + text
        handle.write(text.encode("utf-8"))


def finite_or_null(data: Any) -> Any:
    """``data`` with every float that is not finite (NaN, ±inf) replaced by None, at any depth."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite_or_null(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [finite_or_null(value) for value in data]
    return data


def check_writable(path: str | Path, what: str, *, folder: bool) -> Path:
    """Refuse, before any work, an output that could not be written at the end.

    The check writes for real: it creates the missing folders down to the output's folder and a
    temporary file there (named as :func:`atomic_write` names its own), then removes all it created,
    so the file system is left as it was (only the nearest existing folder's modification time moves).
    Asking ``os.access`` is not enough: as root it says yes to any folder (root may override the
    permission bits), yet the kernel's virtual file systems take no new files (``mkdir /proc/x``
    fails with "No such file or directory", ``mkdir /sys/x`` with "Operation not permitted").

    Args:
        path: the output file (``folder=False``) or folder (``folder=True``).
        what: the option that names it, for the message (e.g. "-o").
        folder: whether ``path`` is a folder.

    Returns:
        ``path``, as a ``Path``.

    Raises:
        UserError: the path is a folder where a file is expected (or the reverse), an existing output
            file is read-only, a name is too long, or its folder cannot be created or written.
    """
    from planner.base.errors import UserError

    path = Path(path)
    try:
        exists = path.exists()
    except OSError as error:  # a name longer than the file system takes, a loop of symbolic links
        raise UserError(f"{what} {path} cannot be written ({error.strerror}): choose another name") from None
    if exists and path.is_dir() != folder:
        kind, expected = ("a file", "a folder") if folder else ("a folder", "a file name")
        raise UserError(f"{what} {path} is {kind}: give {expected}")
    if not folder and exists and not os.access(path, os.W_OK):
        raise UserError(f"{what} {path} cannot be written (the file is read-only): choose another place")
    name = path.name if not folder else "write-check"
    problem = _try_to_write(path if folder else path.parent, f".{name}{TEMP_TAG}{socket.gethostname()}-{os.getpid()}-")
    if problem is not None:
        raise UserError(f"{what} {path} cannot be written ({problem}): choose another place")
    return path


def _try_to_write(folder: Path, prefix: str) -> str | None:
    """Create the missing folders down to ``folder`` and a temporary file in it, then remove what was
    created; returns what failed, in words, or None when all could be written.

    A folder that another process creates meanwhile is used, not removed; one of ours that is no longer
    empty when it is removed (another process wrote into it) is left.
    """
    missing = []
    existing = folder
    while not existing.exists() and existing != existing.parent:
        missing.append(existing)
        existing = existing.parent
    created: list[Path] = []
    try:
        for new in reversed(missing):
            try:
                new.mkdir()
            except FileExistsError:
                if new.is_dir():  # another process made it meanwhile: theirs, not removed
                    continue
                return f"{new} is {'a broken link' if new.is_symlink() else 'a file'}, not a folder"
            except OSError as error:
                return _write_problem(error, new, new.parent)
            created.append(new)
        try:
            fd, temporary = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".tmp")
        except OSError as error:
            return _write_problem(error, None, folder)
        os.close(fd)
        os.unlink(temporary)
    finally:
        for made in reversed(created):
            with contextlib.suppress(OSError):  # not empty: another process writes there now
                made.rmdir()
    return None


def _write_problem(error: OSError, new_folder: Path | None, place: Path) -> str:
    """Why creating ``new_folder`` (or, with None, a file) in ``place`` failed, in words."""
    if error.errno == errno.ENOTDIR:
        blocking = new_folder or place
        while not blocking.exists() and blocking != blocking.parent:
            blocking = blocking.parent
        return f"{blocking} is a file, not a folder"
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"no permission in {place}"
    if error.errno == errno.EROFS:
        return f"{place} is on a read-only file system"
    if new_folder is not None:
        return f"cannot create folder {new_folder}: {error.strerror}"
    return f"cannot create a file in {place}: {error.strerror}"
