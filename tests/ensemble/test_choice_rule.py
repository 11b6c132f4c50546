"""tune-weights' choice rule on constructed cross-fitted scores: the sentence names the condition that failed.

The rule (planner/ensemble/tune.py): the best fitted method replaces uniform weights only if its
cross-fitted log-loss gain is at least 2 standard errors and its error-rate gain at least 0.3
points. The reason must say which condition failed, with its numbers, and call a gain below the
threshold "within noise" but a negative one "worse".
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from planner.ensemble.crossfit import MethodScores, Score
from planner.ensemble.results import MethodResult
from planner.ensemble.tune import choose

FOLDS = 4


def score(mean: float, se: float) -> Score:
    """Per-fold values with exactly this mean and standard error (alternating mean ± se·sqrt(folds − 1))."""
    step = se * math.sqrt(FOLDS - 1)
    return Score(tuple(mean + (step if fold % 2 else -step) for fold in range(FOLDS)))


def method(name: str, log_loss: float, gain: tuple[float, float], error_gain: tuple[float, float]) -> MethodResult:
    """A method whose cross-fitted log loss is ``log_loss`` and whose gains over uniform are (mean, se)."""
    return MethodResult(
        name=name,
        weights=np.array([0.5, 0.5]),
        log_loss=log_loss,
        error_rate=0.1,
        crossfit=MethodScores(
            log_loss=score(log_loss, 0.01),
            error_rate=score(0.1, 0.01),
            log_loss_gain=score(*gain),
            error_rate_gain=score(*error_gain),
        ),
    )


def results(gain: tuple[float, float], error_gain: tuple[float, float]) -> tuple[MethodResult, ...]:
    """Uniform, and three fitted methods of which optuna has the lowest cross-fitted log loss."""
    return (
        method("uniform", 0.40, (0.0, 0.0), (0.0, 0.0)),
        method("greedy", 0.35, (0.05, 0.04), (0.01, 0.001)),
        method("slsqp", 0.34, (0.06, 0.04), (0.01, 0.001)),
        method("optuna", 0.30, gain, error_gain),
    )


def test_score_helper_builds_the_mean_and_standard_error_asked_for() -> None:
    built = score(0.0834, 0.0065)
    assert (built.mean, built.se) == (pytest.approx(0.0834), pytest.approx(0.0065))


def test_a_gain_on_both_scores_is_used_and_called_real() -> None:
    chosen, reason = choose(results((0.08, 0.01), (0.005, 0.002)), force=False)
    assert chosen == "optuna"
    assert reason.startswith("optuna's cross-fitted log-loss gain over uniform is +0.0800 ± 0.0100 (se)")
    assert "log-loss gain passes (8.0 standard errors, at least 2)" in reason
    assert "error-rate gain passes (at least 0.3 points)" in reason
    assert "a real gain" in reason and "noise" not in reason and "worse" not in reason


def test_the_demos_case_a_worse_error_rate_is_called_worse_not_noise() -> None:
    """The demo's numbers: log loss +0.0834 ± 0.0065 (12.8 se) passes, the error rate lost 1.97 points."""
    chosen, reason = choose(results((0.0834, 0.0065), (-0.0197, 0.0096)), force=False)
    assert chosen == "uniform"
    assert "+0.0834 ± 0.0065 (se) and its error-rate gain -1.97 ± 0.96 points" in reason
    assert "the log-loss gain passes (12.8 standard errors, at least 2)" in reason
    assert "but the error rate is worse than uniform's (by 1.97 points)" in reason
    assert "noise" not in reason
    assert reason.endswith("so the plain average is used (force with --force-weights)")


def test_an_error_rate_gain_below_the_threshold_is_within_noise() -> None:
    chosen, reason = choose(results((0.0834, 0.0065), (0.002, 0.001)), force=False)
    assert chosen == "uniform"
    assert "the log-loss gain passes (12.8 standard errors, at least 2)" in reason
    assert "but the error-rate gain is within noise (below 0.3 points)" in reason
    assert "worse" not in reason


def test_a_log_loss_gain_below_two_standard_errors_is_within_noise() -> None:
    chosen, reason = choose(results((0.01, 0.008), (0.01, 0.003)), force=False)
    assert chosen == "uniform"
    assert "the log-loss gain is within noise (1.2 standard errors, below 2)" in reason
    assert "but the error-rate gain passes (at least 0.3 points)" in reason
    assert "worse" not in reason


def test_both_conditions_failing_are_both_named() -> None:
    chosen, reason = choose(results((0.01, 0.008), (-0.004, 0.002)), force=False)
    assert chosen == "uniform"
    assert ("the log-loss gain is within noise (1.2 standard errors, below 2) "
            "and the error rate is worse than uniform's (by 0.40 points)") in reason


def test_a_worse_log_loss_is_called_worse() -> None:
    chosen, reason = choose(results((-0.02, 0.005), (0.001, 0.001)), force=False)
    assert chosen == "uniform"
    assert ("the log loss is worse than uniform's (by 0.0200) "
            "and the error-rate gain is within noise (below 0.3 points)") in reason


def test_forced_weights_are_used_and_the_failed_condition_still_named() -> None:
    chosen, reason = choose(results((0.0834, 0.0065), (-0.0197, 0.0096)), force=True)
    assert chosen == "optuna"
    assert "the error rate is worse than uniform's (by 1.97 points)" in reason
    assert reason.endswith("used anyway because weights were forced")
    assert "--force-weights" not in reason
