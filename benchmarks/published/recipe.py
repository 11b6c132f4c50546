"""timm's published training benchmark (2022, RTX 3090) as a recipe for the estimating core.

The recipe of ``benchmarks/data/README.md`` (timm 0.6.6 ``benchmark.py --bench train --amp``,
PyTorch 1.12): ``timm.create_model(name)`` with its own 1000-class head in train mode; one random
batch (batch, 3, img, img) with random targets; forward and ``CrossEntropyLoss`` under fp16
autocast *and the backward pass inside the same autocast block*; ``SGD(lr=1e-4, momentum=0.9,
nesterov=True)`` stepping per parameter (torch 1.12 had no foreach default); ``zero_grad()`` that
zeroes gradients in place (torch 1.12's default), so gradients and momentum exist while the next
forward pass runs; explicit attention (timm 0.6.6 had no fused kernel; today's timm is told so with
``set_fused_attn(False)`` while the model is built).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from planner.probe.meters.fake_step import FakeStep, Precision, StepRecipe, Tensors

N_CLASSES = 1000


@contextlib.contextmanager
def timm_attention(fused: bool) -> Iterator[None]:
    """Build timm models with fused (``scaled_dot_product_attention``) or explicit attention."""
    from timm.layers import set_fused_attn, use_fused_attn

    was, was_experimental = use_fused_attn(), use_fused_attn(experimental=True)
    set_fused_attn(fused)
    try:
        yield
    finally:
        set_fused_attn(was, experimental=was_experimental)


def attention_path(model: torch.nn.Module) -> str:
    """Which attention a timm model runs: ``fused`` (``scaled_dot_product_attention``, the CUDA
    kernel chosen by :func:`planner.probe.meters.cuda_kernels.sdpa_backend`), ``explicit`` (q @ kᵀ,
    softmax, @ v), ``mixed``, or ``none``; read from the ``fused_attn`` flag timm sets on every
    attention module when it is built (``timm.layers.use_fused_attn``)."""
    flags = {bool(module.fused_attn) for module in model.modules() if hasattr(module, "fused_attn")}
    if not flags:
        return "none"
    return "mixed" if len(flags) == 2 else ("fused" if flags == {True} else "explicit")


def parameter_count(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def benchmark_recipe(model_name: str, precision: Precision = "cuda_fp16", fused_attention: bool = False,
                     torch2_loop: bool = False) -> StepRecipe:
    """The published benchmark's training step for ``model_name`` (images come square, per run).

    ``torch2_loop``: the same loop as today's torch runs it (``zero_grad`` frees gradients, the
    backward pass after the autocast block), to compare with peaks measured on today's stack.
    """
    import timm

    def build() -> torch.nn.Module:
        with timm_attention(fused_attention):
            return timm.create_model(model_name, pretrained=False, num_classes=N_CLASSES)

    def optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True, foreach=False)

    def batch(size: int, image: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.empty(size, 3, *image), torch.zeros(size, dtype=torch.long)

    def loss(output: torch.Tensor | tuple, targets: torch.Tensor) -> torch.Tensor:
        if isinstance(output, tuple):  # distilled models return (class, distillation) in train mode
            output = output[0]
        return torch.nn.functional.cross_entropy(output, targets)

    return StepRecipe(build_model=build, make_optimizer=optimizer, make_batch=batch, loss=loss,
                      precision=precision, backward_in_autocast=not torch2_loop, grads_set_to_none=torch2_loop)


def benchmark_step(model_name: str, precision: Precision = "cuda_fp16", fused_attention: bool = False,
                   torch2_loop: bool = False, tensors: Tensors = "meta") -> FakeStep:
    """A :class:`FakeStep` of the published recipe, the model built once."""
    return FakeStep(benchmark_recipe(model_name, precision, fused_attention, torch2_loop), tensors)
