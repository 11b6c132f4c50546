"""Standard output and error as the CLI writes them, in any terminal, log or pipe.

- A terminal or log whose encoding is not UTF-8 (``LANG=de_DE.ISO-8859-1``, ``PYTHONIOENCODING=ascii``)
  gets every character it cannot show as a plain ASCII stand-in (``×`` as ``x``, ``→`` as ``->``,
  otherwise ``?``) instead of a UnicodeEncodeError ending the command; a file name's undecodable bytes
  are written back as they were.
- A pipe whose reader has gone (``planner run ... | head -1``, a pager quit early) stops the command as
  Ctrl-C does: the entry in training is marked interrupted, files stay whole, one line on stderr says
  so. Python's default would end it with exit 1 and no word, the entry left "running".
"""

from __future__ import annotations

import codecs
import os
import sys
import unicodedata
from typing import Any, TextIO

FALLBACK_ERRORS = "planner-ascii-fallback"
"""The codec error handler :func:`guard_streams` gives standard output and error."""
EXIT_OUTPUT_CLOSED = 141  # as a shell reports a command ended by SIGPIPE

_STAND_INS = {
    "×": "x", "→": "->", "←": "<-", "…": "...", "–": "-", "—": "-", "−": "-", "≈": "~", "≤": "<=", "≥": ">=",
    "±": "+-", "·": ".", "•": "*", "‘": "'", "’": "'", "“": '"', "”": '"', "µ": "u", "²": "2", "³": "3",
    "█": "#", "━": "-", "─": "-", "│": "|", "✓": "v", "✗": "x",
}


def _fallback(error: UnicodeError) -> tuple[str | bytes, int]:
    """Stand-ins for the characters an output encoding lacks: ASCII look-alikes, the original bytes of a
    file name's undecodable ones (as ``surrogateescape``), else ``?``."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    text = error.object[error.start:error.end]
    if all("\udc80" <= char <= "\udcff" for char in text):
        return bytes(ord(char) - 0xDC00 for char in text), error.end
    out = []
    for char in text:
        plain = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
        out.append(_STAND_INS.get(char) or plain or "?")
    return "".join(out), error.end


codecs.register_error(FALLBACK_ERRORS, _fallback)


class OutputClosed(KeyboardInterrupt):
    """Standard output or error went to a pipe whose reader has gone: raised where the command writes, so
    that it stops as on Ctrl-C (a KeyboardInterrupt: every stage already cleans up for one)."""

    received = False


class _Guarded:
    """A text stream whose writes never fail on a vanished reader: the first one raises
    :class:`OutputClosed`, and from then on everything written is dropped (the file descriptor is pointed at
    the null device, so that Python's own flush at exit succeeds too)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._closed = False

    def write(self, text: str) -> int:
        return self._guard(self._stream.write, text)

    def flush(self) -> None:
        self._guard(self._stream.flush)

    def _guard(self, call: Any, *args: Any) -> Any:
        if self._closed:
            return len(args[0]) if args else None
        try:
            return call(*args)
        except BrokenPipeError:
            self._closed = True
            _drop(self._stream)
            if OutputClosed.received:  # the other stream broke first: the command is stopping already
                return len(args[0]) if args else None
            OutputClosed.received = True
            raise OutputClosed from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _drop(stream: TextIO) -> None:
    """Point ``stream``'s descriptor at the null device: what it still buffers, and later writes, go nowhere."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, stream.fileno())
        os.close(null)
    except (OSError, ValueError):
        pass


def guard_streams() -> None:
    """Give ``sys.stdout`` and ``sys.stderr`` the ASCII fallback and the closed-pipe stop; call once, first
    thing in the entry point, before anything prints."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None or isinstance(stream, _Guarded):
            continue
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors=FALLBACK_ERRORS)
        setattr(sys, name, _Guarded(stream))
