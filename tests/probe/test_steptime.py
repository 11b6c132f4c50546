"""Step-time arithmetic, the GPU table and the epoch arithmetic: pure functions with hand-checked numbers."""

import math
import re

import numpy as np
import pytest

from planner.base.errors import UserError
from planner.base.gpus import GPUS, MIB, find_gpu, get_gpu
from planner.base.plan import StepTimes
from planner.probe.epochtime import TTA_PASSES, default_sizes, entry_time, slowest, split_sizes, time_basis
from planner.probe.steptime import (
    StepCosts,
    TimeConstants,
    device_seconds,
    fit_constants,
    fit_flop_efficiency,
    step_seconds,
)

T4 = get_gpu("T4")
ONE = TimeConstants(tensor_efficiency=1, vector_efficiency=1, memory_efficiency=1, launch_seconds=1e-6,
                    step_seconds=0.0)


def test_each_kernel_takes_its_slowest_resource_and_the_host_must_launch_them_all():
    compute = [T4.tensor_flops * 2e-3, 0, 1, 1]  # 2 ms of tensor work
    memory = [0, 0, T4.bandwidth * 3e-3, 2]  # 3 ms of traffic, twice
    tiny = [0, T4.vector_flops * 1e-6, 1, 10]  # ten 1 µs kernels
    costs = StepCosts.from_list([compute, memory, tiny])
    assert step_seconds(costs, T4, ONE) == pytest.approx(2e-3 + 2 * 3e-3 + 10e-6)  # the GPU is the bottleneck
    half = TimeConstants(0.5, 1, 1, 1e-6, 0.01)
    assert step_seconds(costs, T4, half) == pytest.approx(4e-3 + 2 * 3e-3 + 10e-6 + 0.01)
    assert step_seconds(costs, T4, half, per_step=False) == pytest.approx(4e-3 + 2 * 3e-3 + 10e-6)
    slow_host = TimeConstants(1, 1, 1, 1e-3, 0.0)  # 13 launches of 1 ms outlast 8 ms of GPU work
    assert step_seconds(costs, T4, slow_host) == pytest.approx(13e-3)
    assert device_seconds(costs, T4, slow_host) == pytest.approx(2e-3 + 2 * 3e-3 + 10e-6)  # the card's work alone


