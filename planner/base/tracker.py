"""A lean storage tracker: live tensor bytes and their peak, measured by a TorchDispatchMode.

Every tensor an op returns is looked at once; its storage is counted the first time it is seen and
uncounted when Python frees it (a weak reference's callback), so views and in-place results cost
nothing extra. Tensors created before tracking starts (parameters, buffers, optimizer state) are
added with :meth:`StorageTracker.track`. Peaks are kept overall and per named phase.

It works the same on real CPU tensors (the cpu meter) and on fake tensors (the estimate meter),
where no memory exists but every storage still knows its size. With ``limit_bytes`` it raises
``torch.OutOfMemoryError``, the error a CUDA allocator raises, so out-of-memory handling can be
exercised for real on a machine without a GPU.

Compared with PyTorch's ``MemTracker`` (``torch.distributed._tools.mem_tracker``) it installs no
module hooks (about ten times cheaper per step on large models) and sees the state of any
optimizer, fastai's included, because it counts storages rather than ``torch.optim`` state.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch

from planner.base.compat import torch_dispatch_mode, tree_leaves


def no_rounding(nbytes: int) -> int:
    return nbytes


ALLOC, FREE, PHASE = 0, 1, 2
Event = tuple[int, int | str, int]
"""``(ALLOC, key, nbytes)``, ``(FREE, key, 0)`` or ``(PHASE, name, 0)``; keys are never reused."""


class StorageTracker(torch_dispatch_mode()):
    """Count live storage bytes while active; see the module docstring.

    Args:
        limit_bytes: raise ``torch.OutOfMemoryError`` when live bytes would exceed this.
        round_bytes: maps a storage's size to the bytes it costs (an allocator's block rounding).
        record: keep :attr:`events`, the allocations, frees and phase changes in order, so that an
            allocator can be replayed over them (``planner.probe.meters.allocator``).
    """

    def __init__(self, limit_bytes: int | None = None, round_bytes: Callable[[int], int] = no_rounding,
                 record: bool = False):
        super().__init__()
        self.limit_bytes = limit_bytes
        self.round_bytes = round_bytes
        self.events: list[Event] | None = [] if record else None
        self._serial = 0
        self.live_bytes = 0
        self.peak_bytes = 0
        self.phase = "other"
        self.phase_peaks: dict[str, int] = {}
        self._sizes: dict[int, int] = {}
        self._refs: dict[int, weakref.ref] = {}
        self._serials: dict[int, int] = {}

    def track(self, tensors: Iterable[Any]) -> None:
        """Count tensors that already exist (model state, optimizer state); non-tensors are skipped."""
        for tensor in tensors:
            if isinstance(tensor, torch.Tensor):
                self._see(tensor)
        self._update_peak()

    def set_phase(self, phase: str) -> None:
        """Attribute the following peaks to ``phase`` (e.g. "forward_backward", "step")."""
        self.phase = phase
        if self.events is not None:
            self.events.append((PHASE, phase, 0))
        self._update_peak()

    def splice(self, events: Iterable[Event], extra_peak: int) -> None:
        """Account for ops that are not run again: their recorded ``events`` (keys made unique to
        this call) and the ``extra_peak`` bytes above the live bytes that they reached."""
        self._serial += 1
        tag = f"spliced{self._serial}:"
        if self.events is not None:
            self.events.extend((kind, tag + str(key), nbytes) for kind, key, nbytes in events)
        live = self.live_bytes + extra_peak
        self.peak_bytes = max(self.peak_bytes, live)
        self.phase_peaks[self.phase] = max(self.phase_peaks.get(self.phase, 0), live)

    def reset_peaks(self) -> None:
        """Start new peaks from the bytes live now."""
        self.peak_bytes = self.live_bytes
        self.phase_peaks = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_leaves(out):
            if isinstance(value, torch.Tensor):
                self._see(value)
        self._update_peak()
        return out

    def _see(self, tensor: torch.Tensor) -> None:
        try:
            storage = tensor.untyped_storage()
        except (NotImplementedError, RuntimeError):  # sparse or storage-less tensors
            return
        key = id(storage)
        nbytes = storage.nbytes()
        size = self.round_bytes(nbytes)
        known = self._sizes.get(key)
        if known is None:
            self._refs[key] = weakref.ref(storage, lambda _ref, key=key: self._free(key))
        elif known == size:
            return
        self._sizes[key] = size
        self.live_bytes += size - (known or 0)
        if self.events is not None:
            if known is not None:  # a storage resized in place: the old block is freed
                self.events.append((FREE, self._serials[key], 0))
            self._serial += 1
            self._serials[key] = self._serial
            self.events.append((ALLOC, self._serial, nbytes))

    def _free(self, key: int) -> None:
        self.live_bytes -= self._sizes.pop(key, 0)
        self._refs.pop(key, None)
        if self.events is not None:
            serial = self._serials.pop(key, None)
            if serial is not None:
                self.events.append((FREE, serial, 0))

    def _update_peak(self) -> None:
        live = self.live_bytes
        if live > self.peak_bytes:
            self.peak_bytes = live
        if live > self.phase_peaks.get(self.phase, 0):
            self.phase_peaks[self.phase] = live
        if self.limit_bytes is not None and live > self.limit_bytes:
            raise torch.OutOfMemoryError(
                f"tracked memory {live} bytes exceeds the limit of {self.limit_bytes} bytes"
            )
