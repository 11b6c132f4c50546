"""The estimate meter replays a run's sequence, as the cpu and cuda meters rehearse it: the phases in the
run's order, the frozen phase's optimizer state on the head (and the body's norm layers fastai trains),
one allocator replay across phases, and the same phase setting the peak as the cpu meter measures (real
fake steps, tiny models)."""

from __future__ import annotations

import pytest
import torch
from fastai.torch_core import norm_bias_params

from planner.base.compat import native_meta_kernels
from planner.base.entries import single_entry
from planner.base.tracker import PHASE
from planner.probe.meters.cpu import CpuMeter
from planner.probe.meters.device_model import DeviceModel
from planner.probe.meters.estimate import EstimateMeter, fastai_recipe
from planner.probe.meters.fake_step import FakeStep
from planner.probe.meters.phases import (
    PHASE_FORWARD_BACKWARD,
    PHASE_FROZEN,
    PHASE_STEP,
    PHASE_TTA,
    PHASE_VALID,
    RUN_PHASES,
)

UNFROZEN_STEP = [PHASE_FORWARD_BACKWARD, PHASE_STEP]


@pytest.fixture(scope="module")
def convnext_step() -> FakeStep:
    (entry,) = single_entry("convnext_atto", 32)
    with native_meta_kernels():
        return FakeStep(fastai_recipe(entry, 10, "fp16"))


def _state_owners(optimizer) -> set[int]:
    return {id(parameter) for parameter, state in optimizer.state.items()
            if any(isinstance(value, torch.Tensor) for value in state.values())}


def test_the_sequence_runs_the_phases_in_the_runs_order(convnext_step: FakeStep) -> None:
    with native_meta_kernels():
        trace = convnext_step.run_sequence(4, (32, 32), 4, 1)
    entered = [name for kind, name, _ in trace.step if kind == PHASE]
    assert entered == [PHASE_FROZEN, PHASE_VALID, *UNFROZEN_STEP * 3, PHASE_VALID, PHASE_TTA]
    assert trace.whole_run and set(trace.phase_peaks) >= set(RUN_PHASES)
    assert convnext_step.optimizer is None and all(p.grad is None and p.requires_grad
                                                   for p in convnext_step.model.parameters())


def test_the_frozen_phase_holds_optimizer_state_for_the_head_only(convnext_step: FakeStep) -> None:
    owners: dict[str, set[int]] = {}
    trained: set[int] = set()

    def look(phase: str) -> None:
        owners.setdefault(phase, _state_owners(convnext_step.optimizer))
        if phase == PHASE_TTA:
            trained.update(id(p) for p in convnext_step.model.parameters() if p.grad is not None)

    with native_meta_kernels():
        convnext_step.run_sequence(4, (32, 32), 4, 1, on_phase=look)
    model = convnext_step.model
    head = {id(p) for p in model[1].parameters()}
    body_norms = {id(p) for p in norm_bias_params(model[0], with_bias=False)}  # fastai's train_bn keeps them training
    assert head <= owners[PHASE_VALID] <= head | body_norms  # after the frozen step (a norm the body skips: none)
    assert owners[PHASE_STEP] == set()  # unfreezing cleared it; the first unfrozen step creates it all
    assert owners[PHASE_TTA] == trained and len(trained) > len(owners[PHASE_VALID])  # what the forward pass uses


def test_one_replay_runs_across_the_sequence(convnext_step: FakeStep) -> None:
    """Segments are cached from phase to phase: the reserved peak only grows in the run's order, and the
    unfrozen phases reserve more than the frozen one (the optimizer state of the whole model)."""
    with native_meta_kernels():
        trace = convnext_step.run_sequence(8, (32, 32), 8, 1)
    model = DeviceModel(allocator="reserved", overhead_bytes=0)
    peaks = model.peaks(trace)
    reserved = [peaks.phase_bytes[name] for name in (PHASE_FROZEN, PHASE_FORWARD_BACKWARD, PHASE_STEP, PHASE_VALID,
                                                     PHASE_TTA)]
    assert reserved == sorted(reserved) and reserved[0] < reserved[-1] == peaks.reserved_bytes == peaks.card_bytes


def test_the_estimate_names_the_phase_the_cpu_meter_measures_as_the_peak() -> None:
    (entry,) = single_entry("convnext_atto", 64)
    estimate = EstimateMeter(precision="fp32", device=DeviceModel.raw())
    cpu = CpuMeter()
    try:
        estimated, measured = estimate.measure(entry, 8), cpu.measure(entry, 8)
    finally:
        cpu.close()
        estimate.close()
    assert list(estimated.phase_peaks) == list(RUN_PHASES)
    assert estimated.peak_phase == measured.peak_phase == PHASE_FORWARD_BACKWARD
    for name in (PHASE_FORWARD_BACKWARD, PHASE_STEP, PHASE_VALID, PHASE_TTA):  # frozen: the cpu meter has batches
        assert estimated.phase_peaks[name] == pytest.approx(measured.phase_peaks[name], rel=0.03)
