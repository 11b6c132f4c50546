"""Real training steps of tiny timm models on the CPU, measured by the cpu and estimate meters."""

import dataclasses

import pytest

from planner.base.entries import single_entry
from planner.base.plan import ItemTransform
from planner.probe.meters import PROBE_METERS, DoesNotFit, get_meter
from planner.probe.meters.device_model import DeviceModel
from planner.probe.probe import probe_plan
from planner.probe.search import candidate_micro_batches

MIB = 2**20
# The estimate meter runs the same step on fake tensors; in fp32 without the CUDA model it must
# agree with the real CPU step to within this fraction (measured here: within 2 %).
ESTIMATE_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def resnet18_64():
    return single_entry("resnet18", 64)[0]


def test_registry_holds_the_three_meters():
    assert PROBE_METERS.names() == ["cpu", "cuda", "estimate"]


def test_cpu_meter_choice_fits_the_budget_and_the_next_divisor_does_not(resnet18_64):
    budget = 300 * MIB
    meter = get_meter("cpu")
    plan = probe_plan([resnet18_64], meter, budget_bytes=budget, effective_batch_size=64, margin=0.0)
    (entry,) = plan.entries
    assert entry.fits and entry.accum * entry.micro_batch == 64
    candidates = candidate_micro_batches(64, has_batchnorm=True)
    larger = candidates[candidates.index(entry.micro_batch) + 1]
    chosen = meter.measure(resnet18_64, entry.micro_batch)
    above = meter.measure(resnet18_64, larger)
    meter.close()
    assert chosen.peak_bytes <= budget < above.peak_bytes
    assert entry.predicted_peak_bytes <= budget
    assert len(entry.probes) < len(candidates)
    # Two optimizer steps ran: the step phase holds Adam's state (2 × the weights of resnet18).
    assert chosen.step_bytes > 3 * 11_000_000 * 4


def test_estimate_agrees_with_cpu_on_the_same_tiny_model(resnet18_64):
    cpu = get_meter("cpu")
    estimate = get_meter("estimate", precision="fp32", device=DeviceModel.raw())
    convnext = single_entry("convnext_atto", 64)[0]
    for entry in (resnet18_64, convnext):
        for micro_batch in (4, 32):
            real = cpu.measure(entry, micro_batch).peak_bytes
            fake = estimate.measure(entry, micro_batch).peak_bytes
            assert abs(fake - real) <= ESTIMATE_TOLERANCE * real, (entry.name, micro_batch, real, fake)


def test_estimate_in_fp16_adds_the_device_model(resnet18_64):
    raw = get_meter("estimate", precision="fp16", device=DeviceModel.raw())
    card = get_meter("estimate")
    raw_peak = raw.measure(resnet18_64, 16).peak_bytes
    # the allocator's segments hold at least the live bytes; the overhead comes on top
    assert card.measure(resnet18_64, 16).peak_bytes >= raw_peak + DeviceModel().overhead_bytes


def test_cpu_meter_out_of_memory_is_released_and_searched_around(resnet18_64):
    limit = 260 * MIB  # the tracker raises torch.OutOfMemoryError above this, as a full card would
    meter = get_meter("cpu", emulate_cap=True)
    with pytest.raises(DoesNotFit):
        meter.measure(resnet18_64, 64, cap_bytes=limit)
    plan = probe_plan([resnet18_64], meter, budget_bytes=limit, effective_batch_size=64, margin=0.0)
    meter.close()
    (entry,) = plan.entries
    assert entry.fits and entry.micro_batch == 32
    assert entry.predicted_peak_bytes <= limit


def test_estimate_meter_times_the_same_fake_step_on_a_named_card():
    from planner.base.gpus import get_gpu

    entry = single_entry("resnet18", 224)[0]  # large enough for the T4's GPU, not its host, to set the pace
    untimed = get_meter("estimate").measure(entry, 32)
    t4 = get_meter("estimate", gpu=get_gpu("T4")).measure(entry, 32)
    h100 = get_meter("estimate", gpu=get_gpu("H100")).measure(entry, 32)
    assert untimed.predicted_times is None
    assert t4.peak_bytes == untimed.peak_bytes  # the counter rides along without changing the memory
    assert t4.predicted_times.gpu == "T4" and h100.predicted_times.gpu == "H100"
    for part in ("forward_backward", "optimizer_step", "eval_forward"):  # the card's work: faster on the H100
        assert getattr(h100.predicted_times, part) < getattr(t4.predicted_times, part)
    assert h100.host_work == t4.host_work and untimed.host_work is None  # the host's work does not depend on the card
    assert t4.predicted_times.eval_forward < t4.predicted_times.forward_backward


def test_estimate_remembers_a_probe_of_the_same_architecture_size_and_micro_batch(resnet18_64):
    meter = get_meter("estimate")
    first = meter.measure(resnet18_64, 8)
    squished = single_entry("resnet18", 64, ItemTransform(resize=96, method="squish"))[0]
    again = meter.measure(squished, 8)  # the fake step does not see the item transform
    meter.close()
    assert again.peak_bytes == first.peak_bytes and again.seconds == 0.0


def test_estimate_with_gradient_checkpointing_needs_less():
    meter = get_meter("estimate", device=DeviceModel(overhead_bytes=0))
    plain = single_entry("convnext_atto", 128)[0]
    checkpointed = dataclasses.replace(plain, grad_checkpointing=True)
    plain_peak = meter.measure(plain, 16).forward_backward_bytes
    checkpointed_peak = meter.measure(checkpointed, 16).forward_backward_bytes
    meter.close()
    assert checkpointed_peak < 0.8 * plain_peak


def test_the_estimate_proposes_and_the_cpu_meter_confirms_with_fewer_probes(resnet18_64):
    """The estimate meter's fake steps (fp32, no device model: the cpu meter's units) give each entry's
    curve, so the real meter probes the proposed micro-batch (and the next larger one near the limit)
    instead of opening with two probes: the same plan with fewer real probes."""
    budget = 300 * MIB
    alone, proposed = get_meter("cpu"), get_meter("cpu")
    proposer = get_meter("estimate", precision="fp32", device=DeviceModel.raw())
    plain = probe_plan([resnet18_64], alone, budget_bytes=budget, effective_batch_size=64, margin=0.0)
    helped = probe_plan([resnet18_64], proposed, budget_bytes=budget, effective_batch_size=64, margin=0.0,
                        proposer=proposer)
    for meter in (alone, proposed, proposer):
        meter.close()
    (before,), (after,) = plain.entries, helped.entries
    assert (after.micro_batch, after.fits) == (before.micro_batch, before.fits)
    assert len(after.probes) < len(before.probes)
    assert after.predicted_peak_bytes <= budget
