"""Meta tensors that a model takes for CPU tensors: where the estimating core runs its steps.

A step on ``meta`` tensors computes nothing and allocates nothing, yet every storage knows its size,
and autograd treats them as tensors of a real device (a view changed in place is rebuilt in the
backward pass with ``as_strided``, as on CUDA; a tensor subclass such as torch's fake tensors takes
another path). Two things would still differ from a CUDA run, and this context removes both:

- **Autocast.** Meta tensors carry no autocast dispatch key, so CPU autocast's key (where
  :mod:`planner.probe.meters.cuda_autocast` installs CUDA's policy) is added to every dispatch
  while the block runs; it acts only inside an autocast region, as on CPU tensors.
- **The device the model sees.** Model code that asks for its tensors' device is told ``cpu`` (e.g.
  timm's EfficientViT disables autocast with ``torch.autocast(device_type=x.device.type)``, and skips
  that on ``meta``, which would run in fp16 what CUDA runs in fp32), and a ``cpu`` it passes back
  as a device makes the tensor on ``meta``; tensors created without a device go to ``meta`` too.

Ops run on torch's C++ meta kernels where torch has them (:func:`planner.base.compat.native_meta_kernels`):
about a hundred times faster than the Python meta kernels torch puts in front of them, which is most
of why a step on meta tensors costs a fifth of one in torch's ``FakeTensorMode`` (``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from planner.base.compat import native_meta_kernels

META = torch.device("meta")
CPU = torch.device("cpu")
_REPORTED = {torch.Tensor.device.__get__: CPU, torch.Tensor.is_cpu.__get__: True,
             torch.Tensor.is_meta.__get__: False}


def _on_meta(value: Any) -> Any:
    """``value`` with a CPU device (a ``torch.device`` or its name) replaced by ``meta``."""
    if isinstance(value, torch.device):
        return META if value.type == "cpu" else value
    if isinstance(value, str) and value.split(":")[0] == "cpu":
        return META
    return value


class _CpuLooks(TorchFunctionMode):
    """Reports ``cpu`` as every tensor's device and maps a ``cpu`` device argument to ``meta``."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _REPORTED:  # a tensor's device, is_cpu or is_meta
            return _REPORTED[func]
        if func is torch.device:  # naming a device makes nothing; using it does (mapped below)
            return func(*args, **kwargs)
        if "device" in kwargs:
            kwargs = {**kwargs, "device": _on_meta(kwargs["device"])}
        return func(*(_on_meta(arg) for arg in args), **kwargs)


@contextlib.contextmanager
def meta_tensors_as_cpu() -> Iterator[None]:
    """Run the block on meta tensors that look like CPU tensors; see the module docstring."""
    with native_meta_kernels(), torch.device(META), _CpuLooks(), \
            torch._C._IncludeDispatchKeyGuard(torch._C.DispatchKey.AutocastCPU):
        yield
