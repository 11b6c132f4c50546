"""The host's share of a training step: dispatching every op, and fastai's optimizer parameter by parameter.

Eager PyTorch runs the step from Python: every aten op of the forward and backward pass is dispatched
by the host before its kernel is queued, and fastai's optimizers step each parameter tensor in a
Python loop (a dozen small ops each, then ``zero_grad``), with callbacks and the GradScaler around
them. A card that finishes its kernels sooner waits for the host. From what the fake step counts
(:class:`planner.base.plan.HostWork`) and the host's measured costs (:class:`planner.base.plan.Host`,
``planner.probe.hostbench``)::

    forward_backward = op_factor · op_seconds · forward_backward_ops / speed
    optimizer_step   = param_factor · param_seconds · parameter_tensors / speed
    eval_forward     = op_factor · op_seconds · eval_ops / speed

``op_seconds`` and ``param_seconds`` come from the CPU benchmark (tiny CPU tensors, so the cost of
dispatch and Python alone); the two factors carry what a CUDA step adds to that (kernel launches,
autocast, the allocator) and are the same for every model: fitted once on fastai steps recorded on
an H100 (``benchmarks/gpu/host_time_fit.py``). A step then takes the longer of the card's work and the
host's (``planner.probe.epochtime.slowest``). Pure arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.base.plan import Host, HostWork, StepTimes, TimeBasis


@dataclass(frozen=True)
class HostConstants:
    """How much a CUDA training step's host work costs per unit of the CPU benchmark's."""

    op_factor: float
    param_factor: float


# Fitted by benchmarks/gpu/host_time_fit.py on the H100 session's fastai steps (results in
# benchmarks/results/host_time_fit.json; 10.3-10.4 over runs of the benchmark). Free, the parameter
# factor goes to about 0 (the four architectures' 300-429 parameter tensors cannot tell it from the op
# factor); it is held at its floor, 1: the optimizer's loop costs at least what it costs on the CPU.
DEFAULT_HOST_CONSTANTS = HostConstants(op_factor=10.3, param_factor=1.0)


def host_step_times(work: HostWork, host: Host, gpu: str,
                    constants: HostConstants = DEFAULT_HOST_CONSTANTS) -> StepTimes:
    """The host's seconds for each part of one micro-batch (see the module docstring)."""
    per_op = constants.op_factor * host.op_seconds / host.speed
    return StepTimes(gpu=gpu, forward_backward=per_op * work.forward_backward_ops,
                     optimizer_step=constants.param_factor * host.param_seconds * work.parameter_tensors / host.speed,
                     eval_forward=per_op * work.eval_ops)


def host_bound(work: HostWork | None, timing: TimeBasis) -> dict[str, StepTimes]:
    """``{"host": times}`` to add to the card's bound, or nothing when the plan names no host or no
    fake step counted the work (a cuda or cpu probe without the estimate beside it)."""
    if work is None or timing.host is None or timing.gpu is None:
        return {}
    return {"host": host_step_times(work, timing.host, timing.gpu)}
