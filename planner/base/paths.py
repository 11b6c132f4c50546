"""A folder the user named, made absolute: a symbolic link loop on its way is one line naming the link
and the fix, not Python's RuntimeError from ``Path.resolve`` (3.12 and older) nor, later, a folder
that is silently not there."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from planner.base.errors import UserError


def looping_link(path: Path) -> Path | None:
    """The link on ``path`` (itself or a folder above it) where following links goes round in a loop, or None."""
    try:
        path.stat()
        return None
    except OSError as error:
        if error.errno != errno.ELOOP:
            return None
    path = path.absolute()
    for step in [*reversed(path.parents), path]:
        try:
            step.stat()
        except OSError as error:
            return step if error.errno == errno.ELOOP else None
    return None


def resolved_folder(path: str | Path, what: str) -> Path:
    """``path`` with ``~`` expanded and symbolic links followed, absolute.

    Args:
        path: the folder as the user gave it.
        what: what it is, for the message ("data folder", "run folder").

    Raises:
        UserError: following its links loops (the message names the link and what it points to).
    """
    path = Path(path).expanduser()
    link = looping_link(path)
    if link is not None:
        raise UserError(f"{what} {path} cannot be opened: the symbolic link {link} (→ {os.readlink(link)}) goes "
                        f"round in a loop; point it at the {what} (ln -sfn FOLDER {link}) or give the {what} itself")
    return path.resolve()
