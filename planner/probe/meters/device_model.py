"""What a CUDA card needs for a recorded fake step: the caching allocator, plus what torch cannot see.

Three models, each a few constants (never per model), fitted on the calibration half of measured
runs and judged on the other half (timm's published RTX 3090 runs: ``benchmarks/published/estimate.py``;
today's stack: ``benchmarks/gpu/today_stack_fit.py``; ``benchmarks/RESULTS.md``):

- ``caching`` (the default, the published runs' stack): the step's allocations replayed through
  torch's caching allocator (:mod:`planner.probe.meters.allocator`, block rounding, 2 MiB / 20 MiB /
  rounded segments, best fit, splitting) in its steady state; card bytes = the peak of segments in
  use + ``overhead_bytes``.
- ``reserved`` (today's stack): the same replay, card bytes = its reserved peak (cached free segments
  included) + ``overhead_bytes``.
- ``flat``: card bytes = ``reserved_factor`` × allocated peak + ``overhead_bytes``; the model this
  project used before, kept to measure what the allocator model buys.

In every model the replay's bytes are multiplied by ``reserved_factor`` (1.0 for the published runs'
stack) before ``overhead_bytes`` is added: today's allocator reserves more than the replay's segments,
by a proportion, not a constant (:mod:`planner.probe.meters.stacks` holds each stack's constants).

``overhead_bytes`` is what the proportion leaves: with a factor of 1.0, everything torch's allocator
statistics do not include: the CUDA context,
cuBLAS/cuDNN handles and loaded kernels, memory the driver keeps, and what cuDNN's workspaces add
at the peak (cuDNN falls back to algorithms with smaller workspaces when memory is short, so they
rarely decide an out-of-memory).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from planner.probe.meters.allocator import sequence_peaks, steady_state_peaks
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
    """Whole-card bytes of one step or a run's sequence (what a budget is compared with), overall and per phase."""

    card_bytes: int
    forward_backward_bytes: int
    step_bytes: int
    allocated_bytes: int
    reserved_bytes: int
    active_bytes: int = 0
    phase_bytes: dict[str, int] = field(default_factory=dict)
    """Each phase's peak in the model's replay bytes (allocated, active or reserved), before the card's
    factor and overhead."""


@dataclass(frozen=True)
class DeviceModel:
    """How the bytes a fake step allocates become the bytes a CUDA card needs; see the module docstring.

    Attributes:
        allocator: ``caching`` or ``reserved`` (replay torch's caching allocator), or ``flat``.
        overhead_bytes: what the card holds beyond torch's allocator.
        reserved_factor: what the card reserves per byte of the replay's peak (1.0: as replayed).
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
        """Card bytes for ``trace``; ``raw()`` gives the tracker's own live-byte peaks.

        A run's sequence (``trace.whole_run``) is replayed once, one step twice (its steady state).
        """
        if self == DeviceModel.raw():
            return CardPeaks(trace.peak_bytes, trace.phase_peaks.get(PHASE_FORWARD_BACKWARD, 0),
                             trace.phase_peaks.get(PHASE_STEP, 0), trace.peak_bytes, trace.peak_bytes,
                             trace.peak_bytes, dict(trace.phase_peaks))
        if trace.whole_run:
            replayed = sequence_peaks(list(trace.setup), list(trace.step))
        else:
            replayed = steady_state_peaks(list(trace.setup), list(trace.step))
        if self.allocator == "caching":
            phases, peak = replayed.phase_active, replayed.active
        elif self.allocator == "reserved" and trace.whole_run:  # reserved grows phase by phase
            phases, peak = replayed.phase_reserved, replayed.reserved
        elif self.allocator == "reserved":  # segments are never released within a step: one peak
            phases, peak = {name: replayed.reserved for name in replayed.phase_active}, replayed.reserved
        else:
            phases, peak = replayed.phase_allocated, replayed.allocated
        return CardPeaks(
            card_bytes=self.card_bytes(peak),
            forward_backward_bytes=self.card_bytes(phases.get(PHASE_FORWARD_BACKWARD, 0)),
            step_bytes=self.card_bytes(phases.get(PHASE_STEP, 0)),
            allocated_bytes=replayed.allocated,
            reserved_bytes=replayed.reserved,
            active_bytes=replayed.active,
            phase_bytes=dict(phases),
        )

    def card_bytes(self, replayed_bytes: int) -> int:
        """The card's bytes for ``replayed_bytes`` of this model's replay peak (allocated, active or reserved)."""
        return int(self.reserved_factor * replayed_bytes) + self.overhead_bytes
