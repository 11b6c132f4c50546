"""Real fastai training steps for the cpu and cuda meters: the trainer's learner, stopped early.

The learner comes from ``planner.base.recipe.build_learner`` (the same call `planner run` makes) and is
trained with ``Learner.fit``, so data loading, batch transforms, mixed precision, the GradScaler
and fastai's optimizer all run as in training. Two differences, neither changing peak memory:
``GradientAccumulation`` steps after every micro-batch (fastai zeroes gradients in place, so the
gradient buffers live through every micro-batch either way), and fit stops as soon as one whole
batch has run with optimizer state present (Adam's state appears at the first real step, which
the GradScaler may skip while it calibrates).
"""

from __future__ import annotations

import functools
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

from planner.base.compat import end_cleanup
from planner.base.entries import EntrySpec
from planner.probe.meters.phases import PHASE_FORWARD_BACKWARD, PHASE_STEP


def has_batchnorm_layers(module: Any) -> bool:
    """Whether ``module`` or any module inside it is a BatchNorm layer (1d, 2d, 3d or synchronised)."""
    import torch

    batchnorm = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm)
    return any(isinstance(inner, batchnorm) for inner in module.modules())


@functools.cache
def model_has_batchnorm(arch: str, n_classes: int, body_only: bool = False) -> bool:
    """Whether fastai's model for ``arch`` has BatchNorm layers (fastai's head always does);
    ``body_only`` asks about the timm body alone."""
    import torch
    from fastai.vision.learner import create_timm_model

    with torch.device("meta"):
        model, _ = create_timm_model(arch, n_classes, pretrained=False)
    return has_batchnorm_layers(model[0] if body_only else model)


class LearnerCache:
    """One learner per architecture: probes of the same architecture only swap the data loaders."""

    def __init__(self, fp16: bool):
        self.fp16 = fp16
        self.arch: str | None = None
        self.learn: Any = None

    def learner_for(self, entry: EntrySpec, dls: Any, micro_batch: int) -> Any:
        """A learner for ``entry`` on ``dls`` that steps after every micro-batch."""
        from planner.base.recipe import build_learner, set_grad_checkpointing

        if self.arch != entry.arch:
            self.drop()
            self.learn = build_learner(dls, entry.arch, effective_batch_size=micro_batch,
                                       pretrained=False, fp16=self.fp16)
            self.arch = entry.arch
        set_grad_checkpointing(self.learn.model, entry.grad_checkpointing)
        self.learn.dls = dls
        self.learn.gradient_accumulation.n_acc = micro_batch
        return self.learn

    def release_state(self) -> None:
        """Free what a probe created: optimizer state, gradients, the last batch and its outputs."""
        if self.learn is not None:
            self.learn.opt = None
            self.learn.model.zero_grad(set_to_none=True)
            end_cleanup(self.learn)  # fastai's private Learner._end_cleanup, via planner.base.compat
            self.learn.dls = None
        gc.collect()

    def drop(self) -> None:
        self.release_state()
        self.learn, self.arch = None, None
        gc.collect()


class ProbeSteps:
    """A fastai callback factory: marks phases, times batches, stops after a batch with state."""

    def __init__(self, enter_phase: Callable[[str], None], batches_with_state: int = 2):
        self.enter_phase = enter_phase
        self.batches_with_state = batches_with_state
        self.batch_seconds: list[float] = []

    def callback(self) -> Any:
        from fastai.callback.core import Callback, CancelFitException

        probe = self

        class _ProbeCallback(Callback):
            order = 99  # after MixedPrecision and GradientAccumulation

            def before_fit(self):
                self.with_state, self.started = 0, 0.0

            def before_batch(self):
                probe.enter_phase(PHASE_FORWARD_BACKWARD)
                self.started = time.perf_counter()

            def before_step(self):
                probe.enter_phase(PHASE_STEP)

            def after_step(self):
                probe.enter_phase(PHASE_FORWARD_BACKWARD)

            def after_batch(self):
                probe.batch_seconds.append(time.perf_counter() - self.started)
                if self.learn.opt.state:
                    self.with_state += 1
                if self.with_state >= probe.batches_with_state:
                    raise CancelFitException()

        return _ProbeCallback()

    def median_step_seconds(self) -> float | None:
        """Median seconds per batch, the first (warm-up, autotuning) batch left out."""
        timed = self.batch_seconds[1:]
        return statistics.median(timed) if timed else None


def run_probe_steps(learn: Any, steps: ProbeSteps) -> None:
    """Train until ``steps`` stops the fit, without progress bars or logging."""
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, lr=1e-4, cbs=[steps.callback()])
