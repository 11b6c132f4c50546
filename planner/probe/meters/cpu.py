"""The cpu meter: a real fastai run in miniature on the CPU, peak = live tensor bytes (fp32).

fastai's ``to_fp16`` does nothing on the CPU (its autocast is CUDA-only), so these are fp32 steps,
exactly as `planner run --device cpu` trains. The bytes come from :class:`StorageTracker`; with
``limit_bytes`` the tracker raises ``torch.OutOfMemoryError`` like a full card would, which makes
the out-of-memory paths of the search testable without a GPU.
"""

from __future__ import annotations

import time

import torch

from planner.base.compat import installed_version
from planner.base.entries import EntrySpec
from planner.base.plan import MeasuredOn, ProbePoint
from planner.base.threads import use_cpu_threads
from planner.base.tracker import StorageTracker
from planner.probe.meters.base import PROBE_METERS, DoesNotFit, ProbeMeter
from planner.probe.meters.fastai_steps import (
    LearnerCache,
    Rehearsal,
    model_has_batchnorm,
    rehearsal_sizes,
    rehearse,
)
from planner.probe.meters.phases import PHASE_FORWARD_BACKWARD, PHASE_STEP
from planner.probe.probe_data import ProbeData


def library_versions() -> dict[str, str]:
    """torch, timm and fastai versions, for ``measured_on`` (from their metadata: fastai takes seconds
    to import, and a plan answered from the estimate store needs it for nothing else)."""
    return {"torch": torch.__version__, "timm": installed_version("timm"), "fastai": installed_version("fastai")}


@PROBE_METERS.register("cpu")
class CpuMeter(ProbeMeter):
    """Real steps on the CPU; see the module docstring.

    Args:
        n_classes: head size when ``data`` is None.
        data: where batches come from (generated images by default).
        emulate_cap: run out of memory above the cap a measurement is given, as a card of that size
            would (the tracker raises); by default the cap is ignored and every step completes.
    """

    def __init__(self, n_classes: int = 10, data: ProbeData | None = None, emulate_cap: bool = False):
        self.data = data or ProbeData()
        super().__init__(self.data.n_classes if data else n_classes)
        self.emulate_cap = emulate_cap
        self.learners = LearnerCache(fp16=False)
        use_cpu_threads()  # the cores other processes leave free: a busy neighbour costs its share only

    def measured_on(self) -> MeasuredOn:
        return MeasuredOn(device="cpu", precision="fp32", synthetic_data=self.data.synthetic,
                          **library_versions())

    def has_batchnorm(self, entry: EntrySpec) -> bool:
        return model_has_batchnorm(entry.arch, self.n_classes)

    def measure(self, entry: EntrySpec, micro_batch: int, cap_bytes: int | None = None) -> ProbePoint:
        started = time.perf_counter()
        n_batches, n_valid = rehearsal_sizes(micro_batch)
        dls = self.data.dataloaders(entry.item, entry.size, micro_batch, "cpu", n_batches, n_valid)
        learn = self.learners.learner_for(entry, dls, micro_batch)
        tracker = StorageTracker(limit_bytes=cap_bytes if self.emulate_cap else None)
        tracker.track([*learn.model.parameters(), *learn.model.buffers()])
        rehearsal = Rehearsal(tracker.set_phase, lambda: tracker.peak_bytes)
        oom = False
        try:
            with tracker:
                rehearse(learn, rehearsal)
        except torch.OutOfMemoryError:
            oom = True
        self.learners.release_state()  # outside the except block: its traceback holds tensors
        if oom:
            raise DoesNotFit(micro_batch, time.perf_counter() - started)
        phases = dict(tracker.phase_peaks)
        return ProbePoint(
            micro_batch=micro_batch,
            peak_bytes=tracker.peak_bytes,
            forward_backward_bytes=phases.get(PHASE_FORWARD_BACKWARD, 0),
            step_bytes=phases.get(PHASE_STEP, 0),
            seconds=time.perf_counter() - started,
            step_seconds=rehearsal.median_step_seconds(),
            phase_peaks=phases,
            peak_phase=max(phases, key=phases.__getitem__),
            epoch_growth_bytes=rehearsal.epoch_growth,
        )

    def close(self) -> None:
        self.learners.drop()
