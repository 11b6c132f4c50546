"""Every use of another package's private or version-dependent API, in one place.

planner leans on a few things that its dependencies do not promise to keep: timm's table of renamed
models, torch's ``FakeTensorMode`` (a private module) and its library of Python meta kernels
(set aside while the estimating core runs), torch's autocast nesting counter and cuBLAS workspaces
(the cleanup after a failed try), the allocator settings torch parsed (``planner.base.allocator``),
fastai's ``TimmBody`` (patched for NHWC bodies) and ``Learner._end_cleanup``, Optuna's ``GPSampler``
options and one of Optuna's log lines. Each is reached only through a function here, which uses the
public API where one exists, falls back where an older or newer release offers another way, and
otherwise raises ``CompatError`` naming the versions planner was tested with and what to install.
Two modules are the exception by design, as they work inside torch's dispatcher: the CUDA autocast
emulation (``planner.probe.meters.cuda_autocast``), which selects the op lists the installed torch
registers, and the meta tensors the estimating core steps (``planner.probe.meters.meta_tensors``: a
dispatch key guard and a function mode); both are checked against that torch by their own tests at
both ends of the tested range.

``TESTED`` is the range CI runs (``.ci/run``: the newest releases; ``.ci/lowest``: pyproject's
floors); docs/install.md states the same range and a test keeps the two in step.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import inspect
import logging
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from planner.base.errors import UserError

# package: (lowest tested = pyproject's floor, newest tested). Checked against pyproject and docs/install.md by
# tests/test_dependencies.py.
TESTED: dict[str, tuple[str, str]] = {
    "torch": ("2.6.0", "2.14.1"),
    "timm": ("1.0.21", "1.0.31"),
    "fastai": ("2.7.19", "2.8.12"),
    "optuna": ("3.6.0", "5.0.0"),
}


class CompatError(UserError):
    """An installed dependency lacks an API planner needs; the message names the tested range."""


def tested_range(package: str) -> str:
    low, high = TESTED[package]
    return f"{package} {low} to {high}"


def installed_version(package: str) -> str:
    """``package``'s installed version from its metadata (without importing it)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def unsupported(package: str, what: str, error: BaseException | str) -> CompatError:
    """The error for a missing API: what is missing, the installed version and the tested range."""
    low, high = TESTED[package]
    return CompatError(
        f"{what} is not available with {package} {installed_version(package)} ({error}); planner is tested with "
        f"{tested_range(package)}: pip install '{package}>={low},<={high}'"
    )


# --- timm ------------------------------------------------------------------------------------------


def timm_renamed_models() -> Mapping[str, str | None]:
    """timm's table of renamed architectures: old name -> current name (None: removed, no successor).

    Public ``timm.models.get_deprecated_models()`` (timm 0.9 on); before it, the private
    ``timm.models._registry._deprecated_models`` that it returns.
    """
    import timm.models

    public = getattr(timm.models, "get_deprecated_models", None)
    if public is not None:
        return public()
    try:
        from timm.models import _registry

        return dict(_registry._deprecated_models)
    except (ImportError, AttributeError) as error:
        raise unsupported("timm", "timm's table of renamed models (get_deprecated_models)", error) from None


# --- torch -----------------------------------------------------------------------------------------


def fake_tensor_mode(**options: Any) -> Any:
    """A new ``torch._subclasses.fake_tensor.FakeTensorMode(**options)`` (private in every torch release).

    The estimating core (``planner.probe.meters.fake_step``) creates its mode here, so that a torch that
    moved or changed it gives one line naming the tested range (and ``--device cpu|cuda``, which do
    not need it) instead of a traceback.
    """
    try:
        from torch._subclasses.fake_tensor import FakeTensorMode
    except ImportError as error:
        raise unsupported("torch", "FakeTensorMode (used by --device estimate; --device cpu or cuda do not need "
                          "it)", error) from None
    try:
        return FakeTensorMode(**options)
    except TypeError as error:
        raise unsupported("torch", f"FakeTensorMode({', '.join(options)}=...) (used by --device estimate; "
                          "--device cpu or cuda do not need it)", error) from None


