"""Which part of the machine bounds a time: the slowest of named parts that run side by side."""

from __future__ import annotations


def slowest_bound(**seconds: float) -> tuple[str, float]:
    """The name and seconds of the slowest part, for parts that overlap (the GPU computes while the
    host launches and the loader's workers decode the next batches), so the slowest sets the pace.

    Args:
        seconds: each part's seconds by name, e.g. ``device=12.0, loader=30.5``.

    Returns:
        ``(name, seconds)`` of the largest; on a tie, the first named.

    Raises:
        ValueError: no part given.
    """
    if not seconds:
        raise ValueError("slowest_bound needs at least one named part")
    name = max(seconds, key=seconds.__getitem__)
    return name, seconds[name]
