"""fastai callbacks that `planner run` adds around an unchanged ``fine_tune``.

``fine_tune(epochs, lr, cbs=[...])`` passes them to each of its two fits (the frozen epoch, then the
unfrozen ones); they are removed again before TTA. Importing this module imports fastai.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from fastai.callback.core import Callback
from fastai.learner import Recorder

from planner.base.runfile import EpochRecord
from planner.base.threads import use_cpu_threads
from planner_trainer.memory import RunMeter
from planner_trainer.progress import Reporter


def fit_phase(learn: Any) -> str:
    """``frozen`` while the optimizer freezes the body (fine_tune's first fit), else ``unfrozen``."""
    return "frozen" if learn.opt.frozen_idx else "unfrozen"


class MemoryPhases(Callback):
    """Tells a meter where training is: phase starts (``frozen_train``...) and batch boundaries."""

    order = -20  # before the other callbacks' batch work, so the meter sees it

    def __init__(self, meter: RunMeter) -> None:
        self.meter = meter

    def before_train(self) -> None:
        self.meter.phase_started(f"{fit_phase(self.learn)}_train")

    def before_validate(self) -> None:
        self.meter.phase_started(f"{fit_phase(self.learn)}_valid")

    def before_batch(self) -> None:
        self.meter.batch_started([*self.learn.xb, *self.learn.yb])

    def after_batch(self) -> None:
        self.meter.batch_ended()


class LoaderWait(Callback):
    """Seconds each epoch's loop (training and validation) waits for its batches from the DataLoader.

    The clock runs from the end of one batch (stamped by :attr:`end`, the last callback of
    ``after_batch``, once the device has finished it) to the start of the next (``before_batch``, this
    callback first), less the batch transforms, which fastai runs in the training process after the
    loader hands a batch over (timed by wrapping the loader's ``after_batch`` from the pass's first
    batch on, once fastai has set the transforms up for the pass: training or validation; the first
    batch of a pass counts its batch transforms as waiting). What remains is the wait for the loader:
    with workers, the decoding that the steps did not hide; without, all of it. Pass both this callback
    and :attr:`end` to the fit.
    """

    order = -100  # before_batch before any other callback's work

    def __init__(self) -> None:
        self.seconds = 0.0
        self.end = _BatchEnd()
        self.transforms: _TimedTransforms | None = None

    def before_epoch(self) -> None:
        self.seconds = 0.0

    def before_train(self) -> None:
        self._start_pass()

    def before_validate(self) -> None:
        self._start_pass()

    def before_batch(self) -> None:
        waited = time.perf_counter() - self.end.stamp - (self.transforms.take() if self.transforms else 0.0)
        self.seconds += max(waited, 0.0)
        if self.transforms is None:
            self.transforms = _TimedTransforms(self.learn.dl.after_batch)
            self.learn.dl.after_batch = self.transforms

    def after_train(self) -> None:
        self._end_pass()

    def after_validate(self) -> None:
        self._end_pass()

    def _start_pass(self) -> None:
        self.transforms = None
        self.end.stamp = time.perf_counter()

    def _end_pass(self) -> None:
        if self.transforms is not None:
            self.learn.dl.after_batch = self.transforms.transforms
            self.transforms = None


class _BatchEnd(Callback):
    """Stamps the end of each batch, after every other callback and once the device has finished it."""

    order = 1000

    def __init__(self) -> None:
        self.stamp = time.perf_counter()

    def after_batch(self) -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()  # Recorder has already moved the loss to the host; this makes it explicit
        self.stamp = time.perf_counter()


class _TimedTransforms:
    """A DataLoader's batch transforms, counting the seconds they take until :meth:`take` is called."""

    def __init__(self, transforms: Any) -> None:
        self.transforms = transforms
        self.seconds = 0.0

    def __call__(self, batch: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.transforms(batch)
        finally:
            self.seconds += time.perf_counter() - started

    def take(self) -> float:
        """The seconds counted since the last call, and start again."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds


class CpuThreads(Callback):
    """Before each epoch (added on the CPU only), train with the cores other processes leave free
    (``planner.base.threads``): a busy neighbour then slows training by its share, not tenfold."""

    def before_epoch(self) -> None:
        use_cpu_threads()


class ReportEpochs(Callback):
    """Records every epoch (losses, error rate, seconds, optimizer steps; torch's threads when ``cpu``;
    the wait for batches when given ``loader``) and passes it to the reporter. A step is counted at
    ``after_step``, which fastai reaches only when the optimizer stepped (``GradientAccumulation``
    cancels the batch before it otherwise)."""

    order = Recorder.order + 1  # after the Recorder has stored the epoch's values

    def __init__(self, reporter: Reporter, name: str, total_epochs: int, cpu: bool = False,
                 loader: LoaderWait | None = None) -> None:
        self.reporter = reporter
        self.loader = loader
        self.cpu = cpu
        self.entry_name = name
        self.total_epochs = total_epochs
        self.records: list[EpochRecord] = []
        self.started = 0.0
        self.threads: int | None = None
        self.steps = 0

    def before_epoch(self) -> None:
        self.started = time.perf_counter()
        self.threads = torch.get_num_threads() if self.cpu else None
        self.steps = 0

    def after_step(self) -> None:
        self.steps += 1

    def after_epoch(self) -> None:
        names = self.learn.recorder.metric_names[1:]
        values = dict(zip(names, self.learn.recorder.values[-1], strict=False))
        record = EpochRecord(
            epoch=len(self.records),
            phase=fit_phase(self.learn),
            train_loss=_number(values.get("train_loss")),
            valid_loss=_number(values.get("valid_loss")),
            error_rate=_number(values.get("error_rate")),
            seconds=time.perf_counter() - self.started,
            threads=self.threads,
            optimizer_steps=self.steps,
            loader_wait_seconds=round(self.loader.seconds, 3) if self.loader is not None else None,
        )
        self.records.append(record)
        self.reporter.epoch_done(self.entry_name, record, self.total_epochs)


def _number(value: Any) -> float | None:
    """A recorded value as a float; None when fastai has none (e.g. a loss over no batch is NaN)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None
