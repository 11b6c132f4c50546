"""Pure parts of the Ray backend: GPU shares for --pack, the (micro-batch, accum) pair for a card, and
the probe's per-budget pairs (a meter with a known memory curve: the search is real, the device is not)."""

from __future__ import annotations

import json
import random

import pytest
from run_data import plan_entry, write_plan

from planner.base.entries import single_entry
from planner.base.errors import UserError
from planner.base.plan import BudgetPair, MeasuredOn, ProbePoint, load_plan
from planner.probe.meters.base import DoesNotFit, ProbeMeter
from planner.probe.probe import probe_plan
from planner_trainer.backend import resolve_device
from planner_trainer.options import PredictOptions, RayOptions, RunOptions, ray_options_for
from planner_trainer.placement import RAY_RESOLUTION, pack_fraction, pair_for_memory, share_cap_fraction

GIB = 2**30
MIB = 2**20


def test_pack_fraction_keeps_the_plans_margin_inside_the_share() -> None:
    assert pack_fraction(int(0.45 * GIB), 0.1, GIB) == 0.5  # 0.45 / 0.9 = 0.5 exactly
    assert pack_fraction(7 * GIB, 0.05, 80 * GIB) == 0.0922  # 7 / 0.95 / 80 = 0.092105... rounded up
    assert pack_fraction(0, 0.05, 80 * GIB) == 1 / RAY_RESOLUTION  # never a zero request
    assert pack_fraction(100 * GIB, 0.05, 80 * GIB) == 1.0  # more than a card: a whole card
    assert pack_fraction(int(0.45 * GIB), 0.0, GIB) == 0.45
    for bad in [(-1, 0.1, GIB), (GIB, 1.0, GIB), (GIB, -0.1, GIB), (GIB, 0.1, 0)]:
        with pytest.raises(ValueError):
            pack_fraction(*bad)


def test_entries_whose_fractions_share_a_card_fit_it_with_the_margin() -> None:
    """Ray admits tasks on one GPU while their fractions sum to at most 1: then their peaks fit."""
    rng = random.Random(0)
    card, margin = 80 * GIB, 0.05
    for _ in range(2000):
        peaks = [rng.randint(1, 40 * GIB) for _ in range(rng.randint(1, 6))]
        units = [round(pack_fraction(peak, margin, card) * RAY_RESOLUTION) for peak in peaks]
        if sum(units) <= RAY_RESOLUTION:  # Ray's fixed-point check, in its units
            assert sum(peaks) <= (1 - margin) * card * (1 + 1e-9)
    # Two entries just over half a card each never share one.
    just_over = int(0.5 * (1 - margin) * card) + MIB
    assert 2 * round(pack_fraction(just_over, margin, card) * RAY_RESOLUTION) > RAY_RESOLUTION


def test_share_cap_leaves_the_context_out_of_the_allocators_fraction() -> None:
    assert share_cap_fraction(40 * GIB, 0.5 * GIB, 80 * GIB) == pytest.approx(39.5 / 80)
    assert share_cap_fraction(GIB, 2 * GIB, 80 * GIB) == 0.0
    assert share_cap_fraction(90 * GIB, 0, 80 * GIB) == 1.0


def with_pairs(*pairs: tuple[int, int, int, bool]):
    """A plan entry (default pair 4 × 2 for 16 GiB) with per-budget pairs (GiB, micro-batch, accum, fits)."""
    return plan_entry("resnet18", micro_batch=2, accum=4).model_copy(update={"per_budget": [
        BudgetPair(budget_bytes=gib * GIB, micro_batch=mb, accum=accum, predicted_peak_bytes=gib * GIB // 2,
                   fits=fits) for gib, mb, accum, fits in pairs]})


def test_a_task_trains_with_the_pair_of_the_largest_budget_its_card_holds() -> None:
    entry = with_pairs((16, 2, 4, True), (24, 4, 2, True), (80, 8, 1, True))
    assert pair_for_memory(entry, 80 * GIB).accum == 1
    assert pair_for_memory(entry, 79 * GIB).accum == 2  # an "80 GB" card of 79 GiB is not an 80 GiB budget
    assert pair_for_memory(entry, 24 * GIB).accum == 2
    assert pair_for_memory(entry, 40 * GIB).budget_bytes == 24 * GIB
    assert pair_for_memory(entry, 16 * GIB).accum == 4
    # Smaller than every budget, unknown (no CUDA), or no per-budget pairs: the plan's own pair.
    for memory in (12 * GIB, None):
        pair = pair_for_memory(entry, memory)
        assert (pair.accum, pair.micro_batch, pair.budget_bytes) == (4, 2, None)
    assert pair_for_memory(plan_entry("resnet18", micro_batch=2, accum=4), 80 * GIB).accum == 4
    # A budget whose search found nothing that fits is never picked.
    assert pair_for_memory(with_pairs((16, 2, 4, True), (24, 8, 1, False)), 24 * GIB).accum == 4


def test_plans_without_per_budget_pairs_still_load_and_bad_pairs_are_named(tmp_path) -> None:
    path = write_plan(tmp_path / "plan.json", [plan_entry("resnet18")])
    data = json.loads(path.read_text())
    del data["entries"][0]["per_budget"]  # a plan written before the field existed
    path.write_text(json.dumps(data))
    assert load_plan(path).entries[0].per_budget == []
    data["entries"][0]["per_budget"] = [{"budget_bytes": GIB, "micro_batch": 4, "accum": 4,
                                         "predicted_peak_bytes": 1, "fits": True}]
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"entries\.0\.per_budget\.0: accum × micro_batch"):
        load_plan(path)


