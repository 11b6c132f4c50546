"""The calibration / held-out split of the published GPU benchmark, by a stable hash of the name.

A model belongs to the calibration half when the first byte of ``sha256(name)`` (the CSV's name,
UTF-8) is even, and to the held-out half otherwise. The split depends on nothing but the name, so
every study of the published runs (time, memory) can share it, constants fitted on one half are
judged on the other, and adding or removing models never moves a model between halves.
"""

from __future__ import annotations

import hashlib


def is_calibration(name: str) -> bool:
    """True for the calibration half (first byte of sha256(name) even), False for the held-out half."""
    return hashlib.sha256(name.encode("utf-8")).digest()[0] % 2 == 0


def half(name: str) -> str:
    """"calibration" or "held-out"."""
    return "calibration" if is_calibration(name) else "held-out"
