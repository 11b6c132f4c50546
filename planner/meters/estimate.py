"""The estimate meter: the training step under FakeTensorMode, plus a model of what CUDA adds.

No computation happens and no GPU is needed: the trainer's model (built by the same
``build_learner`` on the ``meta`` device, then materialised as fake tensors) runs forward, backward
and fastai's Adam step on fake CPU tensors, and :class:`StorageTracker` counts every storage. The
CUDA run trains in fp16 under ``autocast('cuda')``; fake CPU tensors cannot run a CUDA backward, so
the step runs under CPU autocast in bfloat16 (the same bytes; CPU autocast casts a similar, not
identical, set of ops). The loss is torch's ``cross_entropy``, which fastai's
``CrossEntropyLossFlat`` calls (its tensor subclass cannot wrap fake tensors).

What the fake step does not see is added by :class:`CudaOverhead`, an explicit model whose default
constants are stated there and checked against real peaks by ``benchmarks/gpu_check.py``.

Given a card (``gpu``), the same pass also times the step: an :class:`OpCounter` rides along in the
second training step and in one no-gradient forward pass (validation, TTA), and
``planner.steptime`` turns its kernels into seconds on that card (``ProbePoint.predicted_times``).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from planner.entries import EntrySpec
from planner.gpus import GpuSpec
from planner.meters.base import PHASE_FORWARD_BACKWARD, PHASE_STEP, Meter, register_meter
from planner.meters.cpu import library_versions
from planner.meters.opcount import OpCounter
from planner.meters.tracker import StorageTracker
from planner.plan import MeasuredOn, ProbePoint, StepTimes
from planner.probe_data import ProbeData
from planner.steptime import DEFAULT_CONSTANTS, StepCosts, TimeConstants, step_seconds

PHASE_EVAL = "eval"

MIB = 2**20


@dataclass(frozen=True)
class CudaOverhead:
    """What a CUDA card holds beyond the tensors a fake step counts.

    Attributes:
        context_bytes: CUDA context, cuBLAS/cuDNN handles and loaded kernels, invisible to torch
            (300–650 MB seen on current cards; the high end is taken).
        workspace_bytes: cuBLAS and cuDNN workspaces allocated through torch's allocator,
            including cuDNN's benchmark-mode autotuning in the first iteration.
        reserved_factor: reserved peak over allocated peak (the caching allocator's fragmentation
            and segment rounding).
        block_bytes: the allocator rounds every allocation up to a multiple of this.
    """

    context_bytes: int = 640 * MIB
    workspace_bytes: int = 256 * MIB
    reserved_factor: float = 1.10
    block_bytes: int = 512

    @classmethod
    def none(cls) -> CudaOverhead:
        """No overhead: the raw bytes of the fake step (for comparing with the cpu meter)."""
        return cls(context_bytes=0, workspace_bytes=0, reserved_factor=1.0, block_bytes=1)

    def round_allocation(self, nbytes: int) -> int:
        return math.ceil(nbytes / self.block_bytes) * self.block_bytes

    def card_bytes(self, allocated_bytes: int) -> int:
        """Whole-card bytes for an allocated peak: what the budget is compared with."""
        return int(allocated_bytes * self.reserved_factor) + self.workspace_bytes + self.context_bytes


@register_meter("estimate")
class EstimateMeter(Meter):
    """Fake training steps plus :class:`CudaOverhead`; see the module docstring.

    Args:
        budget_bytes: the budget (recorded only).
        n_classes: head size when ``data`` is None.
        data: only its class count is used (shapes come from the entry).
        precision: "fp16" estimates the CUDA run; "fp32" estimates an fp32 run (the cpu meter's).
        overhead: the device model; :meth:`CudaOverhead.none` for raw tensor bytes.
        gpu: the card to time the step for (no times without one).
        time_constants: the step-time model's constants.
    """

    def __init__(self, budget_bytes: int, n_classes: int = 10, data: ProbeData | None = None,
                 precision: Literal["fp16", "fp32"] = "fp16", overhead: CudaOverhead | None = None,
                 gpu: GpuSpec | None = None, time_constants: TimeConstants = DEFAULT_CONSTANTS):
        super().__init__(budget_bytes, data.n_classes if data else n_classes)
        self.precision = precision
        self.overhead = overhead or CudaOverhead()
        self.gpu = gpu
        self.time_constants = time_constants
        self._fake_mode: Any = None
        self._arch: str | None = None
        self._learn: Any = None

    def measured_on(self) -> MeasuredOn:
        return MeasuredOn(device="estimate", precision=self.precision,
                          context_bytes=self.overhead.context_bytes, **library_versions())

    def has_batchnorm(self, entry: EntrySpec) -> bool:
        from torch.nn.modules.batchnorm import _BatchNorm

        return any(isinstance(module, _BatchNorm) for module in self._learner(entry).model.modules())

    def measure(self, entry: EntrySpec, micro_batch: int, capped: bool = True) -> ProbePoint:
        import time

        from trainer.recipe import set_grad_checkpointing

        started = time.perf_counter()
        learn = self._learner(entry)
        set_grad_checkpointing(learn.model, entry.grad_checkpointing)
        tracker = StorageTracker(round_bytes=self.overhead.round_allocation)
        counter = OpCounter() if self.gpu is not None else None
        with self._fake_mode:
            learn.create_opt()
            tracker.track([*learn.model.parameters(), *learn.model.buffers()])
            with tracker:
                for number in range(2):  # Adam's state appears in the first step; the second has it all along
                    with counter if counter is not None and number == 1 else contextlib.nullcontext():
                        self._step(learn, (tracker, counter), entry, micro_batch)
            learn.opt = None
            learn.model.zero_grad(set_to_none=True)
            if counter is not None:
                with counter:
                    self._eval_forward(learn, counter, entry, micro_batch)
        forward_backward = self.overhead.card_bytes(tracker.phase_peaks.get(PHASE_FORWARD_BACKWARD, 0))
        step = self.overhead.card_bytes(tracker.phase_peaks.get(PHASE_STEP, 0))
        return ProbePoint(micro_batch=micro_batch, peak_bytes=max(forward_backward, step),
                          forward_backward_bytes=forward_backward, step_bytes=step,
                          seconds=time.perf_counter() - started,
                          predicted_times=self._times(counter) if counter is not None else None)

    def _times(self, counter: OpCounter) -> StepTimes:
        """Seconds of the counted phases on ``self.gpu``; the per-step overhead goes with forward/backward."""
        assert self.gpu is not None

        def seconds(phase: str, per_step: bool) -> float:
            return step_seconds(StepCosts.from_counter(counter, phase), self.gpu, self.time_constants, per_step)

        return StepTimes(gpu=self.gpu.name, forward_backward=seconds(PHASE_FORWARD_BACKWARD, True),
                         optimizer_step=seconds(PHASE_STEP, False), eval_forward=seconds(PHASE_EVAL, True))

    def _step(self, learn: Any, phases: tuple, entry: EntrySpec, micro_batch: int) -> None:
        """fastai's one_batch for a plain model: forward under autocast, fp32 loss, backward, step."""
        _set_phase(phases, PHASE_FORWARD_BACKWARD)
        images = torch.empty(micro_batch, 3, *entry.size)
        targets = torch.zeros(micro_batch, dtype=torch.long)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "fp16"):
            prediction = learn.model(images)
        loss = torch.nn.functional.cross_entropy(prediction.float(), targets)
        loss.backward()
        _set_phase(phases, PHASE_STEP)
        learn.opt.step()
        learn.opt.zero_grad()

    def _eval_forward(self, learn: Any, counter: OpCounter, entry: EntrySpec, micro_batch: int) -> None:
        """One validation / TTA batch: the model in eval mode, no gradients, under autocast."""
        counter.set_phase(PHASE_EVAL)
        learn.model.eval()
        try:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "fp16"):
                learn.model(torch.empty(micro_batch, 3, *entry.size))
        finally:
            learn.model.train()

    def _learner(self, entry: EntrySpec) -> Any:
        """The trainer's learner for ``entry.arch`` as fake tensors, built once per architecture."""
        from torch._subclasses.fake_tensor import FakeTensorMode

        from trainer.recipe import build_learner, synthetic_dataloaders

        if self._arch != entry.arch:
            # timm calls .tolist() while building, which fake mode refuses: build on meta first.
            dls = synthetic_dataloaders(entry.item, (8, 8), 2, device="cpu", n_batches=1,
                                        n_classes=self.n_classes)
            with torch.device("meta"):
                learn = build_learner(dls, entry.arch, effective_batch_size=2, pretrained=False, fp16=False)
            self._learn, self._arch = None, None
            self._fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
            with self._fake_mode:
                learn.model.to_empty(device="cpu")
            learn.model.train()
            self._learn, self._arch = learn, entry.arch
        return self._learn

    def close(self) -> None:
        self._learn, self._arch, self._fake_mode = None, None, None


def _set_phase(phases: tuple, phase: str) -> None:
    for tracker in phases:
        if tracker is not None:
            tracker.set_phase(phase)
