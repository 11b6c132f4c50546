"""Real fastai training for the cpu and cuda meters: the trainer's learner, in a run in miniature.

The learner comes from ``planner.base.recipe.build_learner`` (the same call `planner run` makes) and is
trained with ``fine_tune`` on a few batches (:class:`Rehearsal`), so the phases of a run meet the
allocator in the run's order: the frozen epoch, unfreezing, unfrozen epochs with their validation
pass and its partial last batch, and TTA; data loading, batch transforms, mixed precision, the
GradScaler and fastai's optimizer all run as in training. One difference, which does not change peak
memory: ``GradientAccumulation`` steps after every micro-batch (fastai zeroes gradients in place, so
the gradient buffers live through every micro-batch either way), so every batch carries a step.
"""

from __future__ import annotations

import functools
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

from planner.base.compat import end_cleanup, leave_autocast
from planner.base.entries import EntrySpec
from planner.base.recipe import validation_batch_size
from planner.probe.meters.phases import PHASE_FORWARD_BACKWARD, PHASE_FROZEN, PHASE_STEP, PHASE_TTA, PHASE_VALID


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
        """Free what a probe created, also one that ran out of memory: optimizer state, gradients, the
        last batch, its outputs and its loss's autograd graph (which after an error in the backward pass
        holds the batch's activations), and the autocast region fastai leaves entered after an error in
        the forward pass, with its cache of half-precision weight copies."""
        if self.learn is not None:
            self.learn.opt = None
            self.learn.model.zero_grad(set_to_none=True)
            end_cleanup(self.learn)  # fastai's private Learner._end_cleanup, and loss_grad: planner.base.compat
            self.learn.dls = None
        leave_autocast()
        gc.collect()

    def drop(self) -> None:
        self.release_state()
        self.learn, self.arch = None, None
        gc.collect()


TRAIN_BATCHES = 2
"""Training micro-batches per rehearsed epoch: each steps the optimizer (see the module docstring)."""
MAX_UNFROZEN_EPOCHS = 4
"""Unfrozen epochs the rehearsal runs at most while its peak still grows (a real run's cuDNN search on
new shapes and the allocator's new segments show in the first epochs; the GradScaler may skip the
first steps, and with them Adam's state, while it calibrates its scale)."""


FLAT_BYTES = 2**20
"""An epoch that adds less than this to the peak adds nothing: less than the CUDA allocator's smallest
segment (2 MiB), so no reserved growth; on the CPU, fastai's recorder keeps each batch's loss (4 bytes)."""


LAST_VALID_BATCH = 1
"""Images in a rehearsal's last, partial validation batch, as a real epoch may end (a new shape: cuDNN
searches its algorithms again; the smallest partial batch costs least)."""


def rehearsal_sizes(micro_batch: int) -> tuple[int, int]:
    """Training batches per epoch and held-out images of a rehearsal: one full validation batch and a
    last partial one of :data:`LAST_VALID_BATCH` images."""
    return TRAIN_BATCHES, validation_batch_size(micro_batch) + LAST_VALID_BATCH


class Rehearsal:
    """`planner run` in miniature, as fastai callbacks tell its phases (``planner.probe.meters.phases``).

    ``fine_tune`` runs unchanged on a small data set: the frozen epoch, unfreezing, unfrozen epochs
    (training, then validation with a partial last batch) until an epoch adds nothing to the peak
    (less than :data:`FLAT_BYTES`; at most :data:`MAX_UNFROZEN_EPOCHS`, and only once the optimizer
    holds state), then a TTA pass.

    Args:
        enter_phase: called with each phase's name as it starts.
        peak_so_far: the meter's peak since the rehearsal started (reserved bytes on CUDA, live
            tensor bytes on the CPU): the stopping rule compares it before and after each epoch.
    """

    def __init__(self, enter_phase: Callable[[str], None], peak_so_far: Callable[[], int],
                 max_unfrozen_epochs: int = MAX_UNFROZEN_EPOCHS):
        self.enter_phase = enter_phase
        self.peak_so_far = peak_so_far
        self.max_unfrozen_epochs = max_unfrozen_epochs
        self.batch_seconds: list[float] = []
        self.epoch_growth: list[int] = []

    def callback(self) -> Any:
        from fastai.callback.core import Callback, CancelFitException

        rehearsal = self

        class _RehearsalCallback(Callback):
            order = 99  # after MixedPrecision and GradientAccumulation

            def before_fit(self):
                self.unfrozen = not self.learn.opt.frozen_idx

            def before_epoch(self):
                self.epoch_start = rehearsal.peak_so_far()

            def before_train(self):
                rehearsal.enter_phase(PHASE_FORWARD_BACKWARD if self.unfrozen else PHASE_FROZEN)

            def before_batch(self):
                self.started = time.perf_counter()

            def before_step(self):
                if self.unfrozen:
                    rehearsal.enter_phase(PHASE_STEP)

            def after_step(self):
                if self.unfrozen:
                    rehearsal.enter_phase(PHASE_FORWARD_BACKWARD)

            def after_batch(self):
                if self.training and self.unfrozen:
                    rehearsal.batch_seconds.append(time.perf_counter() - self.started)

            def before_validate(self):
                rehearsal.enter_phase(PHASE_VALID)

            def after_epoch(self):
                if not self.unfrozen:
                    return
                rehearsal.epoch_growth.append(rehearsal.peak_so_far() - self.epoch_start)
                flat = rehearsal.epoch_growth[-1] < FLAT_BYTES and bool(self.learn.opt.state)
                if flat or len(rehearsal.epoch_growth) >= rehearsal.max_unfrozen_epochs:
                    raise CancelFitException()

        return _RehearsalCallback()

    def median_step_seconds(self) -> float | None:
        """Median seconds per unfrozen training batch, the first (warm-up, autotuning) left out."""
        timed = self.batch_seconds[1:]
        return statistics.median(timed) if timed else None


def rehearse(learn: Any, rehearsal: Rehearsal) -> None:
    """Run ``fine_tune`` and a TTA pass as the rehearsal directs, without progress bars or logging."""
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(rehearsal.max_unfrozen_epochs, base_lr=1e-4, cbs=[rehearsal.callback()])
        rehearsal.enter_phase(PHASE_TTA)
        learn.tta(dl=learn.dls.valid, n=1)
