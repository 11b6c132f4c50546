"""Seconds per epoch and per run from the seconds of one micro-batch: fastai's loops, counted.

Pure arithmetic over what the trainer runs (``planner/base/recipe.py``, ``fine_tune``):

- a training epoch: ``n_train // micro_batch`` micro-batches (fastai drops the last partial batch),
  each a forward and backward pass, and an optimizer step every ``accum`` of them;
- a validation pass: ``ceil(n_valid / micro_batch)`` forward passes without gradients (fastai's
  validation batch size is the training one);
- ``fine_tune(epochs)``: one epoch with the body frozen (no gradient flows into the body, so its
  training batches cost about a forward pass), then ``epochs`` epochs unfrozen;
- TTA (``Learner.tta``, ``n=4``): four augmented passes and one plain one, over the held-out and
  the test images.

Data loading is timed apart (``planner.probe.loadtime``) and joined here (:func:`bounded_time`): the
DataLoader's workers decode the next batches while the device computes, so the slower of the two
sets each epoch's pace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from planner.base.bounds import slowest_bound
from planner.base.plan import EntryTime, LoaderTime, StepTimes, TimeBasis

TTA_PASSES = 5  # fastai's Learner.tta(n=4): four augmented passes and the plain one
DEFAULT_EPOCHS = 12
DEFAULT_VALID_PCT = 0.2
# The reference competition (Paddy Doctor): 10,407 labelled training images and 3,469 test images.
PADDY_DOCTOR_LABELLED = 10_407
PADDY_DOCTOR_TEST = 3_469
FORWARD_SHARE = 1 / 3  # a forward pass as a share of forward + backward, when only the latter is measured


@dataclass(frozen=True)
class DataSizes:
    """How many images each pass sees."""

    n_train: int
    n_valid: int
    n_test: int
    source: str


def split_sizes(n_labelled: int, n_test: int, valid_pct: float, source: str) -> DataSizes:
    """Training and held-out counts of ``n_labelled`` images with ``valid_pct`` held out (fastai rounds down)."""
    n_valid = int(n_labelled * valid_pct)
    return DataSizes(n_train=n_labelled - n_valid, n_valid=n_valid, n_test=n_test, source=source)


def default_sizes(valid_pct: float = DEFAULT_VALID_PCT) -> DataSizes:
    """The reference competition's sizes, used when the probe is given no data folder."""
    return split_sizes(PADDY_DOCTOR_LABELLED, PADDY_DOCTOR_TEST, valid_pct,
                       f"default: Paddy Doctor ({PADDY_DOCTOR_LABELLED:,} labelled, {PADDY_DOCTOR_TEST:,} test images)")


def folder_sizes(n_labelled: int, test_folder: Path, valid_pct: float = DEFAULT_VALID_PCT) -> DataSizes:
    """Sizes of a data folder: its labelled images and the images in ``test_images/``."""
    from planner.base.images import images_in

    n_test = len(images_in(test_folder)) if test_folder.is_dir() else 0
    return split_sizes(n_labelled, n_test, valid_pct, str(test_folder.parent))


def time_basis(sizes: DataSizes, gpu: str | None, epochs: int) -> TimeBasis:
    return TimeBasis(gpu=gpu, n_train=sizes.n_train, n_valid=sizes.n_valid, n_test=sizes.n_test,
                     data=sizes.source, epochs=epochs, tta_passes=TTA_PASSES)


def entry_time(times: StepTimes, micro_batch: int, accum: int, basis: TimeBasis,
               source: Literal["estimate", "measured"] = "estimate") -> EntryTime:
    """Seconds per epoch, for ``fine_tune(basis.epochs)`` and for TTA, from one micro-batch's times."""
    micro_batches = basis.n_train // micro_batch
    optimizer_steps = micro_batches // accum
    train = micro_batches * times.forward_backward + optimizer_steps * times.optimizer_step
    valid = math.ceil(basis.n_valid / micro_batch) * times.eval_forward
    frozen = micro_batches * times.eval_forward + valid
    tta = basis.tta_passes * (math.ceil(basis.n_valid / micro_batch) + math.ceil(basis.n_test / micro_batch)) \
        * times.eval_forward
    epoch = train + valid
    return EntryTime(source=source, gpu=times.gpu, train_seconds_per_epoch=round(train, 2),
                     valid_seconds_per_epoch=round(valid, 2), epoch_seconds=round(epoch, 2),
                     frozen_epoch_seconds=round(frozen, 2), epochs=basis.epochs, tta_seconds=round(tta, 2),
                     total_seconds=round(frozen + basis.epochs * epoch + tta, 1))


def bounded_time(time: EntryTime, loader: LoaderTime) -> EntryTime:
    """``time`` with data loading joined: with workers, each epoch (and TTA) takes the slower of the
    device and the loader; without (``workers`` 0) the training process decodes between its steps and
    the two add up. ``bound`` names which part sets the epoch's time."""
    if loader.workers == 0:
        bound = f"{time.bound}+loader"
        epoch, frozen, tta = (seconds + extra for seconds, extra in (
            (time.epoch_seconds, loader.epoch_seconds), (time.frozen_epoch_seconds, loader.epoch_seconds),
            (time.tta_seconds, loader.tta_seconds)))
    else:
        bound, epoch = slowest_bound(**{time.bound: time.epoch_seconds, "loader": loader.epoch_seconds})
        frozen = max(time.frozen_epoch_seconds, loader.epoch_seconds)
        tta = max(time.tta_seconds, loader.tta_seconds)
    return time.model_copy(update={
        "epoch_seconds": round(epoch, 2), "frozen_epoch_seconds": round(frozen, 2), "tta_seconds": round(tta, 2),
        "total_seconds": round(frozen + time.epochs * epoch + tta, 1), "bound": bound})


def measured_step_times(step_seconds: float, gpu: str) -> StepTimes:
    """Times from a measured training micro-batch (forward, backward and an optimizer step each).

    The cuda meter's probes step after every micro-batch, so the optimizer step is inside
    ``step_seconds``; the no-gradient forward is taken as :data:`FORWARD_SHARE` of it.
    """
    return StepTimes(gpu=gpu, forward_backward=step_seconds, optimizer_step=0.0,
                     eval_forward=step_seconds * FORWARD_SHARE)


def step_times_at(points: list[tuple[int, StepTimes]], micro_batch: int) -> StepTimes:
    """Step times at ``micro_batch`` from those timed at other micro-batches (for the plot's candidates).

    Each part is affine in the micro-batch (fixed launches plus per-sample work): a least-squares line
    through two or more timed points, or, from one point, per-sample work only (the optimizer step kept).
    """
    import numpy as np

    sizes = np.array([size for size, _ in points], dtype=float)

    def part(name: str) -> float:
        values = np.array([getattr(times, name) for _, times in points])
        if len(set(sizes.tolist())) < 2:
            return float(values[0] if name == "optimizer_step" else values[0] * micro_batch / sizes[0])
        slope, intercept = np.polyfit(sizes, values, 1)
        return float(max(intercept + slope * micro_batch, 0.0))

    return StepTimes(gpu=points[0][1].gpu, forward_backward=part("forward_backward"),
                     optimizer_step=part("optimizer_step"), eval_forward=part("eval_forward"))
