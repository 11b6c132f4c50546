"""An op counter: FLOPs and bytes moved by every kernel of a (fake) training step.

A ``TorchDispatchMode`` that sees each aten op below autograd, so forward, backward and the
optimizer step are all counted, on meta tensors as on real ones, and it can ride along with the
storage tracker in the same pass (dispatch modes stack). Each op becomes an :class:`OpCost`:

- ``tensor_flops``: matrix-multiply FLOPs that run on tensor cores (mm/addmm/bmm/baddbmm,
  convolutions whose input channels per group reach :data:`TENSOR_CORE_MIN_CHANNELS`, fused
  attention). Convolutions are counted per group, and the weight gradient too (torch's own
  ``FlopCounterMode`` counts a depthwise weight gradient as dense: convnext_large 613 GFLOP a sample).
- ``vector_flops``: everything else, one FLOP per output element, plus grouped/depthwise
  convolutions (few channels per group cannot use tensor cores).
- ``bytes``: every tensor read and written (inputs plus outputs, at their dtype); views, shape
  queries and allocations move nothing and are not kernels.

Costs are aggregated by identical (kind, flops, bytes) so a step of thousands of ops is a short list.
Every op dispatched is also counted per phase, views and metadata included (``dispatches``): each
costs the host time to dispatch it, kernel or not (``planner.probe.hosttime``).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

from planner.base.compat import torch_dispatch_mode, tree_leaves

aten = torch.ops.aten

TENSOR_CORE_MIN_CHANNELS = 16  # input channels per group below which a convolution runs like a vector op

# Ops that launch no kernel and move no bytes (allocation, metadata, views handled generically).
_FREE_OPS = {
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "detach", "alias", "lift_fresh",
    "_local_scalar_dense", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "is_same_size",
    "set_", "resize_", "_has_compatible_shallow_copy_type", "equal", "is_nonzero", "_unsafe_view",
    "_reshape_alias", "device", "dtype", "layout",
}
_MATMUL_OPS = {"mm", "addmm", "bmm", "baddbmm", "_scaled_mm"}
_CONV_OPS = {"convolution", "_convolution", "cudnn_convolution", "convolution_overrideable",
             "_slow_conv2d_forward", "mkldnn_convolution"}
_ATTENTION_FORWARD = {"_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                      "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu",
                      "_scaled_dot_product_fused_attention_overrideable"}
_ATTENTION_BACKWARD = {name + "_backward" for name in _ATTENTION_FORWARD}


@dataclass(frozen=True)
class OpCost:
    """What one kernel costs: FLOPs on tensor cores, FLOPs elsewhere, bytes read and written."""

    tensor_flops: float
    vector_flops: float
    bytes: float


def tensor_bytes(value: Any) -> int:
    """Bytes a tensor argument occupies as the kernel sees it (elements × element size)."""
    return value.numel() * value.element_size() if isinstance(value, torch.Tensor) else 0


def matmul_flops(name: str, args: tuple, out: torch.Tensor) -> float:
    """2·M·N·K for mm/addmm/bmm/baddbmm (the output's elements × the inner dimension × 2)."""
    first = args[0] if name in ("mm", "bmm", "_scaled_mm") else args[1]
    return 2.0 * out.numel() * first.shape[-1]


def conv_flops(x_shape: Any, w_shape: Any, out_shape: Any, transposed: bool) -> float:
    """Forward convolution FLOPs per group: 2 · N · C_out · (C_in/groups) · kernel · positions.

    The weight's second dimension already is C_in/groups (C_out/groups when transposed, where the
    positions are the input's), so grouped and depthwise convolutions come out right.
    """
    positions = math.prod((x_shape if transposed else out_shape)[2:])
    return 2.0 * x_shape[0] * w_shape[0] * w_shape[1] * math.prod(w_shape[2:]) * positions


def attention_flops(query: torch.Tensor, key: torch.Tensor, backward: bool) -> float:
    """QKᵀ and PV: 4 · B · H · L_q · L_k · D forward; backward recomputes QKᵀ and adds four: 2.5×."""
    forward = 4.0 * math.prod(query.shape[:-1]) * key.shape[-2] * query.shape[-1]
    return forward * 2.5 if backward else forward


def op_cost(func: Any, args: tuple, kwargs: dict, out: Any) -> OpCost | None:
    """The cost of one aten op, or None when it launches no kernel (views, allocation, metadata)."""
    name = func._overloadpacket.__name__
    if name in _FREE_OPS or func.is_view or func.namespace == "prim":
        return None
    inputs = [value for value in tree_leaves((args, kwargs)) if isinstance(value, torch.Tensor)]
    outputs = [value for value in tree_leaves(out) if isinstance(value, torch.Tensor)]
    moved = float(sum(map(tensor_bytes, inputs)) + sum(map(tensor_bytes, outputs)))
    elements = float(max((value.numel() for value in outputs), default=0))
    if name in _MATMUL_OPS:
        return OpCost(matmul_flops(name, args, outputs[0]), 0.0, moved)
    if name in _CONV_OPS:
        transposed = name in ("convolution", "_convolution") and bool(args[6])
        flops = conv_flops(args[0].shape, args[1].shape, outputs[0].shape, transposed)
        return _conv_cost(flops, args[1].shape[1], moved)
    if name == "convolution_backward":
        grad_out, x, weight = args[0], args[1], args[2]
        transposed, mask = bool(args[7]), args[10]
        forward = conv_flops(x.shape, weight.shape, grad_out.shape, transposed)
        return _conv_cost(forward * (int(mask[0]) + int(mask[1])), weight.shape[1], moved)
    if name in _ATTENTION_FORWARD:
        return OpCost(attention_flops(args[0], args[1], backward=False), elements, moved)
    if name in _ATTENTION_BACKWARD:
        return OpCost(attention_flops(args[1], args[2], backward=True), elements, moved)
    return OpCost(0.0, elements, moved)


def _conv_cost(flops: float, channels_per_group: int, moved: float) -> OpCost:
    if channels_per_group >= TENSOR_CORE_MIN_CHANNELS:
        return OpCost(flops, 0.0, moved)
    return OpCost(0.0, flops, moved)


class OpCounter(torch_dispatch_mode()):
    """Count the cost of every kernel while active; see the module docstring.

    Attributes:
        costs: how many times each distinct :class:`OpCost` ran, all phases together.
        phase_costs: the same per phase (see :meth:`set_phase`; "step" until told otherwise).
        by_op: count, tensor FLOPs, vector FLOPs and bytes per aten op name (for reports).
        dispatches: how many aten ops of any kind (views too) each phase dispatched.
    """

    def __init__(self) -> None:
        super().__init__()
        self.costs: Counter[OpCost] = Counter()
        self.phase = "step"
        self.phase_costs: dict[str, Counter[OpCost]] = {}
        self.by_op: dict[str, list[float]] = {}
        self.dispatches: Counter[str] = Counter()

    def set_phase(self, phase: str) -> None:
        """Attribute the following kernels to ``phase`` (e.g. "forward_backward", "step", "eval")."""
        self.phase = phase

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.dispatches[self.phase] += 1
        cost = op_cost(func, args, kwargs, out)
        if cost is not None:
            self.costs[cost] += 1
            self.phase_costs.setdefault(self.phase, Counter())[cost] += 1
            totals = self.by_op.setdefault(func._overloadpacket.__name__, [0.0, 0.0, 0.0, 0.0])
            totals[0] += 1
            totals[1] += cost.tensor_flops
            totals[2] += cost.vector_flops
            totals[3] += cost.bytes
        return out

    @property
    def kernels(self) -> int:
        return sum(self.costs.values())

    def totals(self) -> OpCost:
        """Summed FLOPs and bytes of everything counted."""
        return OpCost(*(sum(getattr(cost, field) * count for cost, count in self.costs.items())
                        for field in ("tensor_flops", "vector_flops", "bytes")))
