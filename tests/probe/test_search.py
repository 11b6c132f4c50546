"""The micro-batch search on known memory curves: the measure function is a real curve, not a stub
of the search; what is checked is the search's choice and how many probes it needed."""

import pytest

from planner.base.errors import UserError
from planner.base.plan import MemoryCurve, ProbePoint
from planner.probe.search import (
    candidate_micro_batches,
    fit_curve,
    search_micro_batch,
    walk_from_top_trials,
)

MIB = 2**20


def curve_meter(fixed, per_sample, step=0.0, card=None, curvature=0.0):
    """Peaks of a known curve (optionally bending upwards); OOM above ``card`` bytes."""
    calls = []

    def measure(b):
        calls.append(b)
        forward_backward = fixed + per_sample * b + curvature * b * b
        peak = max(forward_backward, step)
        if card is not None and peak > card:
            return ProbePoint(micro_batch=b, peak_bytes=None, oom=True, seconds=0.0)
        return ProbePoint(micro_batch=b, peak_bytes=int(peak), forward_backward_bytes=int(forward_backward),
                          step_bytes=int(step), seconds=0.0)

    return measure, calls


def test_candidates_are_divisors_without_one_under_batchnorm():
    assert candidate_micro_batches(64, has_batchnorm=True) == [2, 4, 8, 16, 32, 64]
    assert candidate_micro_batches(64, has_batchnorm=False) == [1, 2, 4, 8, 16, 32, 64]
    assert candidate_micro_batches(24, has_batchnorm=True) == [2, 3, 4, 6, 8, 12, 24]
    with pytest.raises(UserError):
        candidate_micro_batches(1, has_batchnorm=True)


def test_affine_curve_picks_largest_fitting_divisor_with_few_probes():
    measure, calls = curve_meter(fixed=2000 * MIB, per_sample=300 * MIB)
    candidates = candidate_micro_batches(64, True)
    result = search_micro_batch(measure, candidates, limit_bytes=12000 * MIB)
    # 2000 + 300*32 = 11600 fits; 2000 + 300*64 = 21200 does not.
    assert result.fits and result.micro_batch == 32
    assert result.peak_bytes <= 12000 * MIB
    assert len(calls) == 3  # two opening probes and the confirmation
    assert walk_from_top_trials(candidates, 32, True) == 2


def test_next_divisor_is_checked_when_prediction_is_near_the_edge():
    measure, calls = curve_meter(fixed=2000 * MIB, per_sample=150 * MIB)
    result = search_micro_batch(measure, candidate_micro_batches(64, True), limit_bytes=11000 * MIB)
    # 2000 + 150*64 = 11600: over the limit but within 10 %, so it is probed, and 32 is kept.
    assert result.micro_batch == 32
    assert 64 in calls


def test_curve_bending_upwards_is_corrected_by_confirmation():
    # Extrapolating the first two points under-predicts: the confirmation must catch it.
    measure, _ = curve_meter(fixed=1000 * MIB, per_sample=100 * MIB, curvature=6 * MIB)
    result = search_micro_batch(measure, candidate_micro_batches(64, True), limit_bytes=8000 * MIB)
    peaks = {b: 1000 + 100 * b + 6 * b * b for b in (2, 4, 8, 16, 32, 64)}
    expected = max(b for b, peak in peaks.items() if peak * MIB <= 8000 * MIB)
    assert result.micro_batch == expected == 16
    assert all(not p.oom for p in result.points)


def test_flat_optimizer_step_phase_sets_the_peak_at_small_batches():
    measure, _ = curve_meter(fixed=100 * MIB, per_sample=2 * MIB, step=200 * MIB)
    result = search_micro_batch(measure, candidate_micro_batches(64, True), limit_bytes=250 * MIB)
    assert result.micro_batch == 64  # 100 + 128 = 228, step 200: both under 250
    assert result.curve.predict(2) == 200 * MIB  # the step phase, not the line, at b = 2


