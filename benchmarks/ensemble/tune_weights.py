"""Benchmark tune-weights on realistic synthetic predictions: 6 models × 2,000 held-out rows × 10 classes.

Measures the objective's cost, Optuna's time per trial and for 1,000 trials (in memory), how close
each sampler gets to the convex optimum (scipy SLSQP), the same with SQLite storage, the -log(u)
parametrisation against stick-breaking, and the cross-fitted gain of every method over the plain
average. Writes ``benchmarks/results/tune_weights.json`` and prints a summary.

Run from the repository root: ``python -m benchmarks.ensemble.tune_weights`` (about 4 minutes on 2 cores).
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
import timeit

import numpy as np
import optuna

from benchmarks.paths import RESULTS
from planner.base.atomic import atomic_write_json
from planner.ensemble import methods
from planner.ensemble.crossfit import crossfit, fold_indices
from planner.ensemble.objectives import error_rate, log_loss, true_class_probs
from planner.ensemble.study import SAMPLERS, run_study
from planner.ensemble.tune import FOLD_TRIALS, MIN_ERROR_RATE_GAIN, MIN_GAIN_SE

NAMES = ("convnext_small", "vit_small", "swin_tiny", "resnet26d", "vit_base", "regnety_040")
OUT = RESULTS / "tune_weights.json"


# name → (signal, temperature) per model: "mixed" has models of different quality and calibration
# (the optimum keeps a few of them), "similar" six models alike (the optimum is interior and barely
# beats the plain average: the case the noise rule is for).
SCENARIOS = {
    "mixed": ((2.0, 2.6, 2.8, 3.0, 3.0, 3.2), (0.6, 1.0, 1.4, 0.9, 1.1, 1.0)),
    "similar": ((2.7,) * 6, (1.0,) * 6),
}


def synthetic(
    signal: tuple[float, ...],
    temperature: tuple[float, ...],
    rows: int = 2000,
    classes: int = 10,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Dirichlet-noised softmax of logits correlated with the truth.

    Each model's logits are ``signal × onehot(target) + 0.8 × shared noise + 0.6 × own noise``: the
    shared part makes errors correlated across models (hard images), ``signal`` sets the quality and
    the temperature the calibration (over- or under-confident). The softmax is then resampled from
    a Dirichlet around it (concentration 300), as TTA and finite training add noise.
    """
    rng = np.random.default_rng(seed)
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
        "best_log_loss": float(result.best_value),
        "excess_pct": 100 * (result.best_value / optimum - 1),
        "excess_pct_at": {n: float(100 * (best[n - 1] / optimum - 1)) for n in checkpoints},
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
            excess.append(float(100 * (study.best_value / optimum - 1)))
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


def scenario(name: str, full: bool) -> dict:
    """Every measurement on one scenario; ``full`` adds GP, SQLite and the per-trial median."""
    probs, targets = synthetic(*SCENARIOS[name])
    p_true = true_class_probs(probs, targets)
    models = len(NAMES)
    slsqp_weights = methods.slsqp(p_true)
    optimum = log_loss(slsqp_weights, p_true)
    in_sample = {
        **{f"single:{entry}": np.eye(models)[i] for i, entry in enumerate(NAMES)},
        "uniform": methods.uniform(models),
        "hand": methods.hand(NAMES, {}),
        "greedy": methods.greedy(p_true),
        "slsqp": slsqp_weights,
    }
    out = {
        "in_sample": {
            method: {
                "log_loss": log_loss(weights, p_true),
                "error_rate": error_rate(weights, probs, targets),
                "weights": weights.round(4).tolist(),
            }
            for method, weights in in_sample.items()
        },
        "slsqp_optimum": optimum,
        "studies": [
            study_run(p_true, optimum, sampler, 1000, seed)
            for sampler in ("tpe", "cmaes")
            for seed in range(3)
        ],
    }
    if full:
        w = methods.uniform(models)
        out["objective_us"] = (
            1e6 * min(timeit.repeat(lambda: log_loss(w, p_true), number=1000, repeat=5)) / 1000
        )
        out["slsqp_ms"] = 1000 * min(timeit.repeat(lambda: methods.slsqp(p_true), number=3, repeat=3)) / 3
        out["greedy_ms"] = 1000 * min(timeit.repeat(lambda: methods.greedy(p_true), number=3, repeat=3)) / 3
        out["median_trial_ms_tpe_1000"] = median_trial_ms(p_true, "tpe", 1000)
        out["studies"].append(study_run(p_true, optimum, "gp", 100, 0))
        with tempfile.TemporaryDirectory() as folder:
            out["studies"].append(study_run(p_true, optimum, "tpe", 200, 0, f"sqlite:///{folder}/bench.db"))
    out["parametrisation_tpe_1000"] = parametrisations(p_true, optimum, 1000, range(3))
    out["crossfit"] = honest_gains(probs, targets, p_true)
    return out


def report(name: str, out: dict) -> None:
    print(
        f"== {name}: SLSQP optimum {out['slsqp_optimum']:.5f}, "
        f"uniform {out['in_sample']['uniform']['log_loss']:.5f}"
    )
    for key in ("objective_us", "slsqp_ms", "greedy_ms", "median_trial_ms_tpe_1000"):
        if key in out:
            print(f"{key} {out[key]:.2f}")
    for run in out["studies"]:
        at = ", ".join(f"{n}: {excess:.3f}" for n, excess in run["excess_pct_at"].items())
        print(
            f"{run['sampler']:6} {run['storage']:6} seed {run['seed']} {run['trials']:5} trials "
            f"{run['wall_s']:6.1f} s ({run['per_trial_ms']:.1f} ms/trial) "
            f"excess {run['excess_pct']:.3f} % ({at})"
        )
    for param, row in out["parametrisation_tpe_1000"].items():
        print(f"{param}: excess % per seed {[round(x, 3) for x in row['excess_pct']]}")
    for method, row in out["crossfit"].items():
        print(
            f"{method:8} cv {row['cv_log_loss']:.4f}"
            f"  gain {row['log_loss_gain']:+.4f} ± {row['log_loss_gain_se']:.4f}"
            f"  error gain {row['error_rate_gain_points']:+.2f} ± {row['error_rate_gain_se_points']:.2f} pts"
            f"  beyond noise: {row['beyond_noise']}"
        )


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results = {
        "machine": f"2-core CPU-only dev machine, no GPU ({platform.machine()}, "
        f"Python {platform.python_version()}, numpy {np.__version__}, optuna {optuna.__version__}); "
        "shared with another agent's tests",
        "data": {"models": len(NAMES), "rows": 2000, "classes": 10, "scenarios": SCENARIOS},
    }
    for index, name in enumerate(SCENARIOS):
        results[name] = scenario(name, full=index == 0)
        report(name, results[name])
    atomic_write_json(OUT, results)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
