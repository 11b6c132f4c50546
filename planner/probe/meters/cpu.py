"""The cpu meter: real fastai training steps on the CPU, peak = live tensor bytes (fp32).

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
from planner.probe.meters.fastai_steps import LearnerCache, ProbeSteps, model_has_batchnorm, run_probe_steps
from planner.probe.meters.phases import PHASE_FORWARD_BACKWARD, PHASE_STEP
from planner.probe.probe_data import ProbeData

CPU_PROBE_BATCHES = 3


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
        dls = self.data.dataloaders(entry.item, entry.size, micro_batch, "cpu", CPU_PROBE_BATCHES)
        learn = self.learners.learner_for(entry, dls, micro_batch)
        tracker = StorageTracker(limit_bytes=cap_bytes if self.emulate_cap else None)
        tracker.track([*learn.model.parameters(), *learn.model.buffers()])
        steps = ProbeSteps(tracker.set_phase)
        oom = False
        try:
            with tracker:
                run_probe_steps(learn, steps)
        except torch.OutOfMemoryError:
            oom = True
        self.learners.release_state()  # outside the except block: its traceback holds tensors
        if oom:
            raise DoesNotFit(micro_batch, time.perf_counter() - started)
        return ProbePoint(
            micro_batch=micro_batch,
            peak_bytes=tracker.peak_bytes,
            forward_backward_bytes=tracker.phase_peaks.get(PHASE_FORWARD_BACKWARD, 0),
            step_bytes=tracker.phase_peaks.get(PHASE_STEP, 0),
            seconds=time.perf_counter() - started,
            step_seconds=steps.median_step_seconds(),
        )

    def close(self) -> None:
        self.learners.drop()
