"""Peak memory of a real training, measured by the same meter family as the probe.

A meter is made when an entry's try starts (before its learner exists), wraps ``fine_tune`` with
:meth:`RunMeter.measuring`, hears phase and batch boundaries from the ``MemoryPhases`` callback
(``planner_trainer.callbacks``) and finally gives a :class:`~planner.base.runfile.MemoryRecord`. Meters are
registered by device name in ``RUN_METERS`` (the base's ``Registry``, as the probe's meters are);
:func:`make_meter` looks them up. (The probe's meters, which measure a few steps at one micro-batch,
are ``planner.probe.meters.ProbeMeter``.)

- ``cuda``: reserved peak + this process's non-torch device bytes (``planner.base.cuda_device``), what
  decides OOM on a whole card, as the probe's cuda meter measures it, with the allocator configuration
  in force (``planner.base.allocator``). Costs nothing per step.
- ``cpu``: a ``StorageTracker`` (the probe's cpu meter) counting model parameters and buffers, then
  every op's outputs. It is a Python dispatch mode and costs a few percent per step on small models,
  so it samples: it counts the first ``2 × accum`` training batches (two optimizer steps, when the
  optimizer state appears) and the first validation batches of each phase (frozen and unfrozen), in
  the first epoch of each, where the peaks of steady-state shapes are reached. With ``limit_bytes``
  it raises ``torch.OutOfMemoryError`` during those batches, so OOM handling can be tested on a CPU.
"""

from __future__ import annotations

import gc
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from itertools import chain

import torch

from planner.base import cuda_device as gpu
from planner.base.allocator import allocator_in_force
from planner.base.compat import leave_autocast
from planner.base.registry import Registry
from planner.base.runfile import MemoryRecord
from planner.base.tracker import StorageTracker

VALID_SAMPLE_BATCHES = 2


class RunMeter(ABC):
    """Measures one try of one entry. Called in this order: ``measuring`` (entered once, around
    ``fine_tune``), then inside it ``phase_started`` at each training/validation phase and
    ``batch_started``/``batch_ended`` around each batch, then ``record``."""

    @abstractmethod
    def measuring(self, model: torch.nn.Module) -> AbstractContextManager[None]:
        """A context manager around the training of ``model``; cleans up on any exception."""

    @abstractmethod
    def phase_started(self, phase: str) -> None:
        """A phase (``frozen_train``, ``frozen_valid``, ``unfrozen_train``...) begins."""

    def batch_started(self, tensors: Iterable[torch.Tensor]) -> None:  # noqa: B027 (optional hook)
        """A batch begins; ``tensors`` are its inputs and targets, made before it by the loader."""

    def batch_ended(self) -> None:  # noqa: B027 (optional hook)
        """A batch ended normally."""

    @abstractmethod
    def record(self) -> MemoryRecord:
        """The measured peaks, once training is over."""


RUN_METERS: Registry[type[RunMeter]] = Registry("run meter")


@RUN_METERS.register("cuda")
class CudaRunMeter(RunMeter):
    """Reserved peak + non-torch bytes, with peaks per phase (peak statistics reset at each)."""

    def __init__(self, accum: int, limit_bytes: int | None = None) -> None:
        gpu.release_cached()
        self.start_bytes = torch.cuda.memory_allocated()
        self.phase = "setup"
        self.reserved_peaks: dict[str, int] = {}

    @contextmanager
    def measuring(self, model: torch.nn.Module) -> Iterator[None]:
        torch.cuda.reset_peak_memory_stats()
        try:
            yield
        finally:
            self._close_phase()

    def phase_started(self, phase: str) -> None:
        self._close_phase()
        self.phase = phase

    def _close_phase(self) -> None:
        peak = torch.cuda.max_memory_reserved()
        self.reserved_peaks[self.phase] = max(peak, self.reserved_peaks.get(self.phase, 0))
        torch.cuda.reset_peak_memory_stats()

    def record(self) -> MemoryRecord:
        extra = gpu.non_torch_bytes(torch.cuda.current_device())
        phase_peaks = {phase: peak + extra for phase, peak in self.reserved_peaks.items()}
        return MemoryRecord(meter="cuda", peak_bytes=max(phase_peaks.values()), phase_peaks=phase_peaks,
                            start_bytes=self.start_bytes, allocator=allocator_in_force())