def fake_empty_like(fake_mode: Any, tensor: Any) -> Any:
    """A fake CPU tensor of ``fake_mode`` shaped like the ``meta`` tensor ``tensor``, with a storage of
    its own: what ``torch.empty_like(tensor, device="cpu")`` gives inside the mode. Call it outside.

    Built from a new meta tensor by the mode's private ``fake_tensor_converter.from_meta_and_device``
    (torch 2.6 to 2.14): no op is dispatched, about twenty times cheaper per tensor, which counts when
    a large model's parameters are materialised. Where a torch lacks it: ``torch.empty_like`` in the mode.
    """
    import torch

    meta = torch.empty_like(tensor, device="meta")
    converter = getattr(fake_mode, "fake_tensor_converter", None)
    make = getattr(converter, "from_meta_and_device", None)
    if make is None:
        with fake_mode:
            return torch.empty_like(tensor, device="cpu")
    return make(fake_mode, meta, torch.device("cpu"))


@contextlib.contextmanager
def native_meta_kernels() -> Iterator[None]:
    """While the block runs, ops on ``meta`` tensors use torch's C++ meta kernels where torch has them.

    Importing ``torch._meta_registrations`` (which ``torch._dynamo``, and so torchvision, do) puts
    Python meta kernels, written for ``torch.compile``'s symbolic shapes, in front of the C++ ones of
    about 640 aten ops (``add``, ``mul``, ``div``, ``addmm`` ...): each call on a meta tensor then costs
    about 400 µs instead of a few. The estimating core runs tens of thousands of such calls per step,
    so here torch's private library of those registrations is taken down, the Python kernels of ops
    without a C++ one (about 700) are registered again, and on exit torch's registrations are
    restored as they were. Process-wide while it runs (not thread-safe), like the CUDA autocast
    emulation; a block inside another costs nothing (the swap itself takes about 0.1 s, so a caller
    that runs several steps holds one block around them). Where a torch keeps that registry
    elsewhere, nothing changes (only slower).
    """
    import torch

    global _native_depth
    registry = _python_meta_registry() if _native_depth == 0 else None
    if registry is not None:
        module, kernels = registry
        getattr(module, _META_LIBRARY)._destroy()
        kept = _meta_library({op: kernel for op, kernel in kernels.items()
                              if not torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "Meta")})
    _native_depth += 1
    try:
        yield
    finally:
        _native_depth -= 1
        if registry is not None:
            kept._destroy()
            setattr(module, _META_LIBRARY, _meta_library(kernels))


_META_LIBRARY = "_meta_lib_dont_use_me_use_register_meta"
_native_depth = 0  # native_meta_kernels blocks open: only the outermost swaps the kernels


def _meta_library(kernels: Mapping[Any, Any]) -> Any:
    """A new ``aten`` library registering ``kernels`` (op overload -> Python kernel) at the Meta key."""
    import torch

    library = torch.library.Library("aten", "IMPL", "Meta")
    for op, kernel in kernels.items():
        library.impl(op, kernel)
    return library


def _python_meta_registry() -> tuple[Any, dict[Any, Any]] | None:
    """torch's module of Python meta kernels and what its ``aten`` library registers (op -> kernel),
    as ``activate_meta`` chose them (torch 2.6 to 2.14); None where torch lacks any part of it."""
    try:
        import torch
        from torch import _meta_registrations as module
        from torch._decomp import global_decomposition_table
    except ImportError:
        return None
    library = getattr(module, _META_LIBRARY, None)
    registered = getattr(library, "_op_impls", None)
    if library is None or getattr(library, "m", None) is None or not registered:
        return None
    chosen: dict[str, Any] = {}
    for table in ("meta", "post_autograd", "pre_autograd"):  # activate_meta's order of precedence
        for op, kernel in global_decomposition_table.get(table, {}).items():
            if isinstance(op, torch._ops.OpOverload):
                chosen.setdefault(op.name(), (op, kernel))
    kernels = {}
    for key in registered:
        namespace, name, key_name = key.split("/")
        found = chosen.get(f"{namespace}::{name}")
        if key_name != "Meta" or found is None:
            return None
        kernels[found[0]] = found[1]
    return module, kernels


