"""The estimate meter: the trainer's fastai run on meta tensors, as a CUDA card would hold it.

No computation happens and no GPU is needed. The fastai recipe runs through the estimating core
(:mod:`planner.probe.meters.fake_step`): the trainer's model (built by the same ``build_learner`` on the
``meta`` device, and stepped on meta tensors), fastai's Adam, the forward pass and loss under CUDA's
fp16 autocast policy (:mod:`planner.probe.meters.cuda_autocast`,
with CUDA's attention and dropout kernels, :mod:`planner.probe.meters.cuda_kernels`; fastai's
``to_fp16`` leaves autocast after the loss), the loss scaled by a GradScaler, backward, and the
optimizer step. The loss is torch's ``cross_entropy``, which fastai's ``CrossEntropyLossFlat``
calls (its tensor subclass cannot wrap meta tensors). Attention takes the path today's timm takes
on CUDA (fused ``scaled_dot_product_attention`` where the model's modules use it).

A probe is a run's memory story in miniature, in the order `planner run` (``fine_tune``) meets it
(:meth:`FakeStep.run_sequence`, phases as the cpu and cuda meters name them): a frozen training
step (gradients and optimizer state for what still trains: the head, and the body's norm layers
fastai trains), a validation pass at the run's validation batch size
(:func:`planner.base.recipe.validation_batch_size`) ending in a partial batch, unfreezing, unfrozen
steps (the whole model's gradients and optimizer state created as the run creates them, then the
steady state), validation again and a TTA pass. The device model
(:mod:`planner.probe.meters.device_model`) replays the whole sequence once through torch's caching
allocator, so the segments an earlier phase caches are what later phases reuse or split, and
scales and offsets its peak by the constants of the stack the card will run with
(:mod:`planner.probe.meters.stacks`: the installed torch and planner's allocator configuration, or
the card's own calibration by `planner calibrate`, :mod:`planner.probe.meters.calibration`); the
plan records which constants and what they were fitted on (``measured_on.device_model``), each
phase's replayed peak (``phase_peaks``) and the phase that sets the peak (``peak_phase``). A probe is
remembered per architecture, size, gradient checkpointing and micro-batch, since the sequence does
not depend on the item transform: a second entry of the same architecture and size costs nothing to
confirm. With gradient checkpointing (timm's ``set_grad_checkpointing``) the recomputation in the
backward pass runs under the same CUDA autocast policy, as ``torch.utils.checkpoint`` restores
autocast for it.

Given a card (``gpu``), the same pass also times the step: an :class:`OpCounter` rides along in the
steady unfrozen step and in the first full validation batch (validation, TTA), ``planner.probe.steptime`` turns its
kernels into the card's seconds (``ProbePoint.predicted_times``), and the ops it dispatched and the
parameter tensors are the host's work (``ProbePoint.host_work``, timed by ``planner.probe.hosttime``).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import torch

from planner.base.allocator import choose_allocator
from planner.base.compat import native_meta_kernels
from planner.base.entries import EntrySpec
from planner.base.gpus import GpuSpec
from planner.base.plan import DeviceModelRecord, HostWork, MeasuredOn, ProbePoint, Size, StepTimes
from planner.base.recipe import validation_batch_size
from planner.probe.meters.base import PROBE_METERS, ProbeMeter
from planner.probe.meters.calibration import stack_model_for, stack_of
from planner.probe.meters.cpu import library_versions
from planner.probe.meters.cuda_kernels import GpuArch
from planner.probe.meters.device_model import DeviceModel
from planner.probe.meters.estimate_store import EstimateStore
from planner.probe.meters.fake_step import FakeStep, StepRecipe
from planner.probe.meters.fastai_steps import LAST_VALID_BATCH, has_batchnorm_layers
from planner.probe.meters.opcount import OpCounter
from planner.probe.meters.phases import PHASE_FORWARD_BACKWARD, PHASE_STEP, PHASE_VALID, RUN_PHASES
from planner.probe.meters.stacks import StackModel
from planner.probe.probe_data import ProbeData
from planner.probe.steptime import DEFAULT_CONSTANTS, StepCosts, TimeConstants, device_seconds


def _point_key(entry: EntrySpec, micro_batch: int) -> tuple[str, Size, bool, int]:
    """A probe's key among this run's answers (the item transform does not count)."""
    return entry.arch, entry.size, entry.grad_checkpointing, micro_batch


def _probe_question(entry: EntrySpec, micro_batch: int) -> dict[str, Any]:
    """What a probe's answer depends on besides the meter (the item transform does not count)."""
    return {"arch": entry.arch, "size": list(entry.size), "grad_checkpointing": entry.grad_checkpointing,
            "micro_batch": micro_batch}


