"""CUDA's fp16 autocast, applied to CPU (or meta, or fake) tensors: CUDA's op lists, not CPU's.

Why: fake CUDA tensors cannot run a backward pass without a GPU, and CPU autocast casts a different
set of ops (it leaves softmax, layer_norm, group_norm, exp, pow, sum, ... in low precision, where
CUDA runs them in fp32 with fp32 outputs that autograd saves). On published RTX 3090 runs that
difference made a CPU-bf16 estimate say "fits" where the card ran out of memory.

How: autocast is a dispatch key above autograd, so the casts it inserts are differentiable ops that
autograd records. :func:`cuda_autocast` registers, for the duration of a ``with`` block, Python
kernels at the ``AutocastCPU`` key that implement CUDA's policies, and a fall-through for every op
that only CPU autocast lists; then it enables CPU autocast. Every aten op on a CPU tensor (or a meta
tensor, whose dispatch the estimating core gives CPU autocast's key: :mod:`planner.probe.meters.meta_tensors`),
including the ops inside composite ops such as ``cross_entropy_loss``, meets CUDA's policy exactly
where a CUDA tensor would. The registrations are removed on exit (the dispatcher restores torch's
own CPU kernels), so they never outlive the block.

The policies, as torch's ``aten/src/ATen/autocast_mode.{h,cpp}`` define them:
- ``lower_precision_fp``: every eligible tensor argument (floating point, not fp64) cast to fp16;
  fp32 leaf tensors that require grad (weights) are cast once per autocast region and the copy
  kept until the region ends (torch's weight-cast cache).
- ``fp32``: every eligible tensor argument cast to fp32 (output fp32; autograd saves the fp32 copy).
- ``fp32_set_opt_dtype``: the op's ``dtype`` argument set to fp32 when unset and the first argument
  is eligible (softmax of fp16 returns fp32 and saves it).
- ``fp32_append_dtype``: ``norm`` redispatched to its dtype overload with fp32.
- ``promote``: every eligible argument cast to the widest floating type among them.
- ``binary_cross_entropy`` is refused, as CUDA autocast refuses it.

The op lists differ between torch releases: the tables below are their union over the releases
planner is tested with (torch 2.6, the floor, to 2.14), and :func:`installed_policy` keeps the ops
the installed torch registers for CUDA autocast. How the rules were checked: for the installed
torch, that selection is compared, op for op, with the ops it registers a kernel for at the
``AutocastCUDA`` key (``tests/probe/test_cuda_autocast.py``, run by CI on both ends of the range;
torch's dispatcher is the ground truth for membership), and each policy with the lists in the
installed ``torch/include/ATen/autocast_mode.h`` when that header ships (it does in the PyPI
wheels). Outputs and saved tensors then follow from torch's own autograd formulas, the same code on
both devices. What CUDA *kernels* keep differently from CPU kernels (fused attention, dropout's
mask) is in :mod:`planner.probe.meters.cuda_kernels`, which this module installs alongside.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils._pytree import tree_map

LOWER_PRECISION_FP = (
    "_convolution.deprecated", "_convolution", "conv1d", "conv2d", "conv3d", "conv_tbc", "conv_transpose1d",
    "conv_transpose2d.input", "conv_transpose3d.input", "convolution", "prelu", "addmm", "addmv", "addr",
    "matmul", "einsum", "mm", "mv", "linalg_vecdot", "linear", "addbmm", "baddbmm", "bmm", "chain_matmul",
    "linalg_multi_dot", "_thnn_fused_lstm_cell", "_thnn_fused_gru_cell", "lstm_cell", "gru_cell",
    "rnn_tanh_cell", "rnn_relu_cell", "_scaled_dot_product_flash_attention", "scaled_dot_product_attention",
    # registered outside the header's macros: cudnn_convolution*, in autocast_mode.cpp; _cudnn_rnn in
    # aten/src/ATen/cudnn/AutocastRNN.cpp (casts to fp16 for cuDNN's RNN)
    "cudnn_convolution", "cudnn_convolution_transpose", "_cudnn_rnn",
)
FP32 = (
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal", "rsqrt",
    "sinh", "tan", "pow.Tensor_Scalar", "pow.Tensor_Tensor", "pow.Scalar", "softplus", "layer_norm",
    "native_layer_norm", "rms_norm", "group_norm", "frobenius_norm.dim", "nuclear_norm", "nuclear_norm.dim",
    "cosine_similarity", "poisson_nll_loss", "cosine_embedding_loss", "nll_loss", "nll_loss2d",
    "hinge_embedding_loss", "kl_div", "l1_loss", "smooth_l1_loss", "huber_loss", "mse_loss",
    "margin_ranking_loss", "multilabel_margin_loss", "soft_margin_loss", "triplet_margin_loss",
    "multi_margin_loss", "binary_cross_entropy_with_logits", "dist", "pdist", "cdist", "renorm", "logsumexp",
    "upsample_nearest1d", "_upsample_nearest_exact1d", "upsample_nearest2d", "_upsample_nearest_exact2d",
    "upsample_nearest3d", "_upsample_nearest_exact3d", "upsample_linear1d", "upsample_bilinear2d",
    "_upsample_bilinear2d_aa", "upsample_trilinear3d", "upsample_bicubic2d", "_upsample_bicubic2d_aa",
    # registered in autocast_mode.cpp outside the header's macros; fp32 assumed (a matrix square root).
    # Neither it nor rms_norm is listed by torch 2.6.
    "linalg_matrix_sqrth",
)
FP32_SET_OPT_DTYPE = (
    "prod", "prod.dim_int", "softmax.int", "log_softmax.int", "cumprod", "cumsum", "linalg_vector_norm",
    "linalg_matrix_norm", "linalg_matrix_norm.str_ord", "sum", "sum.dim_IntList",
    # named-dimension overloads: listed by torch 2.6 (the floor), no longer by 2.14
    "prod.dim_Dimname", "softmax.Dimname", "log_softmax.Dimname", "cumprod.dimname", "cumsum.dimname",
    "sum.dim_DimnameList",
)
FP32_APPEND_DTYPE = {"norm.Scalar": "ScalarOpt_dtype", "norm.ScalarOpt_dim": "ScalarOpt_dim_dtype",
                     "norm.names_ScalarOpt_dim": "names_ScalarOpt_dim_dtype"}  # the last: torch 2.6 only
PROMOTE = ("addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "vdot", "grid_sampler", "index_put",
           "tensordot", "scatter_add")
BANNED = ("binary_cross_entropy",)

LOW = torch.float16
_AUTOCAST_CPU = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)


def cuda_policy() -> dict[str, str]:
    """Op (``name.overload``; the default overload by its bare name) -> CUDA autocast policy, for every
    torch release in the tested range (an op a release does not list is left out by :func:`installed_policy`)."""
    table = {op: "lower_precision_fp" for op in LOWER_PRECISION_FP}
    table.update({op: "fp32" for op in FP32})
    table.update({op: "fp32_set_opt_dtype" for op in FP32_SET_OPT_DTYPE})
    table.update({op: "fp32_append_dtype" for op in FP32_APPEND_DTYPE})
    table.update({op: "promote" for op in PROMOTE})
    table.update({op: "banned" for op in BANNED})
    return table


@functools.cache
def autocast_ops(dispatch_key: str) -> frozenset[str]:
    """Ops that the installed torch registers a kernel for at ``dispatch_key`` (e.g. AutocastCUDA)."""
    return frozenset({
        name.removeprefix("aten::")
        for name in torch._C._dispatch_get_all_op_names()
        if name.startswith("aten::") and torch._C._dispatch_has_kernel_for_dispatch_key(name, dispatch_key)
    })


def installed_policy() -> dict[str, str]:
    """:func:`cuda_policy` for the ops the installed torch's CUDA autocast covers (each release of the
    tested range lists some ops the others do not; a torch built without those registrations: every
    op of the table that it has)."""
    cuda_ops = autocast_ops("AutocastCUDA")
    return {name: policy for name, policy in cuda_policy().items()
            if (name in cuda_ops if cuda_ops else _exists(name))}


def _exists(name: str) -> bool:
    base, _, overload = name.partition(".")
    return hasattr(getattr(torch.ops.aten, base, None), overload or "default")


def op_overload(name: str) -> torch._ops.OpOverload:
    """``torch.ops.aten`` overload for ``name.overload`` (bare name: the default overload)."""
    base, _, overload = name.partition(".")
    return getattr(getattr(torch.ops.aten, base), overload or "default")


def _eligible(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float64


class _CastCache:
    """torch's weight-cast cache: one fp16 copy per fp32 leaf that requires grad, per autocast region."""

    def __init__(self) -> None:
        self._copies: dict[int, tuple[weakref.ref, torch.Tensor]] = {}
        self.enabled = False

    def cast(self, value: Any, dtype: torch.dtype) -> Any:
        if not _eligible(value) or value.dtype == dtype:
            return value
        cacheable = (self.enabled and dtype == LOW and value.dtype == torch.float32 and value.requires_grad
                     and value.is_leaf and not value._is_view())
        if not cacheable:
            return value.to(dtype)
        known = self._copies.get(id(value))
        if known is not None and known[0]() is value:
            return known[1]
        copy = value.to(dtype)
        self._copies[id(value)] = (weakref.ref(value), copy)
        return copy

    def clear(self) -> None:
        self._copies.clear()