class CurveMeter(ProbeMeter):
    """Peaks of a known affine curve, out of memory above the cap it is given (like the cuda meter);
    counts every measurement."""

    def __init__(self, fixed: int, per_sample: int) -> None:
        super().__init__()
        self.fixed, self.per_sample = fixed, per_sample
        self.calls: list[tuple[int, int]] = []

    def measured_on(self) -> MeasuredOn:
        return MeasuredOn(device="cuda", precision="fp16", torch="t", timm="t", fastai="f")

    def measure(self, entry, micro_batch: int, cap_bytes: int | None = None) -> ProbePoint:
        self.calls.append((cap_bytes, micro_batch))
        peak = self.fixed + self.per_sample * micro_batch
        if cap_bytes is not None and peak > cap_bytes:
            raise DoesNotFit(micro_batch, 0.0)
        return ProbePoint(micro_batch=micro_batch, peak_bytes=peak, forward_backward_bytes=peak, step_bytes=0,
                          seconds=0.0)

    def has_batchnorm(self, entry) -> bool:
        return True


def test_probe_plans_a_pair_per_budget_reusing_the_entrys_probes() -> None:
    meter = CurveMeter(fixed=4 * GIB, per_sample=GIB // 2)  # peak(b) = 4 + b/2 GiB
    plan = probe_plan(single_entry("resnet18", 224), meter, budget_bytes=16 * GIB, effective_batch_size=64,
                      margin=0.05, more_budgets=[80 * GIB, 24 * GIB])
    (entry,) = plan.entries
    assert plan.budget_bytes == 16 * GIB and (entry.accum, entry.micro_batch) == (4, 16)  # 12 GiB ≤ 15.2
    pairs = {pair.budget_bytes // GIB: (pair.accum, pair.micro_batch, pair.fits) for pair in entry.per_budget}
    assert pairs == {16: (4, 16, True), 24: (2, 32, True), 80: (1, 64, True)}  # limits 15.2, 22.8, 76 GiB
    # Two opening probes and a confirmation for 16 GiB; each larger budget starts from that curve and
    # confirms one new micro-batch under its own cap: no micro-batch is measured twice.
    assert meter.calls == [(16 * GIB, 2), (16 * GIB, 8), (16 * GIB, 16), (24 * GIB, 32), (80 * GIB, 64)]
    assert [point.micro_batch for point in entry.probes] == [2, 8, 16, 32, 64]


def test_ray_options_refuse_what_ray_cannot_schedule() -> None:
    assert RayOptions(gpus_per_entry=0.25).gpus_per_entry == 0.25
    assert RayOptions(gpus_per_entry=2).gpus_per_entry == 2
    with pytest.raises(UserError, match="whole number"):
        RayOptions(gpus_per_entry=1.5)
    with pytest.raises(UserError, match="--pack"):
        RayOptions(pack=True, gpus_per_entry=0.5)
    with pytest.raises(UserError, match="--max-retries"):
        RayOptions(max_retries=-1)


def test_ray_flags_are_refused_for_the_local_backend() -> None:
    ray = RayOptions(gpus_per_entry=0.5)
    assert ray_options_for("ray", ray) is ray
    assert ray_options_for("local", RayOptions(max_retries=5)) is None
    for retries in (-1, 2**31, 10**20):  # Ray's core worker holds the count in a C int
        with pytest.raises(UserError, match=rf"--max-retries {retries} must be between 0 and 2147483647, e.g. 2"):
            RayOptions(max_retries=retries)
    for flags in ({"gpus_per_entry": 0.5}, {"pack": True}, {"address": "auto"}):
        with pytest.raises(UserError, match="apply to --backend ray"):
            ray_options_for("local", RayOptions(**flags))


def test_run_and_predict_options_check_themselves() -> None:
    for bad, message in [({"epochs": 0}, "--epochs 0 must be at least 1"), ({"lr": 0}, "--lr 0"),
                         ({"lr": float("inf")}, "--lr inf must be a finite number"), ({"lr": float("nan")}, "--lr nan"),
                         ({"valid_pct": 1.0}, "--valid-pct 1.0"), ({"device": "tpu"}, "--device 'tpu'")]:
        with pytest.raises(UserError, match=message):
            RunOptions(**bad)
    with pytest.raises(UserError, match="--batch-size 0 must be at least 1"):
        PredictOptions(batch_size=0)
    with pytest.raises(UserError, match="--device 'gpu' must be auto, cuda or cpu"):
        PredictOptions(device="gpu")


def test_both_backends_resolve_the_device_by_one_rule() -> None:
    assert resolve_device("auto", cuda_available=False) == "cpu"  # e.g. a Ray task that got no GPU
    assert resolve_device("auto", cuda_available=True) == "cuda"
    assert resolve_device("cpu", cuda_available=True) == "cpu"
    with pytest.raises(UserError, match="no CUDA device is available to the worker on w1"):
        resolve_device("cuda", cuda_available=False, where="to the worker on w1")
    with pytest.raises(UserError, match="CPU training only"):
        resolve_device("auto", cuda_available=True, cpu_memory_limit=2**20)
