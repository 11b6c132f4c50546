"""This machine's host costs for the step-time model: one small benchmark, remembered per machine.

Two numbers (``planner.probe.hosttime`` multiplies them by what the fake step counts):

- ``op_seconds``: seconds per aten op dispatched in the forward and backward pass of a small stack of
  linear, layer-norm and GELU modules with cross-entropy, on tensors so small that only dispatch and
  Python cost anything;
- ``param_seconds``: seconds per parameter tensor of fastai's Adam step plus ``zero_grad`` (fastai's
  optimizers loop over parameters in Python), on tiny parameters.

Each is the fastest of 30 repeats in the thread's own CPU time (the least disturbed by other
processes on a busy machine), on one thread; the whole benchmark takes a few tenths of a second. The
answer is kept in planner's estimate store (the same machine, Python, torch and fastai: the same
answer), so plans made one after the other agree.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable

from planner.base.plan import Host
from planner.probe.meters.estimate_store import EstimateStore

REPEATS = 30


def cpu_name() -> str:
    """The CPU's model name and this machine's core count, e.g. "AMD EPYC, 2 cores"."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{model or platform.processor() or platform.machine()}, {os.cpu_count() or 1} cores"


def _fastest(run: Callable[[], None]) -> float:
    """The fastest of :data:`REPEATS` calls of ``run``, in this thread's CPU time (time spent waiting
    for a core that other processes hold does not count)."""
    best = float("inf")
    for _ in range(REPEATS):
        started = time.thread_time()
        run()
        best = min(best, time.thread_time() - started)
    return best


def op_seconds(blocks: int = 16, width: int = 16) -> float:
    """Seconds per dispatched op of a tiny model's forward and backward pass (see the module docstring)."""
    import torch

    from planner.probe.meters.opcount import OpCounter

    layers: list[torch.nn.Module] = []
    for _ in range(blocks):
        layers += [torch.nn.Linear(width, width), torch.nn.LayerNorm(width), torch.nn.GELU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 10))
    inputs, targets = torch.randn(2, width), torch.tensor([1, 2])

    def step() -> None:
        torch.nn.functional.cross_entropy(model(inputs), targets).backward()

    step()  # gradients exist from here on, as in training
    counter = OpCounter()
    with counter:
        step()
    return _fastest(step) / sum(counter.dispatches.values())


def param_seconds(parameters: int = 64) -> float:
    """Seconds per parameter tensor of fastai's Adam step and ``zero_grad`` (see the module docstring)."""
    import torch
    from fastai.optimizer import Adam

    tensors = [torch.nn.Parameter(torch.randn(16)) for _ in range(parameters)]
    for tensor in tensors:
        tensor.grad = torch.ones_like(tensor)
    optimizer = Adam(tensors, lr=1e-3)

    def step() -> None:
        optimizer.step()
        optimizer.zero_grad()

    step()  # the optimizer's state exists from here on
    return _fastest(step) / parameters


def measure_host() -> Host:
    """Run the benchmark on this machine, on one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return Host(cpu=cpu_name(), op_seconds=op_seconds(), param_seconds=param_seconds())
    finally:
        torch.set_num_threads(threads)


def this_host(speed: float = 1.0) -> Host:
    """This machine's costs (measured once, then from the estimate store), for a host ``speed`` times as fast."""
    store = EstimateStore({"host_benchmark": cpu_name(), "python": platform.python_version()}) \
        if EstimateStore.enabled() else None
    stored = store.get("host", {}, Host.model_validate) if store else None
    host = stored or measure_host()
    if store is not None and not stored:
        store.put("host", {}, host.to_dict())
    return host.model_copy(update={"speed": speed})
