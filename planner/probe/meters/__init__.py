"""Meters: ways to measure the peak memory of a training step, registered by name.

Importing this package registers `cpu`, `cuda` and `estimate`; heavy libraries (fastai, timm) are
imported only when a meter measures.
"""

from planner.probe.meters import cpu, cuda, estimate  # noqa: F401  (registration side effect)
from planner.probe.meters.base import PROBE_METERS, DoesNotFit, ProbeMeter, get_meter

__all__ = ["PROBE_METERS", "DoesNotFit", "ProbeMeter", "get_meter"]
