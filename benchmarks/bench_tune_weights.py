"""Benchmark tune-weights on realistic synthetic predictions: 6 models × 2,000 held-out rows × 10 classes.

Measures the objective's cost, Optuna's time per trial and for 1,000 trials (in memory), how close
each sampler gets to the convex optimum (scipy SLSQP), the same with SQLite storage, the -log(u)
parametrisation against stick-breaking, and the cross-fitted gain of every method over the plain
average. Writes ``benchmarks/results/tune_weights.json`` and prints a summary.

Run from the repository root: ``python benchmarks/bench_tune_weights.py`` (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import platform
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.atomic import atomic_write_json
from planner.ensemble import methods
from planner.ensemble.crossfit import crossfit, fold_indices
from planner.ensemble.objectives import error_rate, log_loss, true_class_probs
from planner.ensemble.study import SAMPLERS, run_study
from planner.ensemble.tune import FOLD_TRIALS, MIN_ERROR_RATE_GAIN, MIN_GAIN_SE

NAMES = ("convnext_small", "vit_small", "swin_tiny", "resnet26d", "vit_base", "regnety_040")
OUT = Path(__file__).resolve().parent / "results" / "tune_weights.json"


def synthetic(rows: int = 2000, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dirichlet-noised softmax of logits correlated with the truth.

    Each model's logits are ``signal × onehot(target) + 0.8 × shared noise + 0.6 × own noise``: the
    shared part makes errors correlated across models (hard images), ``signal`` sets the quality and
    a per-model temperature the calibration (over- or under-confident). The softmax is then
    resampled from a Dirichlet around it (concentration 300), as TTA and finite training add noise.
    """
    rng = np.random.default_rng(seed)
    signal = (2.0, 2.6, 2.8, 3.0, 3.0, 3.2)
    temperature = (0.6, 1.0, 1.4, 0.9, 1.1, 1.0)
    targets = rng.integers(0, classes, rows)
    onehot = np.eye(classes)[targets]
    shared = rng.standard_normal((rows, classes))
    probs = []
    for strength, temp in zip(signal, temperature, strict=True):
        own = rng.standard_normal((rows, classes))
        logits = (strength * onehot + 0.8 * shared + 0.6 * own) * 1.5 / temp
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        draw = rng.gamma(300 * p + 0.01)
        probs.append(draw / draw.sum(axis=1, keepdims=True))
    return np.stack(probs), targets


def study_run(
    p_true: np.ndarray, optimum: float, sampler: str, trials: int, seed: int, storage: str | None = None
):
    """One study through planner's own path; time, per-trial medians and excess over the optimum."""
    start = time.perf_counter()
    result = run_study(p_true, NAMES, trials=trials, sampler=sampler, seed=seed, storage=storage)
    wall = time.perf_counter() - start
    best = np.minimum.accumulate(result.history)
    checkpoints = [n for n in (50, 100, 200, 500, 1000) if n <= trials]
    return {
        "sampler": sampler,
        "storage": "sqlite" if storage else "memory",
        "seed": seed,
        "trials": trials,
        "wall_s": wall,
        "per_trial_ms": 1000 * wall / trials,
        "best_log_loss": result.best_value,
        "excess_pct": 100 * (result.best_value / optimum - 1),
        "excess_pct_at": {n: 100 * (best[n - 1] / optimum - 1) for n in checkpoints},
        "weights": result.weights.round(4).tolist(),
    }


def median_trial_ms(p_true: np.ndarray, sampler: str, trials: int) -> float:
    """Median of Optuna's own per-trial duration (sampling + objective), in-memory storage."""
    study = optuna.create_study(sampler=SAMPLERS[sampler](0))
    study.optimize(lambda trial: objective_neglog(trial, p_true), n_trials=trials)
    return 1000 * statistics.median(trial.duration.total_seconds() for trial in study.trials)


def objective_neglog(trial: optuna.Trial, p_true: np.ndarray) -> float:
    u = np.array([trial.suggest_float(name, 0.0, 1.0) for name in NAMES])
    raw = -np.log(np.maximum(u, np.finfo(float).tiny))
    return log_loss(raw / raw.sum(), p_true)


def objective_stick(trial: optuna.Trial, p_true: np.ndarray) -> float:
    """K−1 parameters, stick-breaking with Beta(1, K−k) inverse CDFs: also uniform on the simplex."""
    models = len(p_true)
    weights, rest = np.zeros(models), 1.0
    for k in range(models - 1):
        u = trial.suggest_float(f"v{k}", 0.0, 1.0)
        weights[k] = rest * (1 - (1 - u) ** (1 / (models - 1 - k)))
        rest -= weights[k]
    weights[-1] = rest
    return log_loss(weights, p_true)


def parametrisations(p_true: np.ndarray, optimum: float, trials: int, seeds: range) -> dict:
    """Plain TPE (no enqueued trials) on -log(u) vs stick-breaking: excess over the optimum per seed."""
    out = {}
    for name, objective in (("neglog_u", objective_neglog), ("stick_breaking", objective_stick)):
        excess = []
        for seed in seeds:
            study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
            study.optimize(lambda trial, objective=objective: objective(trial, p_true), n_trials=trials)
            excess.append(100 * (study.best_value / optimum - 1))
        out[name] = {"excess_pct": excess, "mean_excess_pct": float(np.mean(excess))}
    return out