def test_out_of_memory_probes_are_counted_and_bound_the_answer():
    # A card smaller than the limit: large probes run out of memory before exceeding the limit.
    measure, _ = curve_meter(fixed=1000 * MIB, per_sample=500 * MIB, card=6000 * MIB)
    result = search_micro_batch(measure, candidate_micro_batches(64, True), limit_bytes=20000 * MIB)
    assert result.micro_batch == 8  # 1000 + 4000 = 5000 fits the card; 16 -> 9000 runs out
    assert result.ooms >= 1


def test_nothing_fits_reports_the_smallest_candidate_after_one_probe():
    measure, calls = curve_meter(fixed=5000 * MIB, per_sample=10 * MIB)
    result = search_micro_batch(measure, candidate_micro_batches(64, True), limit_bytes=4000 * MIB)
    assert not result.fits and result.micro_batch == 2
    assert result.peak_bytes == 5020 * MIB
    assert calls == [2]


def test_prior_curve_of_the_same_architecture_saves_the_opening_probes():
    measure, calls = curve_meter(fixed=2000 * MIB, per_sample=300 * MIB)
    first = search_micro_batch(measure, candidate_micro_batches(64, True), limit_bytes=12000 * MIB)
    calls.clear()
    second = search_micro_batch(measure, candidate_micro_batches(64, True), limit_bytes=12000 * MIB,
                                prior=first.curve)
    assert second.micro_batch == first.micro_batch == 32
    assert calls == [32]


def test_fit_curve_uses_the_points_nearest_the_edge():
    points = [ProbePoint(micro_batch=b, peak_bytes=p, forward_backward_bytes=p, step_bytes=10, seconds=0)
              for b, p in [(2, 100), (8, 160), (32, 520)]]
    curve = fit_curve(points)
    assert curve == MemoryCurve(fixed_bytes=40.0, per_sample_bytes=15.0, step_bytes=10.0,
                                step_per_sample_bytes=0.0)
    assert curve.predict(32) == 520


def test_probes_that_cost_the_same_at_any_size_open_from_the_top():
    candidates = candidate_micro_batches(64, True)
    # the reference set on a 16 GB card has this shape: 32 fits, 64 does not; the two openers settle it
    measure, calls = curve_meter(fixed=2000 * MIB, per_sample=300 * MIB)
    result = search_micro_batch(measure, candidates, limit_bytes=12000 * MIB, from_the_top=True)
    assert (result.micro_batch, calls) == (32, [64, 32])
    # the largest fits: one probe
    measure, calls = curve_meter(fixed=2000 * MIB, per_sample=100 * MIB)
    assert search_micro_batch(measure, candidates, limit_bytes=12000 * MIB, from_the_top=True).micro_batch == 64
    assert calls == [64]
    # nothing fits: the smallest candidate is measured before giving up
    measure, calls = curve_meter(fixed=6000 * MIB, per_sample=300 * MIB)
    result = search_micro_batch(measure, candidates, limit_bytes=5000 * MIB, from_the_top=True)
    assert not result.fits and result.micro_batch == 2 and calls[-1] == 2


@pytest.mark.parametrize("limit_mib", [3000, 4400, 5000, 8000, 11000, 12000, 20000, 30000])
@pytest.mark.parametrize("curvature", [0.0, 2.0])
def test_opening_from_the_top_finds_what_opening_from_the_bottom_finds(limit_mib, curvature):
    candidates = candidate_micro_batches(64, True)
    answers = []
    for from_the_top in (False, True):
        measure, calls = curve_meter(fixed=2000 * MIB, per_sample=150 * MIB, step=2500 * MIB,
                                     curvature=curvature * MIB)
        result = search_micro_batch(measure, candidates, limit_bytes=limit_mib * MIB, from_the_top=from_the_top)
        answers.append((result.micro_batch, result.fits, result.peak_bytes))
        assert len(calls) <= 4
    assert answers[0] == answers[1]
