"""The one exception type for user mistakes: the CLI prints its message as one line and exits 2."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (bad option, bad file, bad data); the message names the fix."""


class PlanDoesNotFit(Exception):
    """Raised by the CLI layer when a written plan has entries that do not fit (exit code 3)."""


def first_line(error: BaseException, default: str = "") -> str:
    """The first line of an error's message (or ``default``, or its type, when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else default or type(error).__name__