def _model_facts(stored: dict[str, Any]) -> dict[str, bool]:
    """The stored facts of a model (whether it, and its body, train BatchNorm), checked."""
    facts = {name: stored[name] for name in ("batchnorm", "body_batchnorm")}
    if not all(isinstance(fact, bool) for fact in facts.values()):
        raise TypeError("a model fact is not true or false")
    return facts


def _replay_peaks(stored: dict[str, Any]) -> dict[str, int]:
    """The stored allocator replay's peaks in bytes, checked."""
    peaks = {name: stored[name] for name in ("allocated", "active", "reserved")}
    if not all(type(peak) is int and peak >= 0 for peak in peaks.values()):
        raise ValueError("a replay peak is not a count of bytes")
    return peaks


def planning_model(gpu: GpuSpec | None) -> tuple[StackModel, str | None]:
    """The device model the product plans with: ``gpu``'s calibration with the installed torch and the
    allocator configuration planner chose, else the built-in one of the closest stack (and a note)."""
    stack = stack_of(gpu.name if gpu else None, torch.__version__, choose_allocator().conf)
    return stack_model_for(stack)


def fastai_recipe(entry: EntrySpec, n_classes: int, precision: Literal["fp16", "fp32"],
                  arch: GpuArch | None = None) -> StepRecipe:
    """The trainer's step (``vision_learner``, fastai Adam, ``to_fp16`` on CUDA, ``fine_tune``'s
    freezing and unfreezing) for the core."""
    from planner.base.recipe import build_learner, synthetic_dataloaders

    learner: dict[str, Any] = {}
    dls = synthetic_dataloaders(entry.item, (8, 8), 2, device="cpu", n_batches=1, n_classes=n_classes)

    def build() -> torch.nn.Module:
        learner["learn"] = build_learner(dls, entry.arch, effective_batch_size=2, pretrained=False, fp16=False)
        return learner["learn"].model

    def optimizer(model: torch.nn.Module) -> Any:
        learn = learner["learn"]
        learn.create_opt()
        return learn.opt

    def batch(size: int, image: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.empty(size, 3, *image), torch.zeros(size, dtype=torch.long)

    def loss(prediction: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(prediction.float(), targets)

    fp16 = precision == "fp16"
    return StepRecipe(build_model=build, make_optimizer=optimizer, make_batch=batch, loss=loss,
                      precision="cuda_fp16" if fp16 else "fp32", backward_in_autocast=False,
                      grads_set_to_none=False, scale_loss=fp16, arch=arch or GpuArch(),
                      freeze=lambda: learner["learn"].freeze(), unfreeze=lambda: learner["learn"].unfreeze())


@PROBE_METERS.register("estimate")
class EstimateMeter(ProbeMeter):
    """A run's sequence of fake steps plus a device model; see the module docstring.

    A fake step costs the same at any micro-batch and never runs out of memory, so the search opens
    with the largest candidates (``cost_grows_with_batch`` False); it needs no device, so
    architectures are probed in worker processes side by side (``probes_apart``).

    Args:
        n_classes: head size when ``data`` is None.
        data: only its class count is used (shapes come from the entry).
        precision: "fp16" estimates the CUDA run; "fp32" estimates an fp32 run (the cpu meter's).
        device: the device model; :meth:`DeviceModel.raw` for the step's live tensor bytes; None: the
            stack's (:func:`planning_model`), which the plan records.
        arch: the card's compute capability (decides the fused attention kernel).
        gpu: the card to time the step for (no times without one).
        time_constants: the step-time model's constants.
    """

    cost_grows_with_batch = False
    probes_apart = True

    def __init__(self, n_classes: int = 10, data: ProbeData | None = None,
                 precision: Literal["fp16", "fp32"] = "fp16", device: DeviceModel | None = None,
                 arch: GpuArch | None = None, gpu: GpuSpec | None = None,
                 time_constants: TimeConstants = DEFAULT_CONSTANTS):
        super().__init__(data.n_classes if data else n_classes)
        self.precision = precision
        self.stack_model, self.stack_note = (None, None) if device else planning_model(gpu)
        self.device = device or self.stack_model.device
        self.arch = arch or GpuArch()
        self.gpu = gpu
        self.time_constants = time_constants
        self._step: FakeStep | None = None
        self._arch_name: str | None = None
        self._points: dict[tuple[str, Size, bool, int], ProbePoint] = {}
        self._replays: dict[tuple[str, Size, bool, int], dict[str, int]] = {}
        self._store = EstimateStore({
            "n_classes": self.n_classes, "precision": precision, "device": self.device, "arch": self.arch,
            "gpu": gpu, "time_constants": time_constants}) if EstimateStore.enabled() else None

    def __getstate__(self) -> dict[str, Any]:
        """A copy for a worker process, without the model of the last architecture (its tensors are not
        worth pickling, and the worker builds its own)."""
        return {**self.__dict__, "_step": None, "_arch_name": None}

    def measured_on(self) -> MeasuredOn:
        return MeasuredOn(device="estimate", precision=self.precision, context_bytes=self.device.overhead_bytes,
                          allocator=choose_allocator(), device_model=self._device_record(), **library_versions())

    def _device_record(self) -> DeviceModelRecord | None:
        """The plan's record of the stack's device model (None when the caller gave the constants)."""
        chosen = self.stack_model
        if chosen is None:
            return None
        return DeviceModelRecord(replay=chosen.device.allocator, reserved_factor=chosen.device.reserved_factor,
                                 overhead_bytes=chosen.device.overhead_bytes, fitted_on=chosen.fitted_on,
                                 points=chosen.points, calibrated=chosen.calibrated,
                                 median_error=chosen.errors.get("median"), worst_under=chosen.errors.get("worst_under"),
                                 note=self.stack_note)

    def has_batchnorm(self, entry: EntrySpec) -> bool:
        return self._model_facts(entry)["batchnorm"]

    def body_has_batchnorm(self, entry: EntrySpec) -> bool:
        return self._model_facts(entry)["body_batchnorm"]

    def _model_facts(self, entry: EntrySpec) -> dict[str, bool]:
        """Whether the model, and its body, train BatchNorm: from the store, else from the model."""
        question = {"arch": entry.arch}
        facts = self._store.get("model", question, _model_facts) if self._store else None
        if facts is None:
            model = self._fake_step(entry).model
            facts = {"batchnorm": has_batchnorm_layers(model), "body_batchnorm": has_batchnorm_layers(model[0])}
            if self._store:
                self._store.put("model", question, facts)
        return facts

    def remembers(self, entry: EntrySpec, micro_batch: int) -> bool:
        return self._remembered(entry, micro_batch) is not None

    def _remembered(self, entry: EntrySpec, micro_batch: int) -> ProbePoint | None:
        """This run's or the store's answer for the probe, marked ``reused``; None if there is none."""
        key = _point_key(entry, micro_batch)
        if key not in self._points and self._store is not None:
            stored = self._store.get("probe", _probe_question(entry, micro_batch), ProbePoint.model_validate)
            if stored is not None:
                self._points[key] = stored
        point = self._points.get(key)
        return point.model_copy(update={"seconds": 0.0, "reused": True}) if point is not None else None

    def measure(self, entry: EntrySpec, micro_batch: int, cap_bytes: int | None = None) -> ProbePoint:
        remembered = self._remembered(entry, micro_batch)
        if remembered is not None:
            return remembered
        started = time.perf_counter()
        with native_meta_kernels():  # once for the build, the step and the counted forward pass
            return self._measure(entry, micro_batch, started)

    def _measure(self, entry: EntrySpec, micro_batch: int, started: float) -> ProbePoint:
        from planner.base.recipe import set_grad_checkpointing

        step = self._fake_step(entry)
        set_grad_checkpointing(step.model, entry.grad_checkpointing)
        counter = OpCounter() if self.gpu is not None else None
        trace = step.run_sequence(micro_batch, entry.size, validation_batch_size(micro_batch), LAST_VALID_BATCH,
                                  modes=(counter,) if counter else (), on_phase=counter.set_phase if counter else None)
        peaks = self.device.peaks(trace)
        times = work = None
        if counter is not None:
            times = self._times(counter)
            work = HostWork(forward_backward_ops=counter.dispatches[PHASE_FORWARD_BACKWARD],
                            eval_ops=counter.dispatches[PHASE_VALID],
                            parameter_tensors=sum(p.requires_grad for p in step.model.parameters()))
        phases = {name: peaks.phase_bytes[name] for name in RUN_PHASES if name in peaks.phase_bytes}
        point = ProbePoint(micro_batch=micro_batch, peak_bytes=peaks.card_bytes,
                           forward_backward_bytes=peaks.forward_backward_bytes, step_bytes=peaks.step_bytes,
                           seconds=time.perf_counter() - started, predicted_times=times, host_work=work,
                           phase_peaks=phases, peak_phase=max(phases, key=phases.__getitem__))
        self._points[_point_key(entry, micro_batch)] = point
        replay = {"allocated": peaks.allocated_bytes, "active": peaks.active_bytes, "reserved": peaks.reserved_bytes}
        self._replays[_point_key(entry, micro_batch)] = replay
        if self._store is not None:
            self._store.put("probe", _probe_question(entry, micro_batch), point.to_dict())
            self._store.put("replay", _probe_question(entry, micro_batch), replay)
        return point

    def replay_peaks(self, entry: EntrySpec, micro_batch: int) -> dict[str, int]:
        """The allocator replay's peaks (``allocated``, ``active``, ``reserved`` bytes) of the probe, before
        any device constant: what a measured peak is paired with to calibrate the device model."""
        key = _point_key(entry, micro_batch)
        if key not in self._replays and self._store is not None:
            stored = self._store.get("replay", _probe_question(entry, micro_batch), _replay_peaks)
            if stored is not None:
                self._replays[key] = stored
        if key not in self._replays:
            with native_meta_kernels():
                self._measure(entry, micro_batch, time.perf_counter())
        return self._replays[key]

    def _times(self, counter: OpCounter) -> StepTimes:
        """The card's own work in each counted phase on ``self.gpu`` (the host's share is
        ``planner.probe.hosttime``'s, from the point's ``host_work``)."""
        assert self.gpu is not None

        def seconds(phase: str) -> float:
            return device_seconds(StepCosts.from_counter(counter, phase), self.gpu, self.time_constants)

        return StepTimes(gpu=self.gpu.name, forward_backward=seconds(PHASE_FORWARD_BACKWARD),
                         optimizer_step=seconds(PHASE_STEP), eval_forward=seconds(PHASE_VALID))

    def _fake_step(self, entry: EntrySpec) -> FakeStep:
        """The trainer's step for ``entry.arch`` on meta tensors, built once per architecture."""
        if self._arch_name != entry.arch:
            self._step, self._arch_name = None, None
            self._step = FakeStep(fastai_recipe(entry, self.n_classes, self.precision, self.arch))
            self._arch_name = entry.arch
        assert self._step is not None
        return self._step

    def close(self) -> None:
        self._step, self._arch_name = None, None