@RUN_METERS.register("cpu")
class CpuRunMeter(RunMeter):
    """A ``StorageTracker`` switched on for the first batches of each phase (see the module doc)."""

    def __init__(self, accum: int, limit_bytes: int | None = None) -> None:
        gc.collect()
        self.start_bytes = live_tensor_bytes()
        self.tracker = StorageTracker(limit_bytes=limit_bytes)
        self.train_batches = 2 * accum
        self.limit_bytes = limit_bytes
        self.sampled: set[str] = set()
        self.left = 0
        self.counted = 0
        self.active = False

    @contextmanager
    def measuring(self, model: torch.nn.Module) -> Iterator[None]:
        self.tracker.track(chain(model.parameters(), model.buffers()))
        try:
            yield
        finally:
            self._pause()

    def phase_started(self, phase: str) -> None:
        self.tracker.set_phase(phase)
        batches = self.train_batches if phase.endswith("train") else VALID_SAMPLE_BATCHES
        self.left = 0 if phase in self.sampled else batches
        self.sampled.add(phase)
        if not self.left:
            self._pause()

    def batch_started(self, tensors: Iterable[torch.Tensor]) -> None:
        if self.left <= 0:
            return
        self.left -= 1
        self.counted += 1
        self.tracker.track(tensors)
        if not self.active:
            self.tracker.__enter__()
            self.active = True

    def batch_ended(self) -> None:
        if self.left <= 0:
            self._pause()

    def _pause(self) -> None:
        if self.active:
            self.active = False
            self.tracker.__exit__(None, None, None)

    def record(self) -> MemoryRecord:
        return MemoryRecord(
            meter="cpu", peak_bytes=self.tracker.peak_bytes, phase_peaks=dict(self.tracker.phase_peaks),
            start_bytes=self.start_bytes, sampled_batches=self.counted, limit_bytes=self.limit_bytes,
        )


def make_meter(device: str, accum: int, limit_bytes: int | None = None) -> RunMeter:
    """The meter of ``device``, made before the try's learner is built.

    Args:
        device: "cuda" or "cpu".
        accum: the try's accumulation (the cpu meter samples two optimizer steps' worth of batches).
        limit_bytes: cpu only: raise ``torch.OutOfMemoryError`` above this many live bytes.

    Returns:
        A new meter; it has already noted the bytes held before the try (``start_bytes``).
    """
    return RUN_METERS.get(device)(accum, limit_bytes)


def live_tensor_bytes() -> int:
    """Bytes of every distinct tensor storage the garbage collector can still see."""
    sizes: dict[tuple[str, int], int] = {}
    with warnings.catch_warnings():  # isinstance() wakes deprecated module attributes up
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            try:
                if isinstance(obj, torch.Tensor) and obj.device.type != "meta":
                    storage = obj.untyped_storage()
                    if storage.data_ptr():
                        sizes[(str(obj.device), storage.data_ptr())] = storage.nbytes()
            except Exception:  # proxies and tensors without storage
                continue
    return sum(sizes.values())


def release_memory(device: str) -> None:
    """Free everything a finished or failed try held, so that the next try in this process starts where
    the first one did (the same live bytes, an allocator holding nothing of the try):

    - autocast left as outside any region: an out-of-memory error in the forward pass leaves fastai's
      CUDA autocast entered, and autocast's cache alive for good, with a half-precision copy of every
      weight and, through its autograd graph, the weight (``planner.base.compat.leave_autocast``);
    - the learner's reference cycles collected (model, optimizer state, gradients, data loaders,
      callbacks, the last batch and its autograd graph);
    - on CUDA, cuBLAS's workspaces freed, every cached block returned to the driver and peak statistics
      restarted (``planner.base.cuda_device.release_cached``).

    What a later try still inherits is the process's CUDA context and cuDNN's algorithm choices, which
    hold no allocator memory. Call it outside any ``except`` block: a live traceback still holds the
    try's tensors.

    Args:
        device: "cuda" or "cpu", the device the try trained on.
    """
    leave_autocast()
    if device == "cuda":
        gpu.release_cached()
    else:
        gc.collect()