def torch_dispatch_mode() -> type:
    """``torch.utils._python_dispatch.TorchDispatchMode``, the base of the storage tracker (a private
    module in every torch release; the class itself is documented). The storage tracker and the op
    counter subclass it."""
    try:
        from torch.utils._python_dispatch import TorchDispatchMode
    except ImportError as error:
        raise unsupported("torch", "TorchDispatchMode (the memory tracker of --device cpu and estimate)",
                          error) from None
    return TorchDispatchMode


def tree_leaves(tree: Any) -> list[Any]:
    """The leaves of nested lists, tuples and dicts: an aten op's outputs (or arguments) as a flat list.

    It replaces torch's private ``torch.utils._pytree.tree_flatten`` for the shapes aten ops return
    (a tensor, or lists and tuples of tensors and scalars) and, being a plain walk, costs a tenth of
    it per call (0.5 against 4 µs for one tensor, measured here): the storage tracker calls it on every op.
    """
    if isinstance(tree, (list, tuple)):
        return [leaf for item in tree for leaf in tree_leaves(item)]
    if isinstance(tree, dict):
        return [leaf for item in tree.values() for leaf in tree_leaves(item)]
    return [tree]


def leave_autocast() -> None:
    """Leave every autocast region this thread is still in, clear autocast's cache of cast weights and
    turn autocast off on the CPU and CUDA: the state outside any region.

    fastai's ``MixedPrecision`` enters CUDA autocast in ``before_batch`` and leaves it in ``after_loss``;
    an out-of-memory error in between (the forward pass) skips the leaving. Autocast then stays on in
    this thread, its nesting never returns to zero, and its cache is never cleared again: it holds a
    half-precision copy of every weight it cast and, through the copy's autograd graph, the weight
    itself, after the model is gone (1.5 times the weights' bytes per model, measured on the CPU).
    Call it only where no autocast region is meant to be open (between tries and probes). The nesting
    counter is reached through ``torch.autocast_increment_nesting``/``autocast_decrement_nesting`` (torch
    keeps them undocumented; the autocast context manager uses them).
    """
    import torch

    depth = torch.autocast_increment_nesting() - 1  # the counter is only readable by changing it
    torch.autocast_decrement_nesting()
    for _ in range(depth):
        torch.autocast_decrement_nesting()
    for device_type in ("cuda", "cpu"):
        torch.set_autocast_enabled(device_type, False)
    torch.clear_autocast_cache()


def clear_cublas_workspaces() -> None:
    """Free the cuBLAS workspaces torch keeps per handle and stream in its caching allocator (private
    ``torch._C._cuda_clearCublasWorkspaces``; nothing where a torch lacks it). ``empty_cache`` leaves
    them allocated, so a try that follows one that ran matrix products would start with them counted."""
    import torch

    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None:
        torch.cuda.synchronize()
        clear()


def allocator_settings() -> str | None:
    """The configuration torch's allocator parsed from the environment (private
    ``torch._C._accelerator_getAllocatorSettings``, torch 2.9 on); None where a torch cannot tell.

    torch parses the environment the first time the allocator configuration is asked for, and never
    again: call it only once CUDA has started, or it fixes the configuration before planner sets it.
    """
    import torch

    settings = getattr(torch._C, "_accelerator_getAllocatorSettings", None)
    return settings() if settings is not None else None


# --- fastai ----------------------------------------------------------------------------------------


