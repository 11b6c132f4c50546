"""The one exception type for user mistakes: the CLI prints its message as one line and exits 2."""

from __future__ import annotations

import errno


class UserError(Exception):
    """A mistake the user can fix (bad option, bad file, bad data); the message names the fix."""


class PlanDoesNotFit(Exception):
    """Raised by the CLI layer when a written plan has entries that do not fit (exit code 3)."""


def first_line(error: BaseException, default: str = "") -> str:
    """The first line of an error's message (or ``default``, or its type, when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else default or type(error).__name__


PERMISSION_FIX = "give this user access to it (chmod, chown) or use another path"
PATH_FAULTS = {errno.ENAMETOOLONG: "a name in a path is at most 255 bytes on most file systems: give a shorter one",
               errno.EACCES: PERMISSION_FIX}
"""Errors of a path the file system refuses to this user, wherever it was given or found (an option, a file in
the run folder or planner's cache), and the fix of each."""


def path_fault(error: BaseException) -> str | None:
    """One line for a path the file system refuses (a name too long, no permission), naming the path and the
    fix; None for any other error."""
    if not isinstance(error, OSError) or error.errno not in PATH_FAULTS:
        return None
    return f"{error.filename or 'a path'}: {error.strerror}: {PATH_FAULTS[error.errno]}"
