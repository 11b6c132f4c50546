"""The one exception type for user mistakes: the CLI prints its message as one line and exits 2."""


class UserError(Exception):
    """A mistake the user can fix (bad option, bad file, bad data); the message names the fix."""


class PlanDoesNotFit(Exception):
    """Raised by the CLI layer when a written plan has entries that do not fit (exit code 3)."""
