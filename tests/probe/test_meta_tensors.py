"""Meta tensors that the model takes for CPU tensors: the device it sees, autocast, and autograd as on a real device."""

import torch

from planner.base.tracker import ALLOC, StorageTracker
from planner.probe.meters.cuda_autocast import CudaAutocast
from planner.probe.meters.meta_tensors import meta_tensors_as_cpu


class DeviceMinded(torch.nn.Module):
    """Model code that asks for its device: a position table made on it, and an fp32 block (as
    timm's EfficientViT writes it) that it skips on ``meta``."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x + torch.arange(x.shape[-1], device=x.device)
        low = self.linear(x)
        if x.device.type != "meta":
            with torch.autocast(device_type=x.device.type, enabled=False):
                return low, self.linear(x.float())
        return low, self.linear(x)


def test_the_model_sees_a_cpu_device_and_its_tensors_stay_on_meta() -> None:
    with torch.device("meta"):
        model = DeviceMinded()
    with CudaAutocast() as installed, meta_tensors_as_cpu():
        x = torch.empty(4, 8)
        assert x.device == torch.device("cpu") and x.is_cpu and not x.is_meta
        with installed.region():
            low, full = model(x)
        on_cpu = torch.zeros(3, device="cpu")
    assert low.dtype == torch.float16  # CUDA's policy met the meta tensors in the region
    assert full.dtype == torch.float32  # the block the model runs in fp32 on a real device ran in fp32
    assert {t.device.type for t in (x, low, full, on_cpu)} == {"meta"}  # nothing was computed


def test_autograd_on_meta_tensors_allocates_what_it_does_on_real_tensors() -> None:
    """An in-place op on a view (Swin V2's position MLP does this): autograd rebuilds the view's
    gradient with ``as_strided`` on a real device; the allocations must match the real CPU run's."""

    def allocations(device: str) -> tuple[list[int], torch.Tensor]:
        torch.manual_seed(0)
        layer = torch.nn.Linear(2, 16, device=device)
        x = torch.ones(5, 2, device=device)
        tracker = StorageTracker(record=True)
        tracker.track(list(layer.parameters()))
        tracker.events = []
        with tracker:
            out = layer(x).view(1, 5, 16).relu_()
            out.sum().backward()
        return [nbytes for kind, _key, nbytes in tracker.events if kind == ALLOC], layer.weight.grad

    real, real_grad = allocations("cpu")
    with meta_tensors_as_cpu():
        meta, meta_grad = allocations("cpu")  # "cpu" as model code names it: made on meta
    assert (real_grad.device.type, meta_grad.device.type) == ("cpu", "meta")
    assert meta == real and len(real) > 5
