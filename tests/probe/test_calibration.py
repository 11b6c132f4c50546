"""A device model per stack and learning from GPU measurements, on the H100 session's recorded points.

Fixtures are real measurements: ``benchmarks/results/gpu_h100/pairs_published.jsonl`` (the published
recipe on an H100, torch 2.11, with the fake step's replay of each point) and ``pairs_plan.jsonl``
(the cuda meter's probes of the product plan there), written by ``python -m benchmarks.gpu.today_stack_fit``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from planner_process import REPO, run_planner

from benchmarks.gpu.today_stack_fit import compact_brackets
from benchmarks.published.runs import half_of
from planner.base.allocator import choose_allocator
from planner.base.entries import single_entry
from planner.base.errors import UserError
from planner.base.gpus import get_gpu
from planner.base.plan import AllocatorConfig
from planner.base.runfile import EntryRecord, MemoryRecord, RunFile, RunSettings, now
from planner.probe.command import make_plan
from planner.probe.meters import get_meter
from planner.probe.meters.brackets import BRACKETS_FILE, load_brackets
from planner.probe.meters.calibration import (
    DEVICES_FILE,
    Errors,
    append_pairs,
    calibrate,
    calibration_key,
    estimate_bytes,
    fit_constants,
    guard,
    load_calibrated,
    load_pairs,
    stack_model_for,
    stack_of,
    unsafe_count,
)
from planner.probe.meters.device_model import DeviceModel
from planner.probe.meters.stacks import PUBLISHED_2022, TODAY, Stack, built_in_model
from planner.probe.options import ProbeOptions
from planner.probe.recalibrate import calibrate_stacks, probe_pairs, run_pairs

H100 = REPO / "benchmarks" / "results" / "gpu_h100"
GIB = 2**30


@pytest.fixture(scope="module")
def published_pairs():
    return load_pairs(H100 / "pairs_published.jsonl")


@pytest.fixture(scope="module")
def brackets():
    return load_brackets()


def _half(pairs, half):
    return [pair for pair in pairs if half_of(pair.arch.removesuffix("+fused")) == half]


def test_the_shipped_brackets_are_the_published_checks_own(brackets) -> None:
    records = json.loads((REPO / "benchmarks" / "results" / "published_gpu.json").read_text())
    assert json.loads(BRACKETS_FILE.read_text()) == json.loads(json.dumps(compact_brackets(records)))
    assert len(brackets[0]) == 628


def test_the_published_check_keeps_its_2022_model_and_numbers(brackets) -> None:
    """The published brackets judge the fake step with the 2022 constants: 93.7 % exact, 4.3 % unsafe held out."""
    assert PUBLISHED_2022.device == DeviceModel()
    held_out = [b for b in brackets[0] if half_of(b.model) == "held_out"]
    assert len(held_out) == 301
    assert unsafe_count(PUBLISHED_2022.device, held_out, brackets[1]) == 13


def test_todays_constants_are_the_fit_on_the_calibration_half(published_pairs) -> None:
    calibration = _half(published_pairs, "calibration")
    assert len(calibration) == 11 and len(published_pairs) == 16
    assert fit_constants(calibration) == TODAY.device


def test_todays_model_is_safer_than_2022s_on_the_held_out_half(published_pairs) -> None:
    held_out = _half(published_pairs, "held_out")
    today, then = Errors.of(TODAY.device, held_out), Errors.of(PUBLISHED_2022.device, held_out)
    assert then.worst_under < -0.07  # 2022's constants: every held-out point under, by 8-12 %
    assert today.under_3 == 0.0 and today.worst_under > -0.03
    assert today.median < then.median


def test_the_refit_leaves_no_pair_under_by_more_than_the_tolerance(published_pairs) -> None:
    for replay in ("reserved", "caching", "flat"):
        device = fit_constants(published_pairs, replay)
        assert min(estimate_bytes(device, p) / p.measured_bytes - 1 for p in published_pairs) >= -0.03 - 1e-9


def _plan_pairs(*archs):
    return [p for p in load_pairs(H100 / "pairs_plan.jsonl") if p.arch in archs]


def test_pairs_that_ask_for_lower_constants_change_nothing_and_say_why(brackets) -> None:
    """The product plan's convnext and vit probes (small micro-batches included) pull the constants down;
    lowered, they would leave more published brackets unsafe: the refit keeps the constants and says so."""
    result = calibrate(_plan_pairs("convnext_large.fb_in22k", "vit_large_patch16_224"), *brackets)[0]
    assert result.device == TODAY.device
    assert "a refit only raises the constants" in result.held_back and "published brackets unsafe" in result.held_back
    lowered = replace(TODAY.device, reserved_factor=1.05, overhead_bytes=0)
    assert guard(lowered, TODAY.device, *brackets) is not None
    assert unsafe_count(lowered, *brackets) > unsafe_count(TODAY.device, *brackets)


def test_pairs_the_estimate_is_under_raise_the_constants_and_no_more_brackets_turn_unsafe(brackets) -> None:
    """swin_large at micro-batch 8 measured 8 % over today's estimate: the refit raises the constants until
    no pair is under by more than 3 %, and every estimate of every model stays at least where it was."""
    pairs = _plan_pairs("swin_large_patch4_window7_224", "swinv2_large_window12_192.ms_in22k")
    result = calibrate(pairs, *brackets)[0]
    assert result.errors_before.worst_under < -0.08 and result.errors_after.worst_under >= -0.03 - 1e-9
    assert result.device.reserved_factor >= TODAY.device.reserved_factor
    assert result.device.overhead_bytes > TODAY.device.overhead_bytes
    assert unsafe_count(result.device, *brackets) <= unsafe_count(TODAY.device, *brackets)
    assert guard(result.device, TODAY.device, *brackets) is None


def test_a_stack_without_its_own_model_gets_the_closest_and_says_so() -> None:
    model, note = built_in_model(Stack(torch="2.14", allocator="expandable_segments:True"))
    assert model is TODAY and "allocator configuration" in note and "torch" in note
    assert built_in_model(Stack(torch="1.12", allocator="")) == (PUBLISHED_2022, None)
    assert built_in_model(Stack(torch="2.11", allocator="")) == (TODAY, None)
    # torch 2's allocator, not 1.12's, for every torch 2 (the floor, 2.6, included)
    oldest, note = built_in_model(Stack(torch="2.6", allocator="expandable_segments:True"))
    assert oldest is TODAY and "torch and the allocator configuration differ" in note


def _todays_stack_pairs(pairs):
    """The recorded H100 pairs, as if measured with the installed torch and planner's allocator setting
    (this machine's stack, so that an estimate here picks their calibration)."""
    stack = stack_of("NVIDIA H100 80GB HBM3", torch.__version__, choose_allocator().conf)
    return [replace(pair, stack=stack) for pair in pairs]


def _write(path: Path, pairs) -> Path:
    path.write_text("".join(json.dumps(pair.to_dict()) + "\n" for pair in pairs))
    return path


def test_calibrate_keeps_the_cards_constants_and_the_next_estimate_says_so(published_pairs, tmp_path) -> None:
    """Pairs in -> constants out -> an estimate plan for that card (on this CPU) uses them and records them."""
    source = _write(tmp_path / "kaggle_pairs.jsonl", _todays_stack_pairs(published_pairs))
    report = calibrate_stacks([source])
    (result,) = report.calibrations
    assert report.saved.exists() and report.pairs == 16
    assert calibrate_stacks([source]).pairs == 16  # the same file handed in again adds nothing
    assert result.errors_after.worst_under >= -0.03 - 1e-9
    assert result.device.reserved_factor >= TODAY.device.reserved_factor
    chosen, note = stack_model_for(result.stack)
    assert chosen.calibrated and chosen.points == 16 and chosen.device == result.device and note is None
    meter = get_meter("estimate", gpu=get_gpu("H100"))
    record = meter.measured_on().device_model
    assert record.calibrated and record.points == 16 and record.reserved_factor == result.device.reserved_factor
    uncalibrated = get_meter("estimate", gpu=get_gpu("T4")).measured_on().device_model
    assert not uncalibrated.calibrated and uncalibrated.fitted_on == TODAY.fitted_on


def test_pairs_from_several_cards_are_calibrated_per_card_under_the_gpu_tables_names(published_pairs,
                                                                                      tmp_path) -> None:
    """A pairs file whose cards carry CUDA's names (recorded before the GPU table knew them) calibrates each card
    under the name `--gpu` plans with; a card the table does not know keeps CUDA's name."""
    todays = _todays_stack_pairs(published_pairs)[:4]
    names = {"NVIDIA L4": "L4", "Tesla V100-PCIE-16GB": "V100-16G", "NVIDIA H200": "NVIDIA H200"}
    source = _write(tmp_path / "cards.jsonl", [replace(pair, stack=replace(pair.stack, gpu=cuda_name))
                                               for cuda_name in names for pair in todays])
    report = calibrate_stacks([source])
    assert report.pairs == 12 and sorted(r.stack.gpu for r in report.calibrations) == sorted(names.values())
    for card in ("L4", "V100-16G"):
        record = get_meter("estimate", gpu=get_gpu(card)).measured_on().device_model
        assert record.calibrated and record.points == 4


def test_recorded_pairs_replay_the_estimates_own_card_bytes(monkeypatch, tmp_path) -> None:
    """The recording function on a real plan: each pair's replay, through the meter's device model, gives
    the card bytes the estimate itself reported for that probe."""
    monkeypatch.setenv("PLANNER_NO_CACHE", "1")
    plan = make_plan(ProbeOptions(budgets=(1 * GIB,), effective_batch_size=16, device="estimate",
                                  output=tmp_path / "plan.json"), entries=single_entry("resnet18", 32))
    meter = get_meter("estimate")
    stack = stack_of("H100", torch.__version__, "")
    pairs = probe_pairs(plan, meter, stack)
    assert pairs and len(pairs) == sum(len(entry.probes) for entry in plan.entries)
    measured = {p.micro_batch: p.peak_bytes for p in plan.entries[0].probes}
    for pair in pairs:
        assert estimate_bytes(meter.device, pair) == measured[pair.micro_batch] == pair.measured_bytes
        assert pair.replay["allocated"] <= pair.replay["active"] <= pair.replay["reserved"]


def test_a_runs_gpu_peaks_are_paired_with_the_estimates_replay_and_nothing_else_is() -> None:
    """The recording function of `planner run` on a run record: the entry that finished on the GPU gives a
    pair (its measured peak, the estimate's replay at the micro-batch it trained at); a failed entry and a
    CPU one give none."""
    spec = single_entry("resnet18", 32)[0]
    allocator = AllocatorConfig(conf="expandable_segments:True", source="planner")

    def entry(name: str, status: str, device: str) -> EntryRecord:
        memory = MemoryRecord(meter=device, peak_bytes=3 * GIB, start_bytes=0,
                              allocator=allocator if device == "cuda" else None)
        return EntryRecord(name=name, arch=spec.arch, item=spec.item, size=spec.size, status=status, device=device,
                           precision="fp16", planned_accum=2, planned_micro_batch=8, accum=4, micro_batch=4,
                           predicted_peak_bytes=GIB, predicted_on="estimate", memory=memory, started=now())

    run = RunFile(data="data", plan="plan.json", effective_batch_size=16, budget_bytes=16 * GIB,
                  settings=RunSettings(epochs=1, lr=0.01, pretrained=False), created=now(), updated=now(),
                  entries={"trained": entry("trained", "finished", "cuda"), "failed": entry("failed", "failed", "cuda"),
                           "cpu": entry("cpu", "finished", "cpu")})
    meter = get_meter("estimate")
    stack = stack_of("T4", torch.__version__, allocator.conf)
    (pair,) = run_pairs(run, meter, stack)
    assert (pair.arch, pair.micro_batch, pair.measured_bytes, pair.source) == (spec.arch, 4, 3 * GIB, "planner run")
    assert pair.replay == meter.replay_peaks(spec, 4) and pair.stack.gpu == "T4"


def test_calibrate_command_shows_the_refit_and_keeps_it(tmp_path, published_pairs) -> None:
    source = _write(tmp_path / "pairs.jsonl", _todays_stack_pairs(published_pairs))
    cache = tmp_path / "cache"
    result = run_planner("calibrate", source, env={"XDG_CACHE_HOME": str(cache)})
    assert result.returncode == 0, result.stderr
    assert "16 pairs" in result.stdout and "1.10 × reserved + 19 MiB" in result.stdout
    assert (cache / "planner" / "calibration" / "devices.json").exists()
    assert len((cache / "planner" / "calibration" / "pairs.jsonl").read_text().splitlines()) == 16


def test_no_pairs_and_a_corrupt_pairs_file_are_one_line_errors(tmp_path, published_pairs) -> None:
    with pytest.raises(UserError, match=r"pairs file .* not found: measure on a GPU first"):
        calibrate_stacks()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match=r"pairs file .* is empty"):
        calibrate_stacks([empty])
    with pytest.raises(UserError, match="no measured pairs"):
        calibrate([], [], 0)
    corrupt = _write(tmp_path / "corrupt.jsonl", published_pairs[:2])
    corrupt.write_text(corrupt.read_text() + '{"stack": {"torch": "2.11"}, "arch": 3}\n')
    with pytest.raises(UserError, match="line 3 is not a measured pair"):
        load_pairs(corrupt)


