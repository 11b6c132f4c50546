"""The estimating core: one training step that computes nothing, every allocation and free recorded.

One core, many recipes: the fastai recipe (the product, ``planner.probe.meters.estimate``) and the timm
benchmark recipe (validation against published GPU runs, ``benchmarks/published/recipe.py``) both
describe their step with a :class:`StepRecipe` and run it through :class:`FakeStep`. Nothing is
computed and no GPU is needed: the model is built on the ``meta`` device and run forward, backward
and through its optimizer on meta tensors that the model takes for CPU tensors
(:mod:`planner.probe.meters.meta_tensors`), while a ``StorageTracker`` records the step's allocations
and frees. A device model (``planner.probe.meters.device_model``) turns the record into what a CUDA
card would hold.

Why meta tensors rather than torch's ``FakeTensorMode`` (this core's first version, kept as
``tensors="fake"`` to compare): a step costs about a fifth (the default plan's four architectures: 46
s of steps before, 8 s after, on one core of the development machine), and autograd treats meta
tensors as tensors of a real device, where it treats fake tensors as a tensor subclass (an in-place
op on a view is rebuilt differently in the backward pass). On the published GPU runs both give the
same bytes except where that, or a kernel's output dtype, differs (``benchmarks/RESULTS.md``).

Interface, in the order things happen:

1. ``FakeStep(recipe)`` builds the model once (``recipe.build_model`` under ``torch.device("meta")``);
   :meth:`FakeStep.model` gives it to the caller (e.g. to inspect modules).
2. The first :meth:`FakeStep.run` creates the optimizer (``recipe.make_optimizer``), gradients
   and the optimizer's state, by one optimizer step over zero gradients, so every run measures the
   steady state (the state that step 2 onwards of a real training carries) with one step instead
   of two. That first optimizer step is recorded: what it allocates and frees again (its
   temporaries) is what every later optimizer step allocates and frees.
3. Each :meth:`FakeStep.run(batch_size, image_size, modes=...)` runs one tracked step: the batch is made
   (``recipe.make_batch``), the forward pass and loss run under the precision policy, then the
   backward pass (inside the autocast region when ``recipe.backward_in_autocast``), the optimizer
   step and ``zero_grad`` (``recipe.grads_set_to_none`` says whether gradients are freed). Extra
   ``TorchDispatchMode`` objects in ``modes`` (e.g. a FLOP or byte counter) are entered inside
   :meth:`FakeStep.tensor_mode` with the tracker, so they see every op of the same pass;
   ``on_phase(name)`` is called when the step enters ``forward_backward`` and ``step``. The
   optimizer's own ops run whenever ``modes`` are given; otherwise the record of its temporaries is
   replayed (they are shaped like the parameters and do not depend on the batch;
   ``tests/probe/test_fake_step.py`` checks that a replay and a real step give the same peaks, for
   fastai's Adam and torch's SGD).

4. :meth:`FakeStep.run_sequence` runs a run's memory story instead (``fine_tune``'s frozen steps,
   validation, unfreezing, unfrozen steps, validation and TTA), from a fresh optimizer, as one
   tracked sequence that an allocator replays once (the estimate meter's probe).

It returns a :class:`StepTrace`: the events of the state that existed before the step (weights,
buffers, gradients, optimizer state) and of the step itself, and the tracker's live-byte peaks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from planner.base.compat import fake_empty_like, fake_tensor_mode, native_meta_kernels
from planner.base.tracker import ALLOC, FREE, Event, StorageTracker
from planner.probe.meters.cuda_autocast import CudaAutocast
from planner.probe.meters.cuda_kernels import GpuArch, cuda_kernels
from planner.probe.meters.meta_tensors import meta_tensors_as_cpu
from planner.probe.meters.phases import PHASE_FORWARD_BACKWARD, PHASE_FROZEN, PHASE_STEP, PHASE_TTA, PHASE_VALID

Precision = Literal["cuda_fp16", "cpu_bf16", "fp32"]
PRECISIONS: tuple[Precision, ...] = ("cuda_fp16", "cpu_bf16", "fp32")
Tensors = Literal["meta", "fake"]


@contextlib.contextmanager
def precision_policy(precision: Precision,
                     arch: GpuArch | None = None) -> Iterator[Callable[[], contextlib.AbstractContextManager]]:
    """Install a step's precision policy; yields the factory of its autocast region.

    ``cuda_fp16`` installs CUDA's autocast policy and kernels for the whole step (so that a
    checkpointed block recomputed in the backward pass meets them too) and enables them in the
    region; ``cpu_bf16`` is CPU's own bf16 autocast, kept for comparison only (it is what this
    project used before, and it underestimates models with attention or GroupNorm,
    ``benchmarks/RESULTS.md``); ``fp32`` has no region.
    """
    if precision == "cuda_fp16":
        with CudaAutocast(cuda_kernels(arch)) as installed:
            yield installed.region
    elif precision == "cpu_bf16":
        yield lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    elif precision == "fp32":
        yield contextlib.nullcontext
    else:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")


@dataclass(frozen=True)
class StepRecipe:
    """What a training step is, as callables the core runs inside :meth:`FakeStep.tensor_mode`.

    Attributes:
        build_model: returns the model; called once under ``torch.device("meta")``.
        make_optimizer: model -> optimizer (anything with ``step()``, ``zero_grad()`` and a
            ``state`` mapping of per-parameter state, e.g. ``torch.optim`` or fastai's).
        make_batch: (batch size, image size as (rows, cols)) -> (inputs, targets), made with
            ``torch.empty`` and the like (so on meta, or fake, tensors).
        loss: (model output, targets) -> scalar loss.
        precision: the autocast policy of the forward pass (see :func:`precision_policy`).
        backward_in_autocast: the backward pass runs inside the autocast region (timm's
            benchmark), so cast weights stay cached until it ends; fastai leaves it before.
        grads_set_to_none: ``zero_grad`` frees gradients (torch >= 2 default) rather than zeroing
            them in place (torch 1.x, fastai), so they do not exist during the forward pass.
        scale_loss: the loss is multiplied by a GradScaler's scale before backward (fastai's
            ``to_fp16``); the scaler's own tensors are part of the state.
        arch: the card's compute capability, which decides the fused attention kernel.
        freeze: trains the head only (the optimizer's state then covers what still trains: fastai's
            ``Learner.freeze``); needed by :meth:`FakeStep.run_sequence` only.
        unfreeze: trains the whole model again (fastai's ``Learner.unfreeze``, which clears the
            optimizer's state).
    """

    build_model: Callable[[], torch.nn.Module]
    make_optimizer: Callable[[torch.nn.Module], Any]
    make_batch: Callable[[int, tuple[int, int]], tuple[torch.Tensor, torch.Tensor]]
    loss: Callable[[Any, torch.Tensor], torch.Tensor]
    precision: Precision = "cuda_fp16"
    backward_in_autocast: bool = False
    grads_set_to_none: bool = False
    scale_loss: bool = False
    arch: GpuArch = field(default_factory=GpuArch)
    freeze: Callable[[], None] | None = None
    unfreeze: Callable[[], None] | None = None


@dataclass(frozen=True)
class StepTrace:
    """What one step (or a run's sequence, ``whole_run``) allocated, in order, and the live-byte peaks
    the tracker saw.

    ``whole_run``: ``step`` is :meth:`FakeStep.run_sequence`'s whole sequence, which an allocator
    replays once; otherwise it is one steady-state step, which an allocator replays twice.
    """

    batch_size: int
    image_size: tuple[int, int]
    setup: tuple[Event, ...]
    step: tuple[Event, ...]
    peak_bytes: int
    phase_peaks: dict[str, int]
    whole_run: bool = False


def _state_tensors(optimizer: Any) -> Iterator[torch.Tensor]:
    """Every tensor in an optimizer's per-parameter state (torch.optim and fastai alike)."""
    for state in getattr(optimizer, "state", {}).values():
        for value in (state.values() if isinstance(state, dict) else [state]):
            if isinstance(value, torch.Tensor):
                yield value


def materialise(model: torch.nn.Module, fake_mode: Any) -> None:
    """Replace every ``meta`` parameter and buffer by an empty fake CPU tensor of ``fake_mode``
    (called outside the mode).

    ``Module.to_empty`` does this too, but swaps tensors in place and fails where a model keeps
    other references to a parameter (e.g. CoaT's shared convolutions); shared tensors stay shared.
    """
    made: dict[int, torch.Tensor] = {}

    def empty(tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in made:
            new = fake_empty_like(fake_mode, tensor)
            if isinstance(tensor, torch.nn.Parameter):
                new = torch.nn.Parameter(new, requires_grad=tensor.requires_grad)
            made[id(tensor)] = new
        return made[id(tensor)]

    for module in model.modules():
        for name, parameter in list(module._parameters.items()):
            if parameter is not None:
                module._parameters[name] = empty(parameter)
        for name, buffer in list(module._buffers.items()):
            if buffer is not None:
                module._buffers[name] = empty(buffer)


class GradScalerState:
    """The tensors ``torch.amp.GradScaler`` holds on the device: scale, growth tracker, found-inf.

    fastai's ``to_fp16`` scales the loss with one before backward and unscales the gradients in
    place (``_amp_foreach_non_finite_check_and_unscale_``), so beyond these scalars it allocates the
    scaled loss and the reciprocal scale only.
    """

    def __init__(self) -> None:
        self.scale = torch.full((1,), 2.0**16)
        self.growth_tracker = torch.zeros((1,), dtype=torch.int32)
        self.found_inf = torch.zeros((1,))

    def tensors(self) -> list[torch.Tensor]:
        return [self.scale, self.growth_tracker, self.found_inf]

    def scaled(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale

    def unscale_marker(self) -> torch.Tensor:
        return self.scale.double().reciprocal().float()


def temporaries(events: Sequence[Event]) -> tuple[tuple[Event, ...], int]:
    """The events of the storages that ``events`` allocate and free again, in order, and the most
    bytes those held at once (as a tracker counts them: after each allocation)."""
    freed = {key for kind, key, _ in events if kind == FREE}
    sizes: dict[int | str, int] = {}
    own: list[Event] = []
    live = peak = 0
    for event in events:
        kind, key, nbytes = event
        if kind == ALLOC and key in freed:
            sizes[key] = nbytes
            live += nbytes
            peak = max(peak, live)
            own.append(event)
        elif kind == FREE and key in sizes:
            live -= sizes.pop(key)
            own.append(event)
    return tuple(own), peak


class FakeStep:
    """A model and optimizer as meta (or fake) tensors, stepped on demand; see the module docstring.

    Args:
        recipe: the step.
        tensors: ``meta`` (the default), or ``fake``: torch's ``FakeTensorMode``, the slower way this
            core first ran, for comparison (``benchmarks/published/estimate.py --tensors fake``).
    """

    def __init__(self, recipe: StepRecipe, tensors: Tensors = "meta"):
        self.recipe = recipe
        with native_meta_kernels(), torch.device("meta"):
            model = recipe.build_model()
        self._fake_mode = fake_tensor_mode(allow_non_fake_inputs=True) if tensors == "fake" else None
        if self._fake_mode is not None:
            materialise(model, self._fake_mode)
        model.train()
        self._model = model
        self._optimizer: Any = None
        self._scaler: GradScalerState | None = None
        self._optimizer_record: tuple[tuple[Event, ...], int] | None = None

    @property
    def model(self) -> torch.nn.Module:
        return self._model

    @property
    def optimizer(self) -> Any:
        """The optimizer of the step or sequence under way (None before the first and after a sequence)."""
        return self._optimizer

    @contextlib.contextmanager
    def tensor_mode(self) -> Iterator[None]:
        """Where the step's ops run: on meta tensors that the model takes for CPU tensors
        (:mod:`planner.probe.meters.meta_tensors`), or in the fake tensor mode."""
        if self._fake_mode is None:
            with meta_tensors_as_cpu():
                yield
        else:
            with native_meta_kernels(), self._fake_mode:
                yield

    def _prepare_state(self) -> None:
        """Optimizer, gradients and optimizer state as a step after the first one finds them; the
        first optimizer step's temporaries recorded for :meth:`_optimizer_step` to replay."""
        self._optimizer = self.recipe.make_optimizer(self._model)
        for parameter in self._model.parameters():
            if parameter.requires_grad:
                parameter.grad = torch.zeros_like(parameter)
        tracker = StorageTracker(record=True)
        tracker.track(self._persistent())
        tracker.events = []
        with tracker:
            self._optimizer.step()
        self._optimizer_record = temporaries(tracker.events)
        if self.recipe.grads_set_to_none:
            self._model.zero_grad(set_to_none=True)
        if self.recipe.scale_loss:
            self._scaler = GradScalerState()

    def _phase_tracker(self, on_phase: Callable[[str], None] | None
                       ) -> tuple[StorageTracker, tuple[Event, ...], Callable[[str], None]]:
        """A recording tracker of the model's persistent tensors, the events of tracking them (the
        setup), and ``enter(phase)``: the tracker's phase, told to ``on_phase`` too."""
        tracker = StorageTracker(record=True)
        tracker.track(self._persistent())
        setup = tuple(tracker.events or ())
        tracker.events = []

        def enter(phase: str) -> None:
            tracker.set_phase(phase)
            if on_phase is not None:
                on_phase(phase)

        return tracker, setup, enter

    def _persistent(self) -> list[torch.Tensor]:
        tensors = [*self._model.parameters(), *self._model.buffers()]
        tensors += [p.grad for p in self._model.parameters() if p.grad is not None]
        tensors += list(_state_tensors(self._optimizer))
        if self._scaler is not None:
            tensors += self._scaler.tensors()
        return tensors

    def run(self, batch_size: int, image_size: tuple[int, int], modes: Sequence[contextlib.AbstractContextManager] = (),
            on_phase: Callable[[str], None] | None = None) -> StepTrace:
        """One tracked training step at ``batch_size`` on images of ``image_size``; see the module docstring."""
        with self.tensor_mode():
            if self._optimizer is None:
                self._prepare_state()
            tracker, setup, enter = self._phase_tracker(on_phase)
            with tracker, contextlib.ExitStack() as stack:
                for mode in modes:
                    stack.enter_context(mode)
                region = stack.enter_context(precision_policy(self.recipe.precision, self.recipe.arch))
                enter(PHASE_FORWARD_BACKWARD)
                self._forward_backward(batch_size, image_size, region)
                enter(PHASE_STEP)
                self._optimizer_step(tracker, replay=not modes)
                self._zero_grad()
            return StepTrace(batch_size=batch_size, image_size=image_size, setup=setup, step=tuple(tracker.events),
                             peak_bytes=tracker.peak_bytes, phase_peaks=dict(tracker.phase_peaks))

    def run_sequence(self, batch_size: int, image_size: tuple[int, int], valid_batch_size: int,
                     last_valid_batch: int, modes: Sequence[contextlib.AbstractContextManager] = (),
                     on_phase: Callable[[str], None] | None = None) -> StepTrace:
        """A run's memory story in miniature, in ``fine_tune``'s order, tracked as one sequence.

        From a fresh optimizer and no gradients: a frozen training step (``recipe.freeze``: only
        what still trains gets gradients and optimizer state) and a second replayed from its record,
        a validation pass (the model in eval mode, no gradients, one batch of ``valid_batch_size``
        and a last one of ``last_valid_batch``), unfreezing (``recipe.unfreeze``), two unfrozen
        steps (the first creates the body's gradients and the whole optimizer state; the second is
        the steady state) and a third replayed from the second's records, the validation pass
        again and a TTA pass (both replayed from the first pass's record: the same ops on the same
        shapes). Phases are those of :mod:`planner.probe.meters.phases`. ``modes`` count the second
        unfrozen step (its optimizer run for real) and the first full validation batch, as
        :meth:`run` counts its step; ``on_phase(name)`` is called as each phase starts. The model
        is left unfrozen, without gradients or optimizer.
        """
        recipe = self.recipe
        if recipe.freeze is None or recipe.unfreeze is None:
            raise ValueError("a run's sequence needs a recipe that can freeze and unfreeze the model")
        with self.tensor_mode():
            self._model.zero_grad(set_to_none=True)
            self._optimizer = recipe.make_optimizer(self._model)
            self._scaler = GradScalerState() if recipe.scale_loss else None
            recipe.freeze()
            tracker, setup, enter = self._phase_tracker(on_phase)
            with tracker, precision_policy(recipe.precision, recipe.arch) as region:
                enter(PHASE_FROZEN)
                frozen = self._recorded(tracker, lambda: self._forward_backward(batch_size, image_size, region))
                frozen_step = self._recorded(tracker, self._optimizer.step)
                self._zero_grad()
                tracker.splice(*frozen)
                tracker.splice(*frozen_step)
                enter(PHASE_VALID)
                validation = self._recorded(tracker, lambda: self._validate(
                    valid_batch_size, last_valid_batch, image_size, region, modes))
                recipe.unfreeze()
                enter(PHASE_FORWARD_BACKWARD)
                self._forward_backward(batch_size, image_size, region)
                enter(PHASE_STEP)
                self._optimizer_record = self._recorded(tracker, self._optimizer.step)
                self._zero_grad()
                forward_backward = self._counted_step(batch_size, image_size, region, tracker, modes, enter)
                enter(PHASE_FORWARD_BACKWARD)
                tracker.splice(*forward_backward)
                enter(PHASE_STEP)
                tracker.splice(*self._optimizer_record)
                enter(PHASE_VALID)
                tracker.splice(*validation)
                enter(PHASE_TTA)
                tracker.splice(*validation)
            trace = StepTrace(batch_size=batch_size, image_size=image_size, setup=setup, step=tuple(tracker.events),
                              peak_bytes=tracker.peak_bytes, phase_peaks=dict(tracker.phase_peaks), whole_run=True)
            self._model.zero_grad(set_to_none=True)
            self._optimizer = self._scaler = self._optimizer_record = None
        return trace

    @staticmethod
    def _recorded(tracker: StorageTracker, action: Callable[[], Any]) -> tuple[tuple[Event, ...], int]:
        """Run ``action`` under ``tracker``; its temporaries and their peak (:func:`temporaries`), to splice again."""
        start = len(tracker.events or ())
        action()
        return temporaries((tracker.events or [])[start:])

    def _counted_step(self, batch_size: int, image_size: tuple[int, int],
                      region: Callable[[], contextlib.AbstractContextManager], tracker: StorageTracker,
                      modes: Sequence[contextlib.AbstractContextManager],
                      enter: Callable[[str], None]) -> tuple[tuple[Event, ...], int]:
        """One steady-state training step with ``modes`` entered (its optimizer run for real when
        counted, else replayed); the record of its forward and backward pass, to splice again."""
        with contextlib.ExitStack() as stack:
            for mode in modes:
                stack.enter_context(mode)
            enter(PHASE_FORWARD_BACKWARD)
            forward_backward = self._recorded(tracker, lambda: self._forward_backward(batch_size, image_size, region))
            enter(PHASE_STEP)
            self._optimizer_step(tracker, replay=not modes)
            self._zero_grad()
        return forward_backward

    def _validate(self, valid_batch_size: int, last_valid_batch: int, image_size: tuple[int, int],
                  region: Callable[[], contextlib.AbstractContextManager],
                  modes: Sequence[contextlib.AbstractContextManager]) -> None:
        """A validation pass: a full batch (``modes`` entered) and the last, partial one, in eval mode."""
        self._model.eval()
        try:
            with torch.no_grad():
                with contextlib.ExitStack() as stack:
                    for mode in modes:
                        stack.enter_context(mode)
                    self._forward(valid_batch_size, image_size, region)
                self._forward(last_valid_batch, image_size, region)
        finally:
            self._model.train()

    def _forward(self, batch_size: int, image_size: tuple[int, int],
                 region: Callable[[], contextlib.AbstractContextManager]) -> None:
        inputs, _ = self.recipe.make_batch(batch_size, image_size)
        with region():
            self._model(inputs)

    def _optimizer_step(self, tracker: StorageTracker, replay: bool) -> None:
        """``optimizer.step()``, or the record of its temporaries replayed (``replay``).

        The step's temporaries are shaped like the parameters, never like the batch, so their
        allocations and frees are replayed into the tracker instead of running the optimizer again
        (fastai's Adam is a Python loop over parameters: about a third of a step).
        """
        if replay and self._optimizer_record is not None:
            events, extra_peak = self._optimizer_record
            tracker.splice(events, extra_peak)
            return
        before, start = tracker.live_bytes, len(tracker.events or ())
        earlier = tracker.phase_peaks.get(PHASE_STEP, 0)  # an earlier step's, in a run's sequence
        tracker.phase_peaks[PHASE_STEP] = before
        self._optimizer.step()
        extra_peak = tracker.phase_peaks.get(PHASE_STEP, before) - before
        tracker.phase_peaks[PHASE_STEP] = max(earlier, before + extra_peak)
        allocated = {key for kind, key, _ in (tracker.events or [])[start:] if kind == ALLOC}
        own = tuple(event for event in (tracker.events or [])[start:] if event[1] in allocated)
        self._optimizer_record = (own, extra_peak)

    def _zero_grad(self) -> None:
        """Free the gradients, or zero them in place (no allocation), as the recipe's loop does."""
        if self.recipe.grads_set_to_none:
            self._model.zero_grad(set_to_none=True)
            return
        for parameter in self._model.parameters():
            if parameter.grad is not None:
                parameter.grad.zero_()

    def _forward_backward(self, batch_size: int, image_size: tuple[int, int],
                          region: Callable[[], contextlib.AbstractContextManager]) -> None:
        recipe = self.recipe
        inputs, targets = recipe.make_batch(batch_size, image_size)
        with region():
            loss = recipe.loss(self._model(inputs), targets)
            if recipe.backward_in_autocast:
                self._backward(loss)
        if not recipe.backward_in_autocast:
            self._backward(loss)

    def _backward(self, loss: torch.Tensor) -> None:
        if self._scaler is not None:
            self._scaler.scaled(loss).backward()
            self._scaler.unscale_marker()
        else:
            loss.backward()
