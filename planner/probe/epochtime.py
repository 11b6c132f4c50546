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

A prediction has a time per bound (the card's work, the host's: ``planner.probe.hosttime``); each
pass goes at the pace of the slowest (:func:`slowest`). Data loading, timed apart on the data folder's
images (``planner.probe.loadtime``), joins as one more bound (:func:`with_loading`): the DataLoader's
workers decode the next batches while the card computes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from planner.base.plan import EntryTime, Host, LoaderTime, StepTimes, TimeBasis

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


def time_basis(sizes: DataSizes, gpu: str | None, epochs: int, host: Host | None = None) -> TimeBasis:
    return TimeBasis(gpu=gpu, n_train=sizes.n_train, n_valid=sizes.n_valid, n_test=sizes.n_test,
                     data=sizes.source, epochs=epochs, tta_passes=TTA_PASSES, host=host)


def slowest(seconds: Mapping[str, float]) -> tuple[str, float]:
    """The bound that takes longest and its seconds, from seconds by bound name (the first on a tie).

    Raises:
        ValueError: no bounds.
    """
    if not seconds:
        raise ValueError("no bounds to compare")
    name = max(seconds, key=seconds.__getitem__)
    return name, seconds[name]


def _passes(times: StepTimes, micro_batch: int, accum: int, basis: TimeBasis) -> dict[str, float]:
    """Seconds of each pass of the run (one unfrozen epoch's training and validation, the frozen epoch,
    TTA) from one bound's times of one micro-batch."""
    micro_batches = basis.n_train // micro_batch
    valid = math.ceil(basis.n_valid / micro_batch) * times.eval_forward
    tta_batches = math.ceil(basis.n_valid / micro_batch) + math.ceil(basis.n_test / micro_batch)
    return {"train": micro_batches * times.forward_backward + micro_batches // accum * times.optimizer_step,
            "valid": valid, "frozen": micro_batches * times.eval_forward + valid,
            "tta": basis.tta_passes * tta_batches * times.eval_forward}


def _run_seconds(passes: Mapping[str, float], epochs: int) -> float:
    return passes["frozen"] + epochs * (passes["train"] + passes["valid"]) + passes["tta"]


def entry_time(times: Mapping[str, StepTimes], micro_batch: int, accum: int, basis: TimeBasis,
               source: Literal["estimate", "measured"] = "estimate") -> EntryTime:
    """Seconds per epoch, for ``fine_tune(basis.epochs)`` and for TTA, from one micro-batch's times.

    Args:
        times: one micro-batch's times by bound (e.g. "device" and "host"); each pass takes the
            slowest bound's seconds. A measurement is one bound, of any name.
        micro_batch, accum: the entry's configuration.
        basis: the data set's sizes, epochs and TTA passes.
        source: "estimate" records each bound's total and the slowest; "measured" records neither.
    """
    by_bound = {name: _passes(step, micro_batch, accum, basis) for name, step in times.items()}
    passes = {part: slowest({name: bound[part] for name, bound in by_bound.items()})[1]
              for part in ("train", "valid", "frozen", "tta")}
    totals = {name: round(_run_seconds(bound, basis.epochs), 1) for name, bound in by_bound.items()}
    epoch = passes["train"] + passes["valid"]
    estimate = source == "estimate"
    return EntryTime(source=source, gpu=next(iter(times.values())).gpu,
                     train_seconds_per_epoch=round(passes["train"], 2),
                     valid_seconds_per_epoch=round(passes["valid"], 2), epoch_seconds=round(epoch, 2),
                     frozen_epoch_seconds=round(passes["frozen"], 2),
                     epochs=basis.epochs, tta_seconds=round(passes["tta"], 2),
                     total_seconds=round(_run_seconds(passes, basis.epochs), 1),
                     time_bound=slowest(totals)[0] if estimate else None, bound_seconds=totals if estimate else {})


def with_loading(time: EntryTime, loader: LoaderTime) -> EntryTime:
    """``time`` with data loading joined, pass by pass: with workers each pass takes the slower of its
    time and the loader's ("loader" joins the bounds); without (``workers`` 0) the training process
    decodes between its steps, so the loader's seconds add to each pass and to every bound
    ("device+loader"...). A measurement keeps no bounds; its passes take the loader's pace all the same.
    """
    frozen_train = time.frozen_epoch_seconds - time.valid_seconds_per_epoch
    own = {"train": time.train_seconds_per_epoch, "valid": time.valid_seconds_per_epoch,
           "frozen_train": frozen_train, "tta": time.tta_seconds}
    loading = {"train": loader.train_seconds, "valid": loader.valid_seconds, "frozen_train": loader.train_seconds,
               "tta": loader.tta_seconds}
    loader_total = (time.epochs + 1) * loader.epoch_seconds + loader.tta_seconds
    if loader.workers:
        passes = {part: max(seconds, loading[part]) for part, seconds in own.items()}
        totals = {**time.bound_seconds, "loader": round(loader_total, 1)} if time.bound_seconds else {}
    else:
        passes = {part: seconds + loading[part] for part, seconds in own.items()}
        totals = {f"{name}+loader": round(seconds + loader_total, 1) for name, seconds in time.bound_seconds.items()}
    frozen = passes["frozen_train"] + passes["valid"]
    epoch = passes["train"] + passes["valid"]
    return time.model_copy(update={
        "train_seconds_per_epoch": round(passes["train"], 2), "valid_seconds_per_epoch": round(passes["valid"], 2),
        "epoch_seconds": round(epoch, 2), "frozen_epoch_seconds": round(frozen, 2),
        "tta_seconds": round(passes["tta"], 2),
        "total_seconds": round(_run_seconds({**passes, "frozen": frozen}, time.epochs), 1),
        "time_bound": slowest(totals)[0] if totals else time.time_bound, "bound_seconds": totals})


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
