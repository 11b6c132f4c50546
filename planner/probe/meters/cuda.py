"""The cuda meter: a real fastai run in miniature on the GPU, peak = reserved peak + non-torch bytes.

The run is the trainer's (``planner.probe.meters.fastai_steps.Rehearsal``: the frozen epoch,
unfreezing, unfrozen epochs with validation and its partial last batch until the reserved peak stops
growing, TTA; fp16 via ``to_fp16``, GradScaler, batch transforms on the GPU, ``cudnn.benchmark`` on
as ``planner run`` sets it). The budget is a whole card: the allocator is
capped at budget minus this process's non-torch bytes, so a larger card fails where the smaller
one would (imperfectly: cuDNN may choose other algorithms with more memory free). Each probe
starts from an emptied cache and fresh peak statistics; after an OOM the learner's state is dropped
outside the ``except`` block and the cache emptied. Probes run in one process, so the allocator's
fragmentation history carries over between probes; emptying the cache before each probe returns
every cached segment, which makes the remaining carry-over the weights of the cached model only.
The allocator's configuration is the one `planner run` uses (``planner.base.allocator``: set before
CUDA starts, recorded in ``measured_on``).
"""

from __future__ import annotations

import time

import torch

from planner.base import cuda_device as gpu
from planner.base.allocator import allocator_in_force, use_allocator
from planner.base.entries import EntrySpec
from planner.base.plan import MeasuredOn, ProbePoint
from planner.probe.meters.base import PROBE_METERS, DoesNotFit, ProbeMeter
from planner.probe.meters.cpu import library_versions
from planner.probe.meters.fastai_steps import (
    LearnerCache,
    Rehearsal,
    model_has_batchnorm,
    rehearsal_sizes,
    rehearse,
)
from planner.probe.meters.phases import PHASE_FORWARD_BACKWARD, PHASE_FROZEN, PHASE_STEP
from planner.probe.probe_data import ProbeData


class CudaPhasePeaks:
    """Allocated and reserved peaks per phase, from torch's allocator statistics (reset at each
    phase's start), and the reserved peak so far."""

    def __init__(self) -> None:
        self.phase = PHASE_FROZEN
        self.allocated: dict[str, int] = {}
        self.reserved: dict[str, int] = {}

    def enter(self, phase: str) -> None:
        self.close_phase()
        self.phase = phase

    def close_phase(self) -> None:
        self.allocated[self.phase] = max(self.allocated.get(self.phase, 0), torch.cuda.max_memory_allocated())
        self.reserved[self.phase] = max(self.reserved.get(self.phase, 0), torch.cuda.max_memory_reserved())
        torch.cuda.reset_peak_memory_stats()

    def reserved_so_far(self) -> int:
        """The reserved peak of every phase so far, the open one included."""
        return max([torch.cuda.max_memory_reserved(), *self.reserved.values()])


@PROBE_METERS.register("cuda")
class CudaMeter(ProbeMeter):
    """Real steps on the GPU; see the module docstring."""

    def __init__(self, n_classes: int = 10, data: ProbeData | None = None):
        if not torch.cuda.is_available():
            raise RuntimeError("the cuda meter needs a CUDA GPU; use --device estimate")
        from planner.base.recipe import prepare_device

        use_allocator()  # before CUDA starts here: torch reads the setting once
        self.data = data or ProbeData()
        super().__init__(self.data.n_classes if data else n_classes)
        torch.cuda.init()
        prepare_device("cuda")
        torch.empty(1, device="cuda")  # create the context so that it can be measured
        self.learners = LearnerCache(fp16=True)
        self.context_bytes = gpu.non_torch_bytes()

    def measured_on(self) -> MeasuredOn:
        return MeasuredOn(device="cuda", precision="fp16", gpu=gpu.gpu_name(),
                          gpu_total_bytes=gpu.gpu_total_bytes(), context_bytes=self.context_bytes,
                          synthetic_data=self.data.synthetic, allocator=allocator_in_force(),
                          **library_versions())

    def has_batchnorm(self, entry: EntrySpec) -> bool:
        return model_has_batchnorm(entry.arch, self.n_classes)

    def measure(self, entry: EntrySpec, micro_batch: int, cap_bytes: int | None = None) -> ProbePoint:
        started = time.perf_counter()
        n_batches, n_valid = rehearsal_sizes(micro_batch)
        dls = self.data.dataloaders(entry.item, entry.size, micro_batch, "cuda", n_batches, n_valid)
        learn = self.learners.learner_for(entry, dls, micro_batch)
        gpu.release_cached()
        if cap_bytes is not None:
            gpu.cap_to_budget(cap_bytes)
        torch.cuda.reset_peak_memory_stats()
        peaks = CudaPhasePeaks()
        rehearsal = Rehearsal(peaks.enter, peaks.reserved_so_far)
        oom = False
        try:
            rehearse(learn, rehearsal)
        except torch.OutOfMemoryError:
            oom = True
        peaks.close_phase()
        non_torch = gpu.non_torch_bytes()
        self.learners.release_state()  # outside the except block: its traceback holds tensors
        gpu.uncap()
        gpu.release_cached()
        if oom:
            raise DoesNotFit(micro_batch, time.perf_counter() - started)
        peak = max(peaks.reserved.values()) + non_torch
        overhead = peak - max(peaks.allocated.values())  # allocator slack + context, shared by phases
        return ProbePoint(
            micro_batch=micro_batch,
            peak_bytes=peak,
            forward_backward_bytes=peaks.allocated.get(PHASE_FORWARD_BACKWARD, 0) + overhead,
            step_bytes=peaks.allocated.get(PHASE_STEP, 0) + overhead,
            seconds=time.perf_counter() - started,
            step_seconds=rehearsal.median_step_seconds(),
            phase_peaks=dict(peaks.reserved),
            peak_phase=max(peaks.reserved, key=peaks.reserved.__getitem__),
            epoch_growth_bytes=rehearsal.epoch_growth,
        )

    def close(self) -> None:
        self.learners.drop()
        gpu.release_cached()