def _widest(args: Any) -> torch.dtype:
    widest = LOW
    for value in _tensors(args):
        if _eligible(value):
            widest = torch.promote_types(widest, value.dtype)
    return widest


def _tensors(tree: Any) -> Iterator[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, list | tuple):
        for item in tree:
            yield from _tensors(item)
    elif isinstance(tree, dict):
        for item in tree.values():
            yield from _tensors(item)


def _set_dtype(op: torch._ops.OpOverload, args: tuple, kwargs: dict, dtype: torch.dtype) -> tuple[tuple, dict]:
    """Set the op's ``dtype`` argument when the caller left it unset."""
    schema_args = op._schema.arguments
    index = next(i for i, arg in enumerate(schema_args) if arg.name == "dtype")
    if not schema_args[index].kwarg_only and len(args) > index:
        if args[index] is None:
            args = (*args[:index], dtype, *args[index + 1:])
        return args, kwargs
    if kwargs.get("dtype") is None:
        kwargs = {**kwargs, "dtype": dtype}
    return args, kwargs


Kernel = Callable[..., Any]


def _kernel(name: str, policy: str, cache: _CastCache, replace: dict[str, Kernel]) -> Kernel:
    """The Python kernel implementing ``policy`` for op ``name`` at the AutocastCPU key."""
    op = op_overload(name)
    call = replace.get(name, op)

    def cast_all(args: tuple, kwargs: dict, dtype: torch.dtype) -> tuple[tuple, dict]:
        def cast(value: Any) -> Any:
            return cache.cast(value, dtype)

        return tree_map(cast, args), tree_map(cast, kwargs)

    def kernel(*args: Any, **kwargs: Any) -> Any:
        with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST_CPU):
            if policy == "lower_precision_fp":
                args, kwargs = cast_all(args, kwargs, LOW)
            elif policy == "fp32":
                args, kwargs = cast_all(args, kwargs, torch.float32)
            elif policy == "fp32_set_opt_dtype":
                if args and _eligible(args[0]):
                    args, kwargs = _set_dtype(op, args, kwargs, torch.float32)
            elif policy == "fp32_append_dtype":
                if args and _eligible(args[0]):
                    base = name.partition(".")[0]
                    return op_overload(f"{base}.{FP32_APPEND_DTYPE[name]}")(*args, **kwargs, dtype=torch.float32)
            elif policy == "promote":
                args, kwargs = cast_all(args, kwargs, _widest((args, kwargs)))
            elif policy == "banned":
                raise RuntimeError(f"torch.nn.functional.{name} is unsafe to autocast (CUDA autocast refuses it)")
            return call(*args, **kwargs)

    return kernel


