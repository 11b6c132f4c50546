"""The estimating core on real timm models (meta tensors): steady state, phases, riders, CUDA kernels."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.published.recipe import benchmark_step, parameter_count
from planner.base.tracker import ALLOC, StorageTracker
from planner.probe.meters.cuda_autocast import cuda_autocast
from planner.probe.meters.cuda_kernels import cuda_kernels, sdpa_backend
from planner.probe.meters.device_model import DeviceModel
from planner.probe.meters.phases import PHASE_FORWARD_BACKWARD, PHASE_STEP


@pytest.fixture(scope="module")
def resnet_step():
    return benchmark_step("resnet10t")


class OpCounter(TorchDispatchMode):
    """What a FLOP or byte counter riding along would see: every op of the step."""

    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def test_a_step_starts_from_the_steady_state_and_lets_a_counter_ride_along(resnet_step):
    model = resnet_step.model
    counter, phases = OpCounter(), []
    trace = resnet_step.run(4, (32, 32), modes=[counter], on_phase=phases.append)
    weights = sum(p.numel() * 4 for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    setup = sum(nbytes for kind, _key, nbytes in trace.setup if kind == ALLOC)
    # weights, buffers, gradients and SGD's momentum exist before the step, as from step 2 of training
    assert setup == 3 * weights + buffers
    assert phases == [PHASE_FORWARD_BACKWARD, PHASE_STEP]
    assert counter.ops > 100
    assert trace.phase_peaks[PHASE_FORWARD_BACKWARD] > setup
    assert parameter_count(model) == weights // 4


def test_peaks_grow_with_the_batch_and_the_allocator_holds_at_least_the_live_bytes(resnet_step):
    small, large = (DeviceModel(overhead_bytes=0).peaks(resnet_step.run(b, (64, 64))) for b in (4, 32))
    raw = DeviceModel.raw().peaks(resnet_step.run(32, (64, 64)))
    assert large.card_bytes > small.card_bytes
    assert large.card_bytes >= raw.card_bytes
    assert large.reserved_bytes >= large.card_bytes  # segments in use never exceed all segments


def test_sdpa_picks_cudas_kernel():
    with FakeTensorMode():
        q = torch.empty(2, 4, 64, 64, dtype=torch.float16, requires_grad=True)
        mask = torch.empty(2, 4, 64, 64, dtype=torch.float16)
        assert sdpa_backend(q, q, q, None) == "flash"
        assert sdpa_backend(q, q, q, mask) == "efficient"
        assert sdpa_backend(q, q, q, None, capability=(7, 5)) == "efficient"  # T4: no flash attention
        odd = torch.empty(2, 4, 64, 20, dtype=torch.float16)
        assert sdpa_backend(odd, odd, odd, mask) == "math"


def forward_bytes(attention, length=512, heads=2, dim=16) -> int:
    with FakeTensorMode():
        q, k, v = (torch.empty(2, heads, length, dim, requires_grad=True) for _ in range(3))
        tracker = StorageTracker()
        tracker.track([q, k, v])
        before = tracker.live_bytes
        with tracker, cuda_autocast(cuda_kernels()):
            out = attention(q, k, v)
        assert out is not None
        return tracker.live_bytes - before


def test_fused_attention_keeps_o_n_per_head_not_the_n_by_n_matrix():
    b, h, n, d = 2, 2, 512, 16
    fused = forward_bytes(torch.nn.functional.scaled_dot_product_attention)
    # fp16 copies of q, k, v and the output (2 bytes each), the fp32 log-sum-exp, flash's RNG state
    assert fused == 4 * b * h * n * d * 2 + b * h * n * 4 + 16
    explicit = forward_bytes(lambda q, k, v: (q @ k.transpose(-2, -1)).softmax(-1) @ v)
    assert explicit > 6 * b * h * n * n


def test_cuda_dropout_saves_a_one_byte_mask():
    with FakeTensorMode():
        x = torch.empty(1024, 1024, requires_grad=True)
        tracker = StorageTracker()
        tracker.track([x])
        with tracker, cuda_autocast(cuda_kernels()):
            y = torch.nn.functional.dropout(x, 0.1, training=True)
        assert y is not None
        assert tracker.live_bytes - x.numel() * 4 == x.numel() * 4 + x.numel()  # output + bool mask


def test_which_attention_todays_timm_runs():
    import timm

    from benchmarks.published.recipe import attention_path, timm_attention

    def path(name: str, fused: bool | None = None) -> str:
        with torch.device("meta"):
            if fused is None:
                return attention_path(timm.create_model(name))
            with timm_attention(fused):
                return attention_path(timm.create_model(name))

    assert path("vit_tiny_patch16_224") == "fused"  # timm's default on torch >= 2
    assert path("vit_tiny_patch16_224", fused=False) == "explicit"  # the 2022 recipe
    assert path("swin_tiny_patch4_window7_224") == "explicit"  # Swin's fused path is experimental in timm
    assert path("resnet18") == "none"


@pytest.mark.parametrize("recipe", ["fastai Adam, fp16 with a GradScaler", "timm benchmark, SGD Nesterov"])
def test_a_replayed_optimizer_step_counts_what_a_real_one_does(recipe):
    """The optimizer's temporaries, recorded from its first step (which also creates its state), replayed
    into a later step: the same allocations and frees in the same order, the same peaks, as running it."""
    from planner.base.entries import single_entry
    from planner.probe.meters.estimate import fastai_recipe
    from planner.probe.meters.fake_step import FakeStep

    if recipe.startswith("fastai"):
        step = FakeStep(fastai_recipe(single_entry("resnet10t", 32)[0], 10, "fp16"))
    else:
        step = benchmark_step("resnet10t")
    replayed = step.run(4, (32, 32))
    real = step.run(4, (32, 32), modes=[OpCounter()])  # a rider makes the optimizer run for real
    def sizes(events):
        return [(kind, nbytes) for kind, _key, nbytes in events]

    assert sizes(replayed.step) == sizes(real.step)
    assert (replayed.peak_bytes, replayed.phase_peaks) == (real.peak_bytes, real.phase_peaks)
    assert DeviceModel().peaks(replayed) == DeviceModel().peaks(real)
    assert len([event for event in real.step if event[0] == ALLOC]) > 100


def test_meta_and_fake_tensors_differ_only_in_batch_norms_saved_statistics():
    """The core's first version (torch's fake tensors) against today's (meta tensors), a convnet in the
    published recipe (CUDA's fp16 policy, SGD): the same allocations in the same order, except the
    statistics batch norm saves for an fp16 input, which torch's kernels for fake tensors make fp16
    and its real kernels (CPU and CUDA alike) fp32, as meta tensors do."""
    from planner.probe.meters.fake_step import FakeStep

    meta = benchmark_step("resnet10t")
    fake = FakeStep(meta.recipe, tensors="fake")
    meta_sizes, fake_sizes = ([nbytes for kind, _key, nbytes in step.run(8, (64, 64)).step if kind == ALLOC]
                              for step in (meta, fake))
    assert len(meta_sizes) == len(fake_sizes) > 100
    differ = [(m, f) for m, f in zip(meta_sizes, fake_sizes, strict=True) if m != f]
    channels = {m.num_features for m in meta.model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert differ and all(m == 2 * f and m // 4 in channels for m, f in differ)
    real = torch.native_batch_norm(torch.zeros(2, 3, 4, 4, dtype=torch.float16), torch.ones(3), torch.ones(3),
                                   None, None, True, 0.1, 1e-5)
    assert real[1].dtype == torch.float32