def honest_gains(probs: np.ndarray, targets: np.ndarray, p_true: np.ndarray, folds: int = 5) -> dict:
    """5-fold cross-fitted gain of each method over uniform (Optuna: TPE, FOLD_TRIALS per fold)."""
    models = len(NAMES)
    fixed = {"uniform": methods.uniform(models), "hand": methods.hand(NAMES, {})}
    fits = {name: (lambda _p, w=weights: w) for name, weights in fixed.items()}
    fits.update(
        greedy=methods.greedy,
        slsqp=methods.slsqp,
        optuna=lambda p: run_study(p, NAMES, trials=FOLD_TRIALS, seed=0).weights,
    )
    scores = crossfit(p_true, probs, targets, fits, fold_indices(targets, folds, seed=0))
    table = {}
    for name, score in scores.items():
        gain, error_gain = score.log_loss_gain, score.error_rate_gain
        table[name] = {
            "cv_log_loss": score.log_loss.mean,
            "cv_log_loss_se": score.log_loss.se,
            "cv_error_rate": score.error_rate.mean,
            "log_loss_gain": gain.mean,
            "log_loss_gain_se": gain.se,
            "error_rate_gain_points": 100 * error_gain.mean,
            "error_rate_gain_se_points": 100 * error_gain.se,
            "beyond_noise": bool(
                gain.mean > 0
                and gain.mean >= MIN_GAIN_SE * gain.se
                and error_gain.mean >= MIN_ERROR_RATE_GAIN
            ),
        }
    return table


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    probs, targets = synthetic()
    p_true = true_class_probs(probs, targets)
    models = len(NAMES)
    slsqp_weights = methods.slsqp(p_true)
    optimum = log_loss(slsqp_weights, p_true)
    in_sample = {
        **{f"single:{name}": np.eye(models)[i] for i, name in enumerate(NAMES)},
        "uniform": methods.uniform(models),
        "hand": methods.hand(NAMES, {}),
        "greedy": methods.greedy(p_true),
        "slsqp": slsqp_weights,
    }
    w = methods.uniform(models)
    results = {
        "machine": f"2-core CPU-only dev machine, no GPU ({platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, optuna {optuna.__version__}); shared with another agent",
        "data": {
            "models": models,
            "rows": len(targets),
            "classes": probs.shape[2],
            "generator": "synthetic()",
        },
        "objective_us": 1e6 * min(timeit.repeat(lambda: log_loss(w, p_true), number=1000, repeat=5)) / 1000,
        "slsqp_ms": 1000 * min(timeit.repeat(lambda: methods.slsqp(p_true), number=3, repeat=3)) / 3,
        "greedy_ms": 1000 * min(timeit.repeat(lambda: methods.greedy(p_true), number=3, repeat=3)) / 3,
        "in_sample": {
            name: {
                "log_loss": log_loss(weights, p_true),
                "error_rate": error_rate(weights, probs, targets),
                "weights": weights.round(4).tolist(),
            }
            for name, weights in in_sample.items()
        },
        "slsqp_optimum": optimum,
        "median_trial_ms": {"tpe": median_trial_ms(p_true, "tpe", 1000)},
        "studies": [study_run(p_true, optimum, "tpe", 1000, seed) for seed in range(3)],
    }
    print(f"objective {results['objective_us']:.1f} µs, SLSQP optimum {optimum:.5f}", flush=True)
    results["studies"] += [study_run(p_true, optimum, "cmaes", 1000, seed) for seed in range(3)]
    results["studies"].append(study_run(p_true, optimum, "gp", 100, 0))
    with tempfile.TemporaryDirectory() as folder:
        results["studies"].append(study_run(p_true, optimum, "tpe", 200, 0, f"sqlite:///{folder}/bench.db"))
    for run in results["studies"]:
        print(
            f"{run['sampler']:6} {run['storage']:6} seed {run['seed']} {run['trials']:5} trials "
            f"{run['wall_s']:6.1f} s ({run['per_trial_ms']:.1f} ms/trial) excess {run['excess_pct']:.3f} % "
            f"at {run['excess_pct_at']}",
            flush=True,
        )
    results["parametrisation_tpe_1000"] = parametrisations(p_true, optimum, 1000, range(3))
    print("parametrisations", results["parametrisation_tpe_1000"], flush=True)
    results["crossfit"] = honest_gains(probs, targets, p_true)
    for name, row in results["crossfit"].items():
        print(
            f"{name:8} cv {row['cv_log_loss']:.4f}"
            f"  gain {row['log_loss_gain']:+.4f} ± {row['log_loss_gain_se']:.4f}"
            f"  error gain {row['error_rate_gain_points']:+.2f} ± {row['error_rate_gain_se_points']:.2f} pts"
            f"  beyond noise: {row['beyond_noise']}"
        )
    atomic_write_json(OUT, results)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