def test_fit_recovers_constants_that_generated_the_times():
    rng = np.random.default_rng(0)
    truth = TimeConstants(0.55, 0.4, 0.7, 8e-6, 2e-3)
    steps = [StepCosts.from_list(np.column_stack([rng.uniform(0, 1e11, 30) * (rng.random(30) < 0.4),
                                                  rng.uniform(0, 1e8, 30), rng.uniform(1e5, 3e8, 30),
                                                  rng.integers(1, 50, 30)])) for _ in range(40)]
    seconds = [step_seconds(step, T4, truth) for step in steps]
    fitted = fit_constants(steps, seconds, T4, start=TimeConstants(0.3, 0.2, 0.3, 3e-6, 5e-4))
    predicted = [step_seconds(step, T4, fitted) for step in steps]
    errors = sorted(abs(p / s - 1) for p, s in zip(predicted, seconds, strict=True))
    assert errors[len(errors) // 2] < 0.01 and errors[-1] < 0.05


def test_naive_efficiency_is_the_median_ratio():
    flops = [T4.tensor_flops * 0.1, T4.tensor_flops * 0.2, T4.tensor_flops * 0.3]
    seconds = [1.0, 1.0, 1.0]  # efficiencies 0.1, 0.2, 0.3
    assert fit_flop_efficiency(flops, seconds, T4) == pytest.approx(0.2)


def test_gpu_table_has_sources_sane_figures_and_finds_cards_by_any_name():
    assert {"T4", "P100", "V100-16G", "V100-32G", "A10G", "A10", "L4", "L40S", "RTX 3090", "RTX 4090", "A100-40G",
            "A100-80G", "H100"} <= {gpu.name for gpu in GPUS}
    for gpu in GPUS:
        assert gpu.sources and all(source.startswith("https://") for source in gpu.sources)
        assert 0 < gpu.budget_bytes <= gpu.memory_mib * MIB
        assert gpu.vector_flops < gpu.tensor_flops and gpu.bandwidth > 1e11
    assert get_gpu("P100").budget_bytes == 16_280 * MIB  # Kaggle's
    assert 14.7 * 2**30 < get_gpu("t4").budget_bytes < 14.8 * 2**30
    assert find_gpu("Tesla T4") is T4 and find_gpu("NVIDIA A100-SXM4-80GB") is get_gpu("a100_80g")
    assert find_gpu("NVIDIA GeForce RTX 3090") is get_gpu("rtx3090") and find_gpu("Voodoo 2") is None
    with pytest.raises(UserError, match="known cards are T4, P100"):
        get_gpu("T5")


def test_the_names_cuda_reports_for_pcie_cards_find_them():
    assert find_gpu("Tesla V100-PCIE-16GB") is get_gpu("V100-16G")
    assert find_gpu("Tesla V100-PCIE-32GB") is get_gpu("V100-32G")
    assert find_gpu("NVIDIA A100-PCIE-40GB") is get_gpu("A100")
    assert find_gpu("NVIDIA A100-SXM4-80GB MIG 1g.10gb") is None  # a slice is not the whole card


def test_a_card_with_ecc_gddr6_plans_for_what_torch_reports_not_nvidia_smi():
    # nvidia-smi shows 23,028 / 23,034 MiB; torch reports 22.06 / 22.03 GiB: a plan must stay under the latter
    for name, torch_total_gib in (("A10G", 22.06), ("L4", 22.03), ("T4", 14.76)):
        gpu = get_gpu(name)
        assert gpu.budget_bytes < gpu.memory_mib * MIB and gpu.budget_bytes / 2**30 <= torch_total_gib + 0.005


@pytest.mark.parametrize(("name", "message"), [
    ("L40", "did you mean L40S or L4?"),
    ("tesal t4", "did you mean T4?"),
    ("A100 1g.10gb", "a MIG slice has its own share of the card's memory and speed: give the memory nvidia-smi"),
    ("Voodoo 2", "unknown GPU 'Voodoo 2': known cards are T4"),
])
def test_an_unknown_card_is_answered_with_the_closest_names_and_the_way_round(name, message):
    with pytest.raises(UserError, match=re.escape(message)) as refused:
        get_gpu(name)
    assert "--gpu-mem" in str(refused.value) and "\n" not in str(refused.value)


def test_epoch_and_run_time_count_fastai_loops():
    basis = time_basis(split_sizes(1000, 300, 0.2, "test"), "T4", epochs=3)
    assert (basis.n_train, basis.n_valid, basis.n_test) == (800, 200, 300)
    times = StepTimes(gpu="T4", forward_backward=0.3, optimizer_step=0.05, eval_forward=0.1)
    got = entry_time({"device": times}, micro_batch=32, accum=2, basis=basis)
    micro, steps = 800 // 32, 800 // 64  # 25 micro-batches, 12 optimizer steps
    valid = math.ceil(200 / 32) * 0.1
    assert got.train_seconds_per_epoch == pytest.approx(micro * 0.3 + steps * 0.05)
    assert got.epoch_seconds == pytest.approx(micro * 0.3 + steps * 0.05 + valid)
    assert got.frozen_epoch_seconds == pytest.approx(micro * 0.1 + valid)
    assert got.tta_seconds == pytest.approx(TTA_PASSES * (7 + 10) * 0.1)
    assert got.total_seconds == pytest.approx(got.frozen_epoch_seconds + 3 * got.epoch_seconds + got.tta_seconds,
                                              abs=0.1)
    assert default_sizes().n_train + default_sizes().n_valid == 10_407
    assert (got.time_bound, got.bound_seconds) == ("device", {"device": got.total_seconds})


def test_each_pass_goes_at_its_slowest_bound_and_the_slowest_total_names_the_entry():
    basis = time_basis(split_sizes(1000, 300, 0.2, "test"), "H100", epochs=3)
    device = StepTimes(gpu="H100", forward_backward=0.3, optimizer_step=0.01, eval_forward=0.01)
    host = StepTimes(gpu="H100", forward_backward=0.1, optimizer_step=0.02, eval_forward=0.05)
    got = entry_time({"device": device, "host": host}, micro_batch=32, accum=2, basis=basis)
    alone = {name: entry_time({name: times}, 32, 2, basis) for name, times in (("device", device), ("host", host))}
    assert got.train_seconds_per_epoch == alone["device"].train_seconds_per_epoch  # the card's 25 × 0.3 s
    assert got.tta_seconds == alone["host"].tta_seconds  # the host's forward passes are the slower
    assert got.total_seconds > max(alone["device"].total_seconds, alone["host"].total_seconds)
    assert got.time_bound == "device" and got.bound_seconds == {"device": alone["device"].total_seconds,
                                                                "host": alone["host"].total_seconds}
    measured = entry_time({"measured": device}, 32, 2, basis, "measured")
    assert measured.time_bound is None and measured.bound_seconds == {}


def test_slowest_picks_the_longest_named_bound_and_keeps_new_names():
    assert slowest({"device": 2.0, "host": 3.0}) == ("host", 3.0)
    assert slowest({"device": 2.0, "host": 1.0, "loader": 5.0}) == ("loader", 5.0)
    assert slowest({"device": 1.0, "host": 1.0}) == ("device", 1.0)  # a tie: the first named
    with pytest.raises(ValueError, match="no bounds"):
        slowest({})


def test_step_times_between_probes_are_affine_in_the_micro_batch():
    from planner.probe.epochtime import step_times_at

    def times(b):
        return StepTimes(gpu="T4", forward_backward=0.01 + 0.002 * b, optimizer_step=0.05, eval_forward=0.001 * b)

    between = step_times_at([(8, times(8)), (32, times(32))], 16)
    assert between.forward_backward == pytest.approx(0.042) and between.optimizer_step == pytest.approx(0.05)
    alone = step_times_at([(8, times(8))], 16)
    assert alone.eval_forward == pytest.approx(0.016) and alone.optimizer_step == 0.05
