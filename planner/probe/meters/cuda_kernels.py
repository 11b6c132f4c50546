"""What CUDA kernels keep that CPU kernels do not (and the reverse), emulated on meta tensors.

Autocast decides dtypes (:mod:`planner.probe.meters.cuda_autocast`); the kernels behind an op decide what
is allocated and saved for backward. Where a CUDA kernel and the CPU kernel differ in memory, the
op is replaced here by an emulation that allocates what the CUDA kernel allocates (meta tensors
cost nothing to create) and saves what it saves:

- ``scaled_dot_product_attention``: CUDA picks flash attention, then memory-efficient attention,
  then the math path, by the rules of ``aten/src/ATen/native/transformers/cuda/sdp_utils.cpp``
  (:func:`sdpa_backend`; flash needs compute capability 8.0+, fp16/bf16, no mask, head dim <= 256,
  and on sm86/sm89 a head dim <= 192 when training; memory-efficient needs a head dim divisible by
  8). Flash saves q, k, v, the output and a log-sum-exp of B×H×N fp32 (O(N) per head, never the
  N×N matrix); its backward allocates dq, dk, dv and an fp32 dq accumulator (sequence rounded to
  128, head dim to 32/64) and B×H×N fp32 row sums (flash-attention 2's ``mha_bwd``).
  Memory-efficient attention saves the same plus the mask padded to a multiple of 8 columns
  (``preprocess_mask``) and a log-sum-exp rounded up to 32 rows; its backward allocates the input
  gradients, the mask's gradient at the mask's full shape, and an fp32 accumulator for dq. The math
  path is torch's own composite (explicit N×N), as on CUDA.
- ``dropout`` with 0 < p < 1 in training: CUDA's fused kernel (``native_dropout``) saves a one-byte
  mask; the CPU path multiplies by a noise tensor of the input's dtype and saves that.

Checked against: the sources named above, the dtype and shape checks of torch's own CUDA kernels,
and (for the whole estimate) published and measured GPU peaks (``benchmarks/RESULTS.md``).
cuDNN batch norm needs no emulation: it saves per-channel mean and inverse variance (and a
reserve space that is empty for the plain spatial mode torch uses for NCHW), the same sizes as
the CPU kernel's saved statistics; convolutions save their input and weight on both devices.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

Backend = Literal["flash", "efficient", "math"]
DEFAULT_CAPABILITY = (8, 0)


@dataclass(frozen=True)
class GpuArch:
    """The card's compute capability, which decides the attention kernels CUDA may pick."""

    capability: tuple[int, int] = DEFAULT_CAPABILITY


def _round_up(value: int, multiple: int) -> int:
    return math.ceil(value / multiple) * multiple


def sdpa_backend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None,
                 capability: tuple[int, int] = DEFAULT_CAPABILITY) -> Backend:
    """The kernel CUDA's ``scaled_dot_product_attention`` picks for these (already cast) inputs."""
    head_dim = query.shape[-1]
    training = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    low = query.dtype in (torch.float16, torch.bfloat16)
    flash = (capability >= (8, 0) and low and attn_mask is None and query.dim() == 4
             and head_dim == key.shape[-1] == value.shape[-1] and head_dim <= 256
             and not (capability in ((8, 6), (8, 9)) and training and head_dim > 192))
    if flash:
        return "flash"
    if capability >= (5, 0) and query.dim() == 4 and head_dim % 8 == 0 and value.shape[-1] % 8 == 0:
        return "efficient"
    return "math"


class _FusedAttention(torch.autograd.Function):
    """Allocates and saves what CUDA's flash / memory-efficient attention kernels do; computes nothing."""

    @staticmethod
    def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                bias: torch.Tensor | None, backend: Backend) -> torch.Tensor:
        *batch, length, _ = query.shape
        out = query.new_empty((*batch, length, value.shape[-1]))
        rows = length if backend == "flash" else _round_up(length, 32)
        logsumexp = query.new_empty((*batch, rows), dtype=torch.float32)
        rng_state = query.new_empty((2,), dtype=torch.int64)
        ctx.backend = backend
        ctx.bias_needs_grad = bias is not None and bias.requires_grad
        ctx.save_for_backward(query, key, value, bias, out, logsumexp, rng_state)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple:
        query, key, value, bias, _out, _lse, _rng = ctx.saved_tensors
        *batch, length, head_dim = query.shape
        grad_query, grad_key, grad_value = (torch.empty_like(t) for t in (query, key, value))
        if ctx.backend == "flash":
            rows = _round_up(length, 128)
            accumulator = query.new_empty((*batch, rows, _round_up(head_dim, 32 if head_dim <= 128 else 64)),
                                          dtype=torch.float32)
            row_sums = query.new_empty((*batch, rows), dtype=torch.float32)
        else:
            accumulator = query.new_empty(query.shape, dtype=torch.float32)
            row_sums = query.new_empty((*batch, _round_up(length, 32)), dtype=torch.float32)
        grad_bias = torch.empty_like(bias) if ctx.bias_needs_grad else None
        del accumulator, row_sums
        return grad_query, grad_key, grad_value, grad_bias, None


def _padded_mask(mask: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """``preprocess_mask``: the mask as the query's dtype, columns padded to a multiple of 8."""
    mask = mask.to(query.dtype) if mask.dtype != query.dtype else mask
    columns = mask.shape[-1]
    if columns % 8 == 0 and mask.stride(-1) == 1:
        return mask
    padded = torch.nn.functional.pad(mask, (0, _round_up(columns, 8) - columns))
    return padded[..., :columns]


def scaled_dot_product_attention(capability: tuple[int, int] = DEFAULT_CAPABILITY) -> Callable[..., torch.Tensor]:
    """A replacement for ``aten::scaled_dot_product_attention`` that behaves as CUDA's kernels do."""

    def sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None,
             dropout_p: float = 0.0, is_causal: bool = False, *, scale: float | None = None,
             enable_gqa: bool = False) -> torch.Tensor:
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros_like(attn_mask, dtype=query.dtype).masked_fill(~attn_mask, float("-inf"))
        backend = sdpa_backend(query, key, value, attn_mask, capability)
        if backend == "math" or enable_gqa:
            return torch.ops.aten._scaled_dot_product_attention_math(
                query, key, value, attn_mask, dropout_p, is_causal, None, scale=scale, enable_gqa=enable_gqa)[0]
        bias = None if attn_mask is None else _padded_mask(attn_mask, query)
        return _FusedAttention.apply(query, key, value, bias, backend)

    return sdpa


def dropout(input: torch.Tensor, p: float, train: bool) -> torch.Tensor:
    """CUDA's dropout: the fused kernel (one-byte mask) whenever it drops anything."""
    if train and 0 < p < 1 and input.numel() > 0:
        return torch.ops.aten.native_dropout.default(input, p, train)[0]
    return torch.ops.aten.dropout.default(input, p, train)


def cuda_kernels(arch: GpuArch | None = None) -> dict[str, Callable[..., Any]]:
    """Op name -> CUDA-kernel emulation, for :func:`planner.probe.meters.cuda_autocast.cuda_autocast`."""
    arch = arch or GpuArch()
    return {"scaled_dot_product_attention": scaled_dot_product_attention(arch.capability), "dropout": dropout}
