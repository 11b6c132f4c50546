"""The training meters: the peak of a real training's steps, counted as the probe's cpu meter counts it."""

from __future__ import annotations

import pytest
import torch

from planner_trainer.memory import CpuRunMeter, live_tensor_bytes, make_meter


def train_steps(model: torch.nn.Module, meter, batches: int, batch: int = 8) -> None:
    optimizer = torch.optim.Adam(model.parameters())
    with meter.measuring(model):
        meter.phase_started("unfrozen_train")
        for _ in range(batches):
            x, y = torch.randn(batch, 64), torch.randint(0, 4, (batch,))
            meter.batch_started([x, y])
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            meter.batch_ended()


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 4))


def test_the_cpu_meter_counts_weights_grads_and_adam_state() -> None:
    net = model()
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    meter = make_meter("cpu", accum=1)
    train_steps(net, meter, batches=3)
    record = meter.record()
    assert record.meter == "cpu" and record.sampled_batches == 2  # two optimizer steps with accum 1
    # weights + their grads + Adam's two moments are all alive after the first step
    assert 4 * weights <= record.peak_bytes < 4 * weights + 2**20
    assert record.phase_peaks["unfrozen_train"] == record.peak_bytes


def test_the_cpu_meter_raises_out_of_memory_above_its_limit() -> None:
    meter = CpuRunMeter(accum=1, limit_bytes=100_000)
    with pytest.raises(torch.OutOfMemoryError, match="exceeds the limit"):
        train_steps(model(), meter, batches=2)


def test_live_tensor_bytes_sees_a_new_tensor() -> None:
    before = live_tensor_bytes()
    kept = torch.zeros(2**20, dtype=torch.uint8)
    assert live_tensor_bytes() - before >= kept.nbytes


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the cuda training meter needs a CUDA GPU")
def test_the_cuda_meter_reports_the_reserved_peak() -> None:
    net = model().cuda()
    meter = make_meter("cuda", accum=1)
    with meter.measuring(net):
        meter.phase_started("unfrozen_train")
        net(torch.randn(8, 64, device="cuda")).sum().backward()
    assert meter.record().peak_bytes >= torch.cuda.max_memory_allocated()
