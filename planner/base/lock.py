"""One process at a time: an exclusive advisory lock on a file that names its holder.

``fcntl.flock`` is released by the kernel when the holder exits, however it exits (kill -9
included), so a stale lock never blocks a rerun. Locks over a network file system are not
reliable: callers say so where it matters. On systems without ``fcntl`` (Windows) nothing is locked.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from planner.base.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks
    fcntl = None


@contextmanager
def held_exclusively(lock_path: Path, refuse: Callable[[str], str]) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` while the block runs; the file names the holder.

    Args:
        lock_path: the lock file (created if missing; its content is "pid N on HOST since TIME").
        refuse: builds the one-line refusal from the holder's description.

    Raises:
        UserError: another process holds the lock.
    """
    if fcntl is None:
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+", encoding="utf-8") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise UserError(refuse(lock.read().strip() or "another process")) from None
        lock.seek(0)
        lock.truncate()
        since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        lock.write(f"pid {os.getpid()} on {socket.gethostname()} since {since}\n")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
