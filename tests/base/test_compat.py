"""planner.base.compat: each private or version-dependent API, its fallback and its error."""

from __future__ import annotations

import logging
import warnings

import optuna
import pytest
import timm
import torch

from planner.base import compat
from planner.base.compat import CompatError
from planner.base.errors import UserError


def test_renamed_models_come_from_timms_public_table() -> None:
    renamed = compat.timm_renamed_models()
    assert renamed["convnext_large_in22k"] == "convnext_large.fb_in22k"  # a reference entry relies on it


def test_renamed_models_fall_back_to_the_private_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(timm.models, "get_deprecated_models")
    assert compat.timm_renamed_models()["convnext_large_in22k"] == "convnext_large.fb_in22k"


def test_renamed_models_without_either_name_the_tested_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(timm.models, "get_deprecated_models")
    monkeypatch.delattr(timm.models._registry, "_deprecated_models")
    with pytest.raises(CompatError) as raised:
        compat.timm_renamed_models()
    low, high = compat.TESTED["timm"]
    message = str(raised.value)
    assert f"timm {low} to {high}" in message and f"pip install 'timm>={low},<={high}'" in message
    assert isinstance(raised.value, UserError)  # the CLI prints it as one line, exit 2


def test_fake_tensor_mode_makes_fake_tensors() -> None:
    with compat.fake_tensor_mode(allow_non_fake_inputs=True):
        x = torch.empty(1000, 1000)
    assert type(x).__name__ == "FakeTensor" and x.shape == (1000, 1000)


def test_fake_tensor_mode_with_an_option_torch_lacks_is_one_clear_error() -> None:
    with pytest.raises(CompatError, match=r"FakeTensorMode\(no_such_option=...\).*torch \d+\.\d+\.\d+ to"):
        compat.fake_tensor_mode(no_such_option=True)


def test_fake_empty_like_is_empty_like_inside_the_mode() -> None:
    """The fast path against what it replaces (and what it falls back to): ``empty_like`` in the mode."""
    mode = compat.fake_tensor_mode(allow_non_fake_inputs=True)
    for meta in (torch.empty(3, 4, device="meta"), torch.empty(4, 6, dtype=torch.float16, device="meta")[:, ::2]):
        ours = compat.fake_empty_like(mode, meta)
        with mode:
            theirs = torch.empty_like(meta, device="cpu")
        assert type(ours).__name__ == "FakeTensor" and ours.fake_mode is mode and ours.device.type == "cpu"
        assert (ours.shape, ours.stride(), ours.dtype) == (theirs.shape, theirs.stride(), theirs.dtype)
        assert ours.untyped_storage().nbytes() == theirs.untyped_storage().nbytes()
        assert compat.fake_empty_like(mode, meta).untyped_storage() is not ours.untyped_storage()


def tiny_swin_body():
    from fastai.vision.learner import TimmBody

    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0, img_size=32,
                              window_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 1))
    return TimmBody(model, pretrained=False)


def test_swin_body_hands_channels_first_features_to_fastais_head() -> None:
    body = tiny_swin_body().eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = body(images)
        compat.channels_first_timm_body(body)
        after = body(images)
    assert before.shape == (2, 4, 4, 32)  # NHWC: what fastai's pooling head cannot take
    assert after.shape == (2, 32, 4, 4)
    assert torch.equal(after, before.permute(0, 3, 1, 2))


def test_channels_first_body_leaves_nchw_models_alone() -> None:
    from fastai.vision.learner import TimmBody

    body = TimmBody(timm.create_model("resnet10t", pretrained=False, num_classes=0), pretrained=False)
    compat.channels_first_timm_body(body)
    assert type(body) is TimmBody


def test_channels_first_body_without_needs_pool_is_one_clear_error() -> None:
    body = tiny_swin_body()
    del body.needs_pool
    with pytest.raises(CompatError, match=r"TimmBody\.needs_pool.*fastai \d+\.\d+\.\d+ to"):
        compat.channels_first_timm_body(body)


def test_gp_sampler_warns_about_nothing() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sampler = compat.gp_sampler(0)
    assert isinstance(sampler, optuna.samplers.GPSampler)
    assert not caught, [str(w.message) for w in caught]


def test_gp_sampler_of_optuna_3_6_gets_no_warn_option(monkeypatch: pytest.MonkeyPatch) -> None:
    class GPSampler36:  # Optuna 3.6's signature: no warn_independent_sampling
        def __init__(self, *, seed=None, independent_sampler=None, n_startup_trials=10,
                     deterministic_objective=False):
            self.seed = seed

    monkeypatch.setattr(optuna.samplers, "GPSampler", GPSampler36)
    assert compat.gp_sampler(7).seed == 7