class CudaAutocast:
    """CUDA's autocast policy installed at the ``AutocastCPU`` key while the ``with`` block runs.

    Installing is not enabling: the kernels run only inside an autocast region (:meth:`region`), or
    where torch itself re-enables CPU autocast, as ``torch.utils.checkpoint`` does while it
    recomputes a checkpointed block in the backward pass (CUDA's policy then applies there too, as
    it would on a GPU). Not thread-safe: the registrations are process-wide while installed.

    Args:
        kernels: op name -> a function that replaces the op's CPU kernel after the policy's casts
            (how :mod:`planner.probe.meters.cuda_kernels` runs CUDA's fused attention); ops named here
            that have no autocast policy get the policy "run as is".
    """

    def __init__(self, kernels: dict[str, Kernel] | None = None):
        self.kernels = kernels or {}
        self.cache = _CastCache()
        self._library: Any = None

    def __enter__(self) -> CudaAutocast:
        library = torch.library.Library("aten", "IMPL")
        try:
            with warnings.catch_warnings():
                # torch 2.6 warns (once) that a kernel at AutocastCPU is overridden: that is the point here
                warnings.filterwarnings("ignore", "Warning only once for all operators", UserWarning,
                                        r"torch\.library")
                self._register(library)
        except BaseException:
            library._destroy()
            raise
        self._library = library
        return self

    def _register(self, library: torch.library.Library) -> None:
        policies = installed_policy()
        for name in sorted(autocast_ops("AutocastCPU") - set(policies) - set(self.kernels)):
            library.impl(name, torch.library.fallthrough_kernel, "AutocastCPU")
        for name, policy in policies.items():
            library.impl(name, _kernel(name, policy, self.cache, self.kernels), "AutocastCPU")
        for name in set(self.kernels) - set(policies):
            library.impl(name, _kernel(name, "as_is", self.cache, self.kernels), "AutocastCPU")

    def __exit__(self, *exc_info: object) -> None:
        self.cache.clear()
        self._library._destroy()
        self._library = None

    @contextlib.contextmanager
    def region(self) -> Iterator[None]:
        """One autocast region: CPU autocast enabled; weights cast once and kept until it ends."""
        self.cache.enabled = True
        try:
            with torch.autocast("cpu", dtype=LOW, cache_enabled=False):
                yield
        finally:
            self.cache.clear()
            self.cache.enabled = False


@contextlib.contextmanager
def cuda_autocast(kernels: dict[str, Kernel] | None = None) -> Iterator[None]:
    """Run the block as one CUDA fp16 autocast region, on CPU (fake) tensors; see :class:`CudaAutocast`."""
    with CudaAutocast(kernels) as installed, installed.region():
        yield
