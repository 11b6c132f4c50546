"""The default margin is each meter's measured probe-to-run error, not a guess: the arithmetic, the
figures against the measurements they come from, and what a plan records."""

from __future__ import annotations

import json

import pytest

from planner.base.entries import single_entry
from planner.base.margin import MIN_MARGIN, margin_covering
from planner.probe.margins import CPU_METER, CUDA_METER, ESTIMATE_RUNS
from planner.probe.meters import get_meter
from planner.probe.meters.stacks import TODAY
from planner.probe.probe import probe_plan
from tests.planner_process import REPO

EVIDENCE = json.loads((REPO / "benchmarks" / "results" / "margin_evidence.json").read_text())["meters"]


@pytest.mark.parametrize(("worst_under", "margin"), [(-0.138, 0.14), (-0.03, 0.03), (-0.0301, 0.04), (-0.2, 0.2),
                                                     (0.0, MIN_MARGIN), (0.07, MIN_MARGIN)])
def test_the_margin_is_the_worst_under_prediction_rounded_up(worst_under: float, margin: float) -> None:
    assert margin_covering(worst_under) == margin


def test_a_run_under_predicted_by_the_worst_error_fits_the_card_with_that_margin() -> None:
    budget = 16 * 2**30
    for worst_under in (-0.001, -0.03, -0.0301, -0.138, -0.25):
        predicted = budget * (1 - margin_covering(worst_under))  # the largest peak the plan lets through
        assert predicted / (1 + worst_under) <= budget


def test_each_meters_figure_is_its_measured_worst() -> None:
    assert CUDA_METER.worst_under == round(EVIDENCE["cuda"]["worst_under"], 3)
    assert CUDA_METER.points == len(EVIDENCE["cuda"]["points"])
    assert CPU_METER.worst_under == EVIDENCE["cpu"]["worst_under"] == 0.0
    assert CPU_METER.points == len(EVIDENCE["cpu"]["points"])
    # The estimate's figure is its device model's fit and, for a built-in model, its estimate of planner runs;
    # together they cover every measured point on today's stack (held out and the H100's planner run included).
    runs = [p for p in EVIDENCE["estimate"]["points"] if p["what"].startswith("planner run")]
    assert ESTIMATE_RUNS.worst_under == round(min(p["error"] for p in runs), 3)
    assert ESTIMATE_RUNS.points == len(runs)
    worst = min(TODAY.errors["worst_under"], ESTIMATE_RUNS.worst_under)
    assert margin_covering(worst) == EVIDENCE["estimate"]["margin"]


def test_a_plan_records_the_measured_margin_unless_one_is_given() -> None:
    entries = single_entry("resnet18", 32)
    meter = get_meter("estimate")
    try:
        measured = probe_plan(entries, meter, budget_bytes=2**30, effective_batch_size=16)
        given = probe_plan(entries, meter, budget_bytes=2**30, effective_batch_size=16, margin=0.2)
    finally:
        meter.close()
    assert not measured.measured_on.device_model.calibrated  # a built-in model: planner runs count too
    assert measured.margin == margin_covering(min(measured.measured_on.device_model.worst_under,
                                                  ESTIMATE_RUNS.worst_under))
    assert measured.margin_basis.startswith("covers the estimate meter's worst measured under-prediction")
    assert (given.margin, given.margin_basis) == (0.2, "given by --margin")
    (entry,) = measured.entries
    assert entry.predicted_peak_bytes <= 2**30 * (1 - measured.margin)
