"""Activation checkpointing as a planned option, and entries that do not fit (issue 12).

Real fastai steps on the CPU (cpu meter: live tensor bytes, fp32); budgets are set between peaks
measured in the test itself, so the cases hold whatever the exact byte counts of this torch are.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from run_data import plan_entry, write_plan

from planner.base.entries import single_entry
from planner.base.recipe import CheckpointingUnsupported, build_learner, set_grad_checkpointing, synthetic_dataloaders
from planner.probe.configuration import MIN_BATCHNORM_MICRO_BATCH, Option, choose, normalisation_floor, relative_cost
from planner.probe.meters.cpu import CpuMeter
from planner.probe.probe import probe_plan

MIB = 2**20


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def measure(meter: CpuMeter, arch: str, size: int, micro_batch: int, grad_checkpointing: bool) -> int:
    entry = dataclasses.replace(single_entry(arch, size)[0], grad_checkpointing=grad_checkpointing)
    return meter.measure(entry, micro_batch).peak_bytes


def checkpointing_on(model: torch.nn.Module) -> bool:
    """timm keeps the switch on the model or on its stages, depending on the family."""
    return any(getattr(module, "grad_checkpointing", False) for module in model.modules())


def test_rule_keeps_plain_when_it_fits_at_a_micro_batch_the_normalisation_accepts():
    plain = Option(micro_batch=16, grad_checkpointing=False, predicted_peak_bytes=10, fits=True)
    checkpointed = Option(micro_batch=64, grad_checkpointing=True, predicted_peak_bytes=8, fits=True)
    choice = choose([plain, checkpointed], floor=normalisation_floor(True, 64))
    assert choice.option == plain and "without checkpointing fits" in choice.reason


def test_rule_picks_the_fastest_fitting_option_otherwise():
    plain = Option(micro_batch=2, grad_checkpointing=False, predicted_peak_bytes=10, fits=True)
    checkpointed = Option(micro_batch=16, grad_checkpointing=True, predicted_peak_bytes=9, fits=True)
    choice = choose([plain, checkpointed], floor=normalisation_floor(True, 64))
    assert choice.option == checkpointed and "BatchNorm" in choice.reason
    assert relative_cost(16, True) < relative_cost(2, False)
    # measured step times decide when every option has them, over the cost model
    both_small = [plain, dataclasses.replace(checkpointed, micro_batch=2)]
    assert not choose(both_small, floor=8).option.grad_checkpointing  # model: recompute costs more
    timed = [dataclasses.replace(o, seconds_per_sample=t) for o, t in zip(both_small, (0.01, 0.005), strict=True)]
    choice = choose(timed, floor=8)
    assert choice.option.grad_checkpointing and "measured step times" in choice.reason
    # without BatchNorm in the body any micro-batch is fine
    assert choose([plain, checkpointed], floor=normalisation_floor(False, 64)).option == plain
    assert normalisation_floor(True, 4) == 4 and MIN_BATCHNORM_MICRO_BATCH == 8
    assert choose([dataclasses.replace(plain, fits=False)], floor=1).option is None


def test_checkpointing_is_switched_in_the_timm_body_and_refused_where_timm_has_none():
    from fastai.vision.learner import create_timm_model

    from planner.base.plan import ItemTransform

    dls = synthetic_dataloaders(ItemTransform(resize=32), (32, 32), 2, device="cpu", n_batches=1)
    learn = build_learner(dls, "convnext_atto", effective_batch_size=2, pretrained=False, fp16=False,
                          grad_checkpointing=True)
    assert checkpointing_on(learn.model)
    set_grad_checkpointing(learn.model, False)
    assert not checkpointing_on(learn.model)
    with torch.device("meta"):
        vgg, _ = create_timm_model("vgg11", 2, pretrained=False)
    with pytest.raises(CheckpointingUnsupported):
        set_grad_checkpointing(vgg, True)


@pytest.mark.slow
def test_batchnorm_model_prefers_checkpointing_at_a_larger_micro_batch():
    meter = CpuMeter()
    plain_8 = measure(meter, "resnet10t", 160, 8, False)
    checkpointed_8 = measure(meter, "resnet10t", 160, 8, True)
    assert checkpointed_8 < plain_8
    limit = (plain_8 + checkpointed_8) / 2  # 8 fits only with checkpointing
    budget = int(limit / 0.95)
    plan = probe_plan(single_entry("resnet10t", 160), meter, budget_bytes=budget, effective_batch_size=8)
    (entry,) = plan.entries
    assert entry.fits and entry.grad_checkpointing and entry.micro_batch == 8
    assert "BatchNorm" in entry.choice
    plain = next(a for a in entry.alternatives if not a.grad_checkpointing)
    assert plain.fits and plain.micro_batch < 8  # without it only a small micro-batch fits
    assert any(p.grad_checkpointing for p in entry.probes)
    meter.close()


@pytest.mark.slow
def test_only_checkpointing_fits_then_run_trains_it_under_the_budget(planner_cli, tmp_path, image_folder):
    meter = CpuMeter()
    plain_2 = measure(meter, "convnext_atto", 128, 2, False)
    checkpointed_2 = measure(meter, "convnext_atto", 128, 2, True)
    meter.close()
    assert checkpointed_2 < plain_2
    budget = int((plain_2 + checkpointed_2) / 2 / 0.95)  # nothing fits without checkpointing
    plan_path, run_dir = tmp_path / "plan.json", tmp_path / "run"
    probed = planner_cli("probe", "--gpu-mem", f"{budget}B", "--arch", "convnext_atto", "--size", "128",
                         "--device", "cpu", "--effective-bs", "2", "-o", plan_path)
    assert probed.returncode == 0, probed.stderr
    (entry,) = json.loads(plan_path.read_text())["entries"]
    assert entry["grad_checkpointing"] and entry["fits"] and entry["micro_batch"] == 2
    assert "no micro-batch fits without checkpointing" in entry["choice"]
    assert plain_2 > budget  # the same model without checkpointing measures over the card

    ran = planner_cli("run", plan_path, "--data", image_folder, "--out", run_dir, "--no-pretrained",
                      "--epochs", "1", "--device", "cpu")
    assert ran.returncode == 0, ran.stderr
    record = json.loads((run_dir / "run.json").read_text())["entries"][entry["name"]]
    assert record["status"] == "finished" and record["grad_checkpointing"]
    assert record["memory"]["peak_bytes"] < budget


@pytest.mark.slow
def test_run_skips_a_misfit_with_one_line_trains_the_rest_and_exits_3(planner_cli, tmp_path, image_folder):
    fits = [plan_entry("resnet18"), plan_entry("convnext_atto")]
    misfit = plan_entry("resnet10t").model_copy(update={"fits": False, "predicted_peak_bytes": 3 * 2**30,
                                                        "headroom_bytes": -2 * 2**30})
    plan_path, run_dir = write_plan(tmp_path / "plan.json", [*fits, misfit]), tmp_path / "run"
    ran = planner_cli("run", plan_path, "--data", image_folder, "--out", run_dir, "--no-pretrained",
                      "--epochs", "1", "--device", "cpu")
    assert ran.returncode == 3, ran.stderr
    assert f"skip {misfit.name}: does not fit a 1,024 MiB card" in (run_dir / "run.log").read_text()
    entries = json.loads((run_dir / "run.json").read_text())["entries"]
    assert entries[misfit.name]["status"] == "skipped" and "at least 3,413 MiB" in entries[misfit.name]["error"]
    assert all(entries[e.name]["status"] == "finished" for e in fits)
    assert sorted(p.name for p in (run_dir / "preds").iterdir()) == sorted(f"{e.name}.npz" for e in fits)
    tuned = planner_cli("tune-weights", run_dir, "--data", image_folder, "--trials", "5", "--folds", "2")
    assert tuned.returncode == 0, tuned.stderr
    weights = json.loads((run_dir / "weights.json").read_text())["weights"]
    assert sorted(weights) == sorted(e.name for e in fits)


@pytest.mark.slow
def test_the_estimate_meter_recomputes_under_the_emulated_autocast():
    """Checkpointing recomputes the forward in backward: under the emulated CUDA autocast it must see
    the same casts as the forward did (torch.utils.checkpoint refuses a recomputation that differs)."""
    from planner.probe.meters.estimate import EstimateMeter

    meter = EstimateMeter()
    entry = single_entry("vit_tiny_patch16_224", 224)[0]
    plain = meter.measure(entry, 4).peak_bytes
    checkpointed = meter.measure(dataclasses.replace(entry, grad_checkpointing=True), 4).peak_bytes
    meter.close()
    assert checkpointed < plain