def end_cleanup(learn: Any) -> None:
    """Drop a fastai Learner's last batch, predictions and losses: its private ``_end_cleanup()`` where it
    exists (fastai 2.x), else the same attributes set by hand; then ``loss_grad``, which ``_end_cleanup``
    keeps: the loss with its autograd graph, which after an error in the backward pass still holds the
    batch's saved activations."""
    cleanup = getattr(learn, "_end_cleanup", None)
    if callable(cleanup):
        cleanup()
    else:
        learn.dl, learn.xb, learn.yb, learn.pred, learn.loss = None, (None,), (None,), None, None
    learn.loss_grad = None



def channels_first_timm_body(body: Any) -> None:
    """Make fastai's ``TimmBody`` hand channels-first features to its pooling head, in place.

    timm 1.x Swin models return NHWC features from ``forward_features`` while fastai's head pools the
    last two dimensions, so ``vision_learner`` fails on them (BatchNorm size mismatch). For such bodies
    the features are permuted to NCHW (a view: no memory cost); other bodies are untouched, so only
    NHWC models depend on ``TimmBody``'s ``needs_pool`` and ``model`` attributes.
    """
    model = getattr(body, "model", None)
    if getattr(model, "output_fmt", "NCHW") != "NHWC":
        return
    if not isinstance(getattr(body, "needs_pool", None), bool):
        raise unsupported("fastai", "TimmBody.needs_pool (patched for timm models with NHWC features)",
                          f"the model body is a {type(body).__name__}")
    if body.needs_pool:
        body.__class__ = _channels_first_body_class()


@functools.cache
def _channels_first_body_class() -> type:
    try:
        from fastai.vision.learner import TimmBody
    except ImportError as error:
        raise unsupported("fastai", "fastai.vision.learner.TimmBody", error) from None

    def forward(self: Any, x: Any) -> Any:
        return self.model.forward_features(x).permute(0, 3, 1, 2)

    return type("ChannelsFirstTimmBody", (TimmBody,), {"forward": forward})


# --- optuna ----------------------------------------------------------------------------------------


class _DropRecords(logging.Filter):
    def __init__(self, *fragments: str):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


# Optuna's GP module logs this on every import when the optional greenlet package is missing; the
# sampler works the same without it (only the acquisition optimisation runs sequentially).
_OPTUNA_NOTES = {"optuna._gp.batched_lbfgsb": ("'greenlet' package is unavailable",)}

# Recent Ray (2.60 here) turns token authentication on for a local instance it starts and warns that it
# did: a secure default with nothing for a planner user to do. Its other warnings (e.g. that
# authentication is *off* on a cluster joined) pass.
_RAY_NOTES = {"ray._private.authentication.authentication_token_setup":
              ("Token authentication is enabled for this Ray cluster",)}


def _drop_notes(notes: dict[str, tuple[str, ...]]) -> None:
    for name, fragments in notes.items():
        logging.getLogger(name).addFilter(_DropRecords(*fragments))


@functools.cache
def quiet_optuna_notes() -> None:
    """Drop Optuna's log notes about missing optional packages (a user cannot act on them in a run)."""
    _drop_notes(_OPTUNA_NOTES)


@functools.cache
def quiet_ray_notes() -> None:
    """Drop Ray's note that a local instance it starts uses token authentication."""
    _drop_notes(_RAY_NOTES)


def gp_sampler(seed: int) -> Any:
    """Optuna's ``GPSampler`` without its per-parameter independent-sampling warning.

    ``warn_independent_sampling`` exists from Optuna 4.x on; 3.6's GPSampler has no such warning to
    turn off, so the option is passed only where it is accepted. Its ExperimentalWarning (3.6 to 4.x)
    is not shown either.
    """
    import optuna

    quiet_optuna_notes()
    sampler_class = getattr(optuna.samplers, "GPSampler", None)
    if sampler_class is None:
        raise unsupported("optuna", "optuna.samplers.GPSampler (--sampler gp)", "no such class")
    options: dict[str, Any] = {"seed": seed}
    if "warn_independent_sampling" in inspect.signature(sampler_class.__init__).parameters:
        options["warn_independent_sampling"] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return sampler_class(**options)