def test_calibrate_command_prints_one_line_for_a_corrupt_file(tmp_path) -> None:
    corrupt = tmp_path / "pairs.jsonl"
    shutil.copy(H100 / "pairs_published.jsonl", corrupt)
    with corrupt.open("a") as handle:
        handle.write("not json\n")
    result = run_planner("calibrate", corrupt, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "line 17 is not a measured pair" in result.stderr
    assert not (tmp_path / "cache" / "planner" / "calibration" / "devices.json").exists()


def test_a_pair_cut_short_is_skipped_and_the_next_append_starts_a_line_of_its_own(tmp_path, published_pairs) -> None:
    """A full disk or a power cut can end the pairs file inside a line: calibrate reads the pairs around it,
    and the next pair appended is not glued to it (which would lose both)."""
    path = _write(tmp_path / "pairs.jsonl", published_pairs[:2])
    path.write_text(path.read_text() + json.dumps(published_pairs[2].to_dict())[:60])
    append_pairs(published_pairs[3:4], tmp_path)
    assert load_pairs(path) == [*published_pairs[:2], published_pairs[3]]


CALIBRATED_STACK = Stack(torch="2.14", allocator="", gpu="T4")


def _devices_file(folder: Path, device: dict, errors: dict | None = None) -> None:
    item = {"stack": CALIBRATED_STACK.to_dict(), "device": device, "fitted_on": "3 measured pairs on this card",
            "points": 3, "errors": {"median": 0.01, "worst_under": -0.02} if errors is None else errors}
    (folder / DEVICES_FILE).write_text(json.dumps({"version": 1, "stacks": {calibration_key(CALIBRATED_STACK): item}}))


@pytest.mark.parametrize("device, errors", [
    ({"allocator": "reserved", "overhead_bytes": "100 MiB", "reserved_factor": 1.2}, None),
    ({"allocator": "bogus", "overhead_bytes": 2**20, "reserved_factor": 1.2}, None),
    ({"allocator": "reserved", "overhead_bytes": -2**40, "reserved_factor": -1.0}, None),
    ({"allocator": "reserved", "overhead_bytes": 2**20, "reserved_factor": 1.2, "extra": 1}, None),
    ({"allocator": "reserved", "overhead_bytes": 2**20, "reserved_factor": 1.2}, {}),  # no error for the margin
])
def test_a_damaged_calibration_plans_with_the_built_in_constants(tmp_path, device, errors) -> None:
    """devices.json damaged or edited by hand: the probe plans with the built-in constants, where it used to
    end in a traceback, or plan with negative bytes."""
    _devices_file(tmp_path, device, errors)
    assert load_calibrated(tmp_path) == {}
    assert not stack_model_for(CALIBRATED_STACK, tmp_path)[0].calibrated
    (tmp_path / DEVICES_FILE).write_text('{"version": 1, "stacks": []}')
    assert load_calibrated(tmp_path) == {}


def test_a_whole_calibration_is_used(tmp_path) -> None:
    _devices_file(tmp_path, {"allocator": "reserved", "overhead_bytes": 100 * 2**20, "reserved_factor": 1.2})
    chosen, note = stack_model_for(CALIBRATED_STACK, tmp_path)
    assert chosen.calibrated and chosen.device == DeviceModel("reserved", 100 * 2**20, 1.2) and note is None
