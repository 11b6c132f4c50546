"""What a CUDA card needs for a recorded fake step: the caching allocator, plus what torch cannot see.

Two models, both fitted as a few constants (never per model) on the calibration half of timm's
published RTX 3090 runs and judged on the other half (``benchmarks/published/estimate.py``,
``benchmarks/RESULTS.md``):

- ``caching`` (the default): the step's allocations replayed through torch's caching allocator
  (:mod:`planner.probe.meters.allocator`, block rounding, 2 MiB / 20 MiB / rounded segments, best fit,
  splitting) in its steady state; card bytes = the peak of segments in use + ``overhead_bytes``.
- ``reserved``: the same replay, card bytes = its reserved peak (cached free segments included)
  + ``overhead_bytes``.
- ``flat``: card bytes = ``reserved_factor`` × allocated peak + ``overhead_bytes``; the model this
  project used before, kept to measure what the allocator model buys.

``overhead_bytes`` is everything torch's allocator statistics do not include: the CUDA context,
cuBLAS/cuDNN handles and loaded kernels, memory the driver keeps, and what cuDNN's workspaces add
at the peak (cuDNN falls back to algorithms with smaller workspaces when memory is short, so they
rarely decide an out-of-memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from planner.probe.meters.allocator import steady_state_peaks
from planner.probe.meters.fake_step import StepTrace
from planner.probe.meters.phases import PHASE_FORWARD_BACKWARD, PHASE_STEP

MIB = 2**20
Allocator = Literal["caching", "reserved", "flat"]

# Fitted on the calibration half (88 models) of the 167 published runs measured so far, against the
# 23.70 GiB torch reports for an RTX 3090 (benchmarks/published/estimate.py --fit); see benchmarks/RESULTS.md
# for the fit, the held-out check and the comparison with measured H100 peaks.
CALIBRATED_OVERHEAD_BYTES = 1744 * MIB
CALIBRATED_FLAT_OVERHEAD_BYTES = 256 * MIB
CALIBRATED_FLAT_FACTOR = 1.09


@dataclass(frozen=True)
class CardPeaks:
    """Whole-card bytes of one step (what a budget is compared with), overall and per phase."""

    card_bytes: int
    forward_backward_bytes: int
    step_bytes: int
    allocated_bytes: int
    reserved_bytes: int


@dataclass(frozen=True)
class DeviceModel:
    """How the bytes a fake step allocates become the bytes a CUDA card needs; see the module docstring.

    Attributes:
        allocator: ``caching`` or ``reserved`` (replay torch's caching allocator), or ``flat``.
        overhead_bytes: what the card holds beyond torch's allocator.
        reserved_factor: reserved over allocated, for ``flat`` only.
    """

    allocator: Allocator = "caching"
    overhead_bytes: int = CALIBRATED_OVERHEAD_BYTES
    reserved_factor: float = 1.0

    @classmethod
    def flat(cls, overhead_bytes: int = CALIBRATED_FLAT_OVERHEAD_BYTES,
             reserved_factor: float = CALIBRATED_FLAT_FACTOR) -> DeviceModel:
        return cls(allocator="flat", overhead_bytes=overhead_bytes, reserved_factor=reserved_factor)

    @classmethod
    def raw(cls) -> DeviceModel:
        """No device at all: the live tensor bytes of the step (to compare with the cpu meter)."""
        return cls(allocator="flat", overhead_bytes=0, reserved_factor=1.0)

    def peaks(self, trace: StepTrace) -> CardPeaks:
        """Card bytes for ``trace``; ``raw()`` gives the tracker's own live-byte peaks."""
        if self == DeviceModel.raw():
            return CardPeaks(trace.peak_bytes, trace.phase_peaks.get(PHASE_FORWARD_BACKWARD, 0),
                             trace.phase_peaks.get(PHASE_STEP, 0), trace.peak_bytes, trace.peak_bytes)
        replayed = steady_state_peaks(list(trace.setup), list(trace.step))
        if self.allocator == "caching":
            phases, peak = replayed.phase_active, replayed.active
        elif self.allocator == "reserved":  # segments are never released within a step: one peak
            phases, peak = {name: replayed.reserved for name in replayed.phase_active}, replayed.reserved
        else:
            phases = {name: int(self.reserved_factor * value) for name, value in replayed.phase_allocated.items()}
            peak = int(self.reserved_factor * replayed.allocated)
        return CardPeaks(
            card_bytes=peak + self.overhead_bytes,
            forward_backward_bytes=phases.get(PHASE_FORWARD_BACKWARD, 0) + self.overhead_bytes,
            step_bytes=phases.get(PHASE_STEP, 0) + self.overhead_bytes,
            allocated_bytes=replayed.allocated,
            reserved_bytes=replayed.reserved,
        )
