"""Memory sizes as people write them ("16G", "16280MiB", "1.5T") and as tables show them.

Every unit is binary, as nvidia-smi, PyTorch and Kaggle report memory: K = KB = KiB = 2^10 bytes,
M = MB = MiB = 2^20, G = GB = GiB = 2^30, T = TB = TiB = 2^40. A bare number is bytes.
"""

from __future__ import annotations

import math
import re

from planner.base.errors import UserError

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_budget(text: str) -> int:
    """Parse a memory size into bytes.

    Args:
        text: a positive number with an optional binary unit: ``16G``, ``16GB``, ``16GiB``,
            ``16280MiB``, ``16000M``, ``1.5T``; a bare number is bytes.

    Returns:
        The size in bytes (rounded down to a whole byte).

    Raises:
        UserError: the text is not a size, is zero or negative, or is a bare number under 1 MiB (a
            unit left out: ``16`` would be 16 bytes).
    """
    match = _PATTERN.match(str(text))
    if not match:
        raise UserError(
            f"cannot read the memory size {text!r}: write a positive number with a unit, "
            "for example 16G, 16GiB or 16280MiB"
        )
    number, unit = float(match.group(1)), match.group(2).upper()
    size = math.floor(number * _UNITS[unit])
    if size <= 0:
        raise UserError(f"the memory size {text!r} must be larger than zero, for example 16G")
    if not unit and not re.search(r"[bB]", str(text)) and size < _UNITS["M"]:
        raise UserError(f"the memory size {text!r} has no unit, so it means {size} bytes: write the unit, "
                        f"for example {match.group(1)}G for {match.group(1)} GiB")
    return size


def format_bytes(size: int | float | None) -> str:
    """Show a byte count in MiB below 10 GiB and in GiB above, as nvidia-smi users read it."""
    if size is None:
        return "-"
    sign = "-" if size < 0 else ""
    size = abs(size)
    if size >= 10 * 2**30:
        return f"{sign}{size / 2**30:.2f} GiB"
    return f"{sign}{size / 2**20:,.0f} MiB"
