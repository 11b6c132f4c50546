"""The cpu meter: real fastai training steps on the CPU, peak = live tensor bytes (fp32).

fastai's ``to_fp16`` does nothing on the CPU (its autocast is CUDA-only), so these are fp32 steps,
exactly as `planner run --device cpu` trains. The bytes come from :class:`StorageTracker`; with
``limit_bytes`` the tracker raises ``torch.OutOfMemoryError`` like a full card would, which makes
the out-of-memory paths of the search testable without a GPU.
"""

from __future__ import annotations

import time

import torch

from planner.entries import EntrySpec
from planner.meters.base import PHASE_FORWARD_BACKWARD, PHASE_STEP, Meter, register_meter
from planner.meters.fastai_steps import LearnerCache, ProbeSteps, model_has_batchnorm, run_probe_steps
from planner.meters.tracker import StorageTracker
from planner.plan import MeasuredOn, ProbePoint
from planner.probe_data import ProbeData
from planner.threads import use_cpu_threads

CPU_PROBE_BATCHES = 3


def library_versions() -> dict[str, str]:
    """torch, timm and fastai versions, for ``measured_on``."""
    import fastai
    import timm

    return {"torch": torch.__version__, "timm": timm.__version__, "fastai": fastai.__version__}


@register_meter("cpu")
class CpuMeter(Meter):
    """Real steps on the CPU; see the module docstring.

    Args:
        budget_bytes: the budget (not enforced unless ``limit_bytes`` is given).
        n_classes: head size when ``data`` is None.
        data: where batches come from (generated images by default).
        limit_bytes: make the tracker raise out-of-memory above this many live bytes.
    """

    def __init__(self, budget_bytes: int, n_classes: int = 10, data: ProbeData | None = None,
                 limit_bytes: int | None = None):
        self.data = data or ProbeData()
        super().__init__(budget_bytes, self.data.n_classes if data else n_classes)
        self.limit_bytes = limit_bytes
        self.learners = LearnerCache(fp16=False)
        use_cpu_threads()  # the cores other processes leave free: a busy neighbour costs its share only

    def measured_on(self) -> MeasuredOn:
        return MeasuredOn(device="cpu", precision="fp32", synthetic_data=self.data.synthetic,
                          **library_versions())

    def has_batchnorm(self, entry: EntrySpec) -> bool:
        return model_has_batchnorm(entry.arch, self.n_classes)

    def measure(self, entry: EntrySpec, micro_batch: int, capped: bool = True) -> ProbePoint:
        started = time.perf_counter()
        dls = self.data.dataloaders(entry.item, entry.size, micro_batch, "cpu", CPU_PROBE_BATCHES)
        learn = self.learners.learner_for(entry, dls, micro_batch)
        tracker = StorageTracker(limit_bytes=self.limit_bytes if capped else None)
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
            return ProbePoint(micro_batch=micro_batch, peak_bytes=None, oom=True,
                              seconds=time.perf_counter() - started)
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
