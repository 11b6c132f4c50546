"""The published RTX 3090 runs as ground truth: file, brackets, halves, scores and the constants' fit."""

from benchmarks.published.calibrate import BracketPeaks, fit_overhead, outcomes
from benchmarks.published.runs import (
    CARD_BYTES,
    DECAY_SEQUENCE,
    GIB,
    Rates,
    bracket_outcome,
    family_of,
    half_of,
    larger_batch,
    load_runs,
    outcome,
    params_match,
    predicted_batch,
)
from planner.base.gpus import get_gpu


def test_the_published_file_and_its_brackets():
    runs = load_runs()
    assert len(runs) == 838
    by_name = {run.model: run for run in runs}
    assert by_name["resnet50_gn"].batch == 192 and by_name["resnet50_gn"].next_batch == 256
    assert by_name["tinynet_e"].image_size == 106 and not by_name["tinynet_e"].bracketed
    bracketed = [run for run in runs if run.bracketed]
    assert len(bracketed) == 644
    assert all(run.batch in DECAY_SEQUENCE for run in runs)


def test_halves_are_stable_and_near_even():
    bracketed = [run.model for run in load_runs() if run.bracketed]
    calibration = [name for name in bracketed if half_of(name) == "calibration"]
    assert 0.4 < len(calibration) / len(bracketed) < 0.6
    assert half_of("resnet50_gn") == half_of("resnet50_gn")
    assert {half_of(name) for name in bracketed} == {"calibration", "held_out"}


def test_sequence_steps_and_predicted_batch():
    assert larger_batch(192) == 256 and larger_batch(512) is None and larger_batch(3) == 4
    assert predicted_batch({192: True, 256: False}) == 192
    assert predicted_batch({192: True, 256: True, 384: False}) == 256
    assert predicted_batch({192: False, 128: True, 256: False}) == 128
    assert predicted_batch({4: False}) is None


def test_outcomes():
    assert outcome(192, 192) == "exact" and outcome(192, 256) == "unsafe" and outcome(192, 128) == "cautious"
    assert outcome(4, None) == "cautious"
    assert bracket_outcome(True, False) == "exact"
    assert bracket_outcome(True, True) == "unsafe" and bracket_outcome(False, False) == "cautious"
    rates = Rates.of(["exact", "exact", "unsafe", "cautious"])
    assert (rates.total, rates.percent(rates.exact), rates.percent(rates.unsafe)) == (4, 50.0, 25.0)


def test_families_and_parameter_counts():
    assert [family_of(n) for n in ("resnet50_gn", "swinv2_large_window12_192_22k", "tf_efficientnet_b0",
                                   "vit_huge_patch14_224", "efficientnetv2_rw_t")] == \
        ["resnet", "swinv2", "efficientnet", "vit", "efficientnetv2"]
    assert params_match(25.56, 25_557_032) and not params_match(828.4, 88_800_000)


def test_the_fit_finds_the_one_overhead_every_bracket_agrees_with():
    card = 24 * GIB
    # three models whose variable bytes say a 24 GiB card holds between 22.5 and 23 GiB for the step
    brackets = [BracketPeaks(int(20 * GIB), int(23.2 * GIB)), BracketPeaks(int(22.5 * GIB), int(30 * GIB)),
                BracketPeaks(int(10 * GIB), int(23 * GIB))]
    fit = fit_overhead(brackets, card_bytes=card)
    assert outcomes(brackets, fit.overhead_bytes, card_bytes=card) == ["exact"] * 3
    assert 1.0 * GIB <= fit.overhead_bytes < 1.5 * GIB
    # too large an overhead makes the published batch fail (cautious); none makes the next fit (unsafe)
    assert outcomes(brackets, 0, card_bytes=card) == ["unsafe", "exact", "unsafe"]
    assert outcomes(brackets, int(2 * GIB), card_bytes=card) == ["exact", "cautious", "exact"]


def test_the_card_is_what_torch_reports_for_an_rtx_3090():
    # out-of-memory messages on an RTX 3090 say "23.70 GiB total capacity"; the GPU table's budget agrees
    assert get_gpu("RTX 3090").budget_bytes == CARD_BYTES
    assert round(CARD_BYTES / GIB, 2) == 23.70
