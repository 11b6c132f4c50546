"""tune-weights, top to bottom: load predictions, fit every method, cross-fit them, choose, write.

Choice rule. The best fitted method (greedy, SLSQP or Optuna, by cross-fitted log loss) replaces the
plain average only if its cross-fitted gain over uniform is real on both scores: a log-loss gain of
at least two standard errors (paired per fold) *and* an error-rate gain of at least 0.3 points (at
~2,000 held-out images smaller accuracy gains are noise). Otherwise the submission uses uniform
weights, unless ``force_weights`` is set, and the report says which condition failed and how: a gain
within noise (a positive log-loss gain under two standard errors; an error-rate gain from 0 to 0.3
points) or a score worse than uniform's (a negative gain).
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

from planner.base.atomic import check_writable, remove_stale_temporaries
from planner.base.errors import UserError
from planner.base.locations import latest_run_dir
from planner.base.runfile import load_run
from planner.ensemble import methods
from planner.ensemble.crossfit import Fit, MethodScores, Score, crossfit, fold_indices
from planner.ensemble.objectives import error_rate, log_loss, mix, true_class_probs
from planner.ensemble.options import TuneOptions
from planner.ensemble.preds import RunPredictions, entries_without_predictions, load_predictions
from planner.ensemble.record import WEIGHTS_FILE, save_weights
from planner.ensemble.report import write_png
from planner.ensemble.results import MethodResult, Progress, TuneResult
from planner.ensemble.storage import study_storage
from planner.ensemble.study import fingerprint, run_study
from planner.ensemble.submission import load_sample, write_submission

FITTED = ("greedy", "slsqp", "optuna")
MIN_GAIN_SE = 2.0
MIN_ERROR_RATE_GAIN = 0.003
FOLD_TRIALS = 200
RULE = (
    f"use the best fitted method (by cross-fitted log loss) only if its log-loss gain over uniform is "
    f">= {MIN_GAIN_SE:g} standard errors and its error-rate gain is >= {100 * MIN_ERROR_RATE_GAIN:g} "
    "points; otherwise uniform"
)

def tune_weights(options: TuneOptions, progress: Progress | None = None) -> TuneResult:
    """Fit ensemble weights on a run's held-out predictions and write weights.json, submission.csv, a PNG.

    Args:
        options: the run folder and the study's settings.
        progress: called after each Optuna trial, of the study (phase "study") and of the cross-fit
            (phase "cross-fit").

    Returns:
        The scores of every method, the chosen weights and the paths written.

    Raises:
        UserError: bad predictions, options, run.json, data folder, sample submission or storage.
    """
    start = time.perf_counter()
    if options.run_dir is None:
        options = replace(options, run_dir=latest_run_dir())
    run_dir, notify = options.run_dir, progress or (lambda *_: None)
    # Everything the user can get wrong is checked before the first trial (the options by their record).
    storage = study_storage(run_dir, options.storage)
    preds = load_predictions(run_dir)
    sample = load_sample(_data_dir(options), preds.test_names)
    check_writable(run_dir, "run folder", folder=True)  # weights.json, submission.csv, weights.png go there
    hand = methods.hand(preds.names, options.hand_weights)
    splits = fold_indices(preds.valid_targets, options.folds, options.seed)
    p_true = true_class_probs(preds.valid_probs, preds.valid_targets)

    study = run_study(
        p_true,
        preds.names,
        trials=options.trials,
        sampler=options.sampler,
        seed=options.seed,
        storage=storage.url,
        study_name=options.study,
        fit_on=fingerprint(preds.names, preds.valid_names, p_true),
        on_trial=partial(notify, "study"),
    )
    fits = _fits(preds.names, hand, options, notify)
    honest = crossfit(p_true, preds.valid_probs, preds.valid_targets, fits, splits)
    results = tuple(
        _score(name, study.weights if name == "optuna" else fit(p_true), preds, p_true, honest[name])
        for name, fit in fits.items()
    )

    chosen, reason = choose(results, options.force_weights)
    remove_stale_temporaries(run_dir)  # half-written outputs of a killed tune-weights
    weights = next(result.weights for result in results if result.name == chosen)
    labels = [preds.vocab[i] for i in mix(weights, preds.test_probs).argmax(axis=1)]
    result = TuneResult(
        run_dir=run_dir,
        names=preds.names,
        rows=len(preds.valid_names),
        folds=options.folds,
        methods=results,
        chosen=chosen,
        reason=reason,
        study=study,
        weights_path=run_dir / WEIGHTS_FILE,
        submission_path=write_submission(run_dir / "submission.csv", sample, preds.test_names, labels),
        png_path=write_png(run_dir / "weights.png", preds.names, results, study),
        seconds=time.perf_counter() - start,
        storage_note=storage.note,
        left_out=tuple(f"{entry.name} ({entry.status})" for entry in entries_without_predictions(run_dir, preds.names)),
    )
    save_weights(result, options, RULE)
    return result


def choose(results: tuple[MethodResult, ...], force: bool) -> tuple[str, str]:
    """Apply the choice rule (module docstring) and say why, in one sentence.

    The sentence gives the best fitted method's cross-fitted gains with their standard errors and
    then the verdict on each condition, so that a user sees which one failed (log loss, error rate
    or both) and whether it failed by noise or by being worse than uniform.

    Args:
        results: every method's scores, including "uniform" and the methods in ``FITTED``.
        force: take the best fitted method even when its gain fails the rule.

    Returns:
        The chosen method's name and the reason.
    """
    by_name = {result.name: result for result in results}
    best = min((by_name[name] for name in FITTED), key=lambda result: result.crossfit.log_loss.mean)
    gain, error_gain = best.crossfit.log_loss_gain, best.crossfit.error_rate_gain
    measured = (
        f"{best.name}'s cross-fitted log-loss gain over uniform is {gain.mean:+.4f} ± {gain.se:.4f} (se) and "
        f"its error-rate gain {100 * error_gain.mean:+.2f} ± {100 * error_gain.se:.2f} points"
    )
    log_loss_passes, log_loss_verdict = _log_loss_verdict(gain)
    error_passes, error_verdict = _error_rate_verdict(error_gain)
    if log_loss_passes and error_passes:
        return best.name, f"{measured}: {log_loss_verdict} and {error_verdict}, a real gain"
    if log_loss_passes or error_passes:
        verdict = f"{log_loss_verdict} but {error_verdict}"
    else:
        verdict = f"{log_loss_verdict} and {error_verdict}"
    if force:
        return best.name, f"{measured}: {verdict}; used anyway because weights were forced"
    return "uniform", f"{measured}: {verdict}, so the plain average is used (force with --force-weights)"


def _log_loss_verdict(gain: Score) -> tuple[bool, str]:
    """Whether the cross-fitted log-loss gain passes (> 0 and >= ``MIN_GAIN_SE`` se), and why in words."""
    if gain.mean < 0:
        return False, f"the log loss is worse than uniform's (by {-gain.mean:.4f})"
    if gain.mean == 0:
        return False, "there is no log-loss gain"
    if gain.se == 0:
        return True, "the log-loss gain passes (the same in every fold)"
    spread = f"{gain.mean / gain.se:.1f} standard errors"
    if gain.mean >= MIN_GAIN_SE * gain.se:
        return True, f"the log-loss gain passes ({spread}, at least {MIN_GAIN_SE:g})"
    return False, f"the log-loss gain is within noise ({spread}, below {MIN_GAIN_SE:g})"


def _error_rate_verdict(gain: Score) -> tuple[bool, str]:
    """Whether the cross-fitted error-rate gain passes (>= ``MIN_ERROR_RATE_GAIN``), and why in words."""
    threshold = f"{100 * MIN_ERROR_RATE_GAIN:g} points"
    if gain.mean >= MIN_ERROR_RATE_GAIN:
        return True, f"the error-rate gain passes (at least {threshold})"
    if gain.mean < 0:
        return False, f"the error rate is worse than uniform's (by {-100 * gain.mean:.2f} points)"
    return False, f"the error-rate gain is within noise (below {threshold})"


def _fits(names: tuple[str, ...], hand: np.ndarray, options: TuneOptions, notify: Progress) -> dict[str, Fit]:
    """Every method as a fit on training rows, in report order; fixed weights ignore the rows.

    Within folds Optuna runs in memory with at most ``FOLD_TRIALS`` trials and the same sampler.
    """
    models = len(names)
    fold_trials = min(options.trials, FOLD_TRIALS)
    done = iter(range(1, options.folds * fold_trials + 1))

    def optuna_fit(p_true: np.ndarray) -> np.ndarray:
        return run_study(
            p_true,
            names,
            trials=fold_trials,
            sampler=options.sampler,
            seed=options.seed,
            on_trial=lambda *_: notify("cross-fit", next(done), options.folds * fold_trials),
        ).weights

    fixed = {f"{methods.SINGLE}{name}": np.eye(models)[i] for i, name in enumerate(names)}
    fixed.update(uniform=methods.uniform(models), hand=hand)
    return {
        **{name: partial(_constant, weights) for name, weights in fixed.items()},
        "greedy": methods.greedy,
        "slsqp": methods.slsqp,
        "optuna": optuna_fit,
    }


def _constant(weights: np.ndarray, _p_true: np.ndarray) -> np.ndarray:
    return weights


def _score(
    name: str, weights: np.ndarray, preds: RunPredictions, p_true: np.ndarray, honest: MethodScores
) -> MethodResult:
    return MethodResult(
        name=name,
        weights=weights,
        log_loss=log_loss(weights, p_true),
        error_rate=error_rate(weights, preds.valid_probs, preds.valid_targets),
        crossfit=honest,
    )


def _data_dir(options: TuneOptions) -> Path | None:
    """--data, else the data folder RUN_DIR/run.json names, else None (no sample submission)."""
    if options.data is not None:
        data = options.data
    else:
        run = load_run(options.run_dir, fix="pass --data DIR (the folder with sample_submission.csv)")
        if run is None:
            return None
        data = Path(run.data)
    if not data.is_dir():
        problem = "is a file, not a folder" if data.exists() else "not found"
        raise UserError(f"data folder {data} {problem}; pass --data DIR (the folder with sample_submission.csv)")
    return data
