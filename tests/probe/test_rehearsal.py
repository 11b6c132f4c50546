"""The probe rehearses a run: fastai's fine_tune in miniature, its phases in the run's order, until the
peak stops growing; on the CPU its peak is the peak `planner run` then measures."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from run_data import make_image_folder

from planner.base.entries import single_entry
from planner.base.recipe import build_learner, synthetic_dataloaders
from planner.base.tracker import StorageTracker
from planner.probe.meters import get_meter
from planner.probe.meters.fastai_steps import FLAT_BYTES, MAX_UNFROZEN_EPOCHS, Rehearsal, rehearsal_sizes, rehearse
from planner.probe.meters.phases import PHASE_FORWARD_BACKWARD, PHASE_FROZEN, PHASE_STEP, PHASE_TTA, PHASE_VALID


def test_the_rehearsal_meets_the_phases_in_the_runs_order(one_torch_thread) -> None:
    entry = single_entry("convnext_atto", 32)[0]
    n_batches, n_valid = rehearsal_sizes(4)
    dls = synthetic_dataloaders(entry.item, entry.size, 4, device="cpu", n_batches=n_batches, n_classes=3,
                                n_valid=n_valid)
    learn = build_learner(dls, entry.arch, effective_batch_size=4, pretrained=False, fp16=False)
    tracker = StorageTracker()
    tracker.track([*learn.model.parameters(), *learn.model.buffers()])
    seen: list[str] = []

    def enter(phase: str) -> None:
        seen.append(phase)
        tracker.set_phase(phase)

    rehearsal = Rehearsal(enter, lambda: tracker.peak_bytes)
    with tracker:
        rehearse(learn, rehearsal)

    order = [phase for phase, _ in itertools.groupby(seen)]
    assert order[:3] == [PHASE_FROZEN, PHASE_VALID, PHASE_FORWARD_BACKWARD]  # frozen epoch, then unfreezing
    assert order[-1] == PHASE_TTA and order[-2] == PHASE_VALID
    unfrozen = order[2:-1]
    epochs = len(rehearsal.epoch_growth)
    assert unfrozen.count(PHASE_VALID) == epochs  # every unfrozen epoch validates
    assert unfrozen.count(PHASE_STEP) == epochs * n_batches  # every micro-batch steps the optimizer
    # Unfreezing creates the whole model's optimizer state: the first unfrozen epoch grows the peak;
    # the rehearsal stops at the first epoch that adds nothing.
    assert rehearsal.epoch_growth[0] > FLAT_BYTES
    assert rehearsal.epoch_growth[-1] < FLAT_BYTES and 2 <= epochs <= MAX_UNFROZEN_EPOCHS
    # The validation pass ended with a partial batch of one image.
    assert len(learn.dls.valid_ds) == 4 + 1


def test_a_probe_point_says_which_phase_sets_the_peak(one_torch_thread) -> None:
    meter = get_meter("cpu")
    point = meter.measure(single_entry("resnet18", 32)[0], 4)
    meter.close()
    assert set(point.phase_peaks) >= {PHASE_FROZEN, PHASE_FORWARD_BACKWARD, PHASE_STEP, PHASE_VALID, PHASE_TTA}
    assert point.peak_bytes == max(point.phase_peaks.values()) == point.phase_peaks[point.peak_phase]
    assert point.peak_phase in (PHASE_FORWARD_BACKWARD, PHASE_STEP)  # unfrozen training, for resnet18 at 32 px
    assert point.epoch_growth_bytes[-1] < FLAT_BYTES


@pytest.mark.parametrize("arch", ["resnet18", "convnext_atto"])
def test_the_cpu_plan_holds_for_the_whole_run(arch: str, planner_cli, tmp_path: Path) -> None:
    """The target a GPU is to show for the cuda meter, on the CPU: the plan's predicted peak is never
    below the peak `planner run` measures (frozen and unfrozen epochs, validation, TTA), and at most
    5 % above it."""
    data = make_image_folder(tmp_path / "data", per_class=20)
    plan = tmp_path / "plan.json"
    probed = planner_cli("probe", "--arch", arch, "--size", "32", "--gpu-mem", "4G", "--device", "cpu",
                         "--effective-bs", "16", "--data", data, "-o", plan)
    assert probed.returncode == 0, probed.stderr
    ran = planner_cli("run", plan, "--data", data, "--out", tmp_path / "run", "--no-pretrained", "--epochs", "2",
                      "--device", "cpu")
    assert ran.returncode == 0, ran.stderr
    (planned,) = json.loads(plan.read_text())["entries"]
    (trained,) = json.loads((tmp_path / "run" / "run.json").read_text())["entries"].values()
    ratio = trained["memory"]["peak_bytes"] / planned["predicted_peak_bytes"]
    assert trained["micro_batch"] == planned["micro_batch"] == 16
    assert 0.95 <= ratio <= 1.0, ratio
    assert planned["peak_phase"] in (PHASE_FORWARD_BACKWARD, PHASE_STEP)