def test_optunas_note_about_a_missing_optional_package_is_dropped() -> None:
    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    compat.quiet_optuna_notes()
    logger, collect = logging.getLogger("optuna._gp.batched_lbfgsb"), Collect()
    logger.addHandler(collect)
    try:
        logger.warning("The 'greenlet' package is unavailable, falling back to sequential L-BFGS-B optimization.")
        logger.warning("something else")
    finally:
        logger.removeHandler(collect)
    assert collect.messages == ["something else"]


def test_torch_dispatch_mode_sees_every_op() -> None:
    class Count(compat.torch_dispatch_mode()):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    with Count() as count:
        torch.ones(3).mul(2)
    assert any("mul" in op for op in count.ops)


def test_tree_leaves_agrees_with_torchs_pytree() -> None:
    from torch.utils._pytree import tree_flatten

    tree = (torch.ones(1), [torch.zeros(2), {"a": 3, "b": (None,)}], "x")
    ours, torchs = compat.tree_leaves(tree), tree_flatten(tree)[0]
    assert len(ours) == len(torchs) == 5 and all(a is b for a, b in zip(ours, torchs, strict=True))
    assert compat.tree_leaves(torch.ones(1))[0].shape == (1,)


def test_end_cleanup_drops_the_last_batch_with_or_without_fastais_private_method() -> None:
    from fastai.learner import Learner

    class Stub:
        dl, xb, yb, pred, loss, loss_grad = "dl", ("x",), ("y",), "pred", "loss", "loss with its autograd graph"

    for learn in (Stub(), Learner.__new__(Learner)):
        for name, value in vars(Stub).items():
            if not name.startswith("_"):
                setattr(learn, name, value)
        compat.end_cleanup(learn)
        assert (learn.dl, learn.xb, learn.yb, learn.pred, learn.loss) == (None, (None,), (None,), None, None)
        assert learn.loss_grad is None  # fastai's _end_cleanup keeps it


def _python_meta_kernel(op: str) -> bool:
    """Whether ``op``'s active Meta kernel is a Python one (``torch._meta_registrations``), not C++
    (the dispatcher names a Python kernel's place as a ``.py`` file or, in torch 2.6, ``/dev/null``)."""
    table = torch._C._dispatch_dump(op)
    return any(line.startswith("Meta:") and ".cpp:" not in line for line in table.splitlines())


def test_native_meta_kernels_run_cpp_kernels_inside_and_restore_torchs_on_exit() -> None:
    import torch._meta_registrations  # what torch._dynamo imports: the Python kernels in front

    assert _python_meta_kernel("aten::add.Tensor")
    x = torch.empty(8, 3, 5, 5, dtype=torch.float16, device="meta")
    weight = torch.empty(3, device="meta")
    outside = torch.native_batch_norm(x, weight, weight, None, None, True, 0.1, 1e-5)
    with compat.native_meta_kernels():
        assert not _python_meta_kernel("aten::add.Tensor")  # torch's C++ kernel again
        inside = torch.native_batch_norm(x, weight, weight, None, None, True, 0.1, 1e-5)
        added = x + x
        # an op with no C++ meta kernel keeps its Python one
        assert _python_meta_kernel("aten::hardtanh")
        assert torch.nn.functional.hardtanh(x).shape == x.shape
    real = torch.native_batch_norm(torch.zeros(8, 3, 5, 5, dtype=torch.float16), torch.ones(3), torch.ones(3),
                                   None, None, True, 0.1, 1e-5)
    # the C++ kernel's outputs are what the real kernel returns (fp32 saved statistics for fp16 input)
    assert [(t.shape, t.dtype) for t in inside] == [(t.shape, t.dtype) for t in real]
    assert [t.shape for t in outside] == [t.shape for t in inside]
    assert (added.shape, added.dtype) == (x.shape, x.dtype)
    assert _python_meta_kernel("aten::add.Tensor")  # torch's own registrations are back
    with compat.native_meta_kernels():  # and can be taken down again; a block inside changes nothing
        with compat.native_meta_kernels():
            assert not _python_meta_kernel("aten::add.Tensor")
        assert not _python_meta_kernel("aten::add.Tensor")
    assert _python_meta_kernel("aten::add.Tensor")
