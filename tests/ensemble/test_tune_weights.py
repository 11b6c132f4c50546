"""tune-weights on synthetic predictions with known structure: real Optuna, real scipy, no mocks."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from run_data import plan_entry, write_plan
from tune_weights_data import complementary, informative_and_noise, rewrite, softmax, write_run

from planner.base.errors import UserError
from planner.base.runfile import RunFile, RunSettings, now, save_run
from planner.ensemble import methods
from planner.ensemble.objectives import error_rate, log_loss, true_class_probs
from planner.ensemble.options import TuneOptions
from planner.ensemble.record import load_weights
from planner.ensemble.study import run_study
from planner.ensemble.tune import tune_weights


def fitted(probs: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    p_true = true_class_probs(probs, targets)
    names = tuple(f"m{i}" for i in range(len(probs)))
    return {
        "slsqp": methods.slsqp(p_true),
        "greedy": methods.greedy(p_true),
        "optuna": run_study(p_true, names, trials=60, seed=0).weights,
    }


def test_informative_model_gets_the_weight_not_the_noise() -> None:
    probs, targets = informative_and_noise()
    for name, weights in fitted(probs, targets).items():
        assert weights.sum() == pytest.approx(1.0)
        assert weights[0] > 0.9, (name, weights)


def test_complementary_models_share_the_weight_and_the_mix_beats_each() -> None:
    probs, targets = complementary()
    p_true = true_class_probs(probs, targets)
    alone = [log_loss(np.eye(2)[i], p_true) for i in range(2)]
    for name, weights in fitted(probs, targets).items():
        assert weights[0] == pytest.approx(0.5, abs=0.1), (name, weights)
        assert log_loss(weights, p_true) < min(alone) - 0.1
        singles = [error_rate(np.eye(2)[i], probs, targets) for i in range(2)]
        assert error_rate(weights, probs, targets) <= min(singles)


def test_slsqp_is_the_convex_optimum_and_greedy_never_beats_it() -> None:
    probs, targets = complementary(seed=3)
    p_true = true_class_probs(probs, targets)
    best = log_loss(methods.slsqp(p_true), p_true)
    grid = np.linspace(0, 1, 201)
    assert best <= min(log_loss(np.array([w, 1 - w]), p_true) for w in grid) + 1e-9
    assert best <= log_loss(methods.greedy(p_true), p_true) + 1e-12


def test_hand_weights_follow_the_reference_rule_and_refuse_unknown_names() -> None:
    names = ("convnext_small", "vit_small", "swin")
    assert methods.hand(names, {}) == pytest.approx([0.25, 0.5, 0.25])
    assert methods.hand(names, {"swin": 5.0}) == pytest.approx([1 / 8, 2 / 8, 5 / 8])
    with pytest.raises(UserError, match="unknown"):
        methods.hand(names, {"resnet": 1.0})


def test_tune_writes_weights_submission_and_png(tmp_path) -> None:
    probs, targets = informative_and_noise(rows=300)
    write_run(tmp_path, ["good", "noise"], probs, targets)
    result = tune_weights(TuneOptions(run_dir=tmp_path, trials=15, folds=3))
    record = json.loads((tmp_path / "weights.json").read_text())
    assert record["version"] == 1
    assert sum(record["weights"].values()) == pytest.approx(1.0)
    assert record["method"] == result.chosen != "uniform"  # a real gain: the noise model costs a lot
    assert record["weights"]["good"] > 0.9
    assert list(record["methods"]) == [
        *("single:good", "single:noise"),
        *("uniform", "hand", "greedy", "slsqp", "optuna"),
    ]
    assert record["methods"]["optuna"]["crossfit"]["log_loss_gain"]["mean"] > 0
    assert record["study"]["n_trials"] == 15
    assert record["study"]["storage"].startswith("sqlite:///")
    assert (tmp_path / "weights.png").read_bytes().startswith(b"\x89PNG")
    with (tmp_path / "submission.csv").open() as f:
        assert next(csv.reader(f)) == ["image_id", "label"]


def test_gain_within_noise_keeps_the_plain_average_unless_forced(tmp_path) -> None:
    probs, targets = complementary(rows=300)
    write_run(tmp_path, ["a", "b"], probs, targets)
    result = tune_weights(TuneOptions(run_dir=tmp_path, trials=10, folds=3))
    assert result.chosen == "uniform"
    assert "within noise" in result.reason
    forced = tune_weights(TuneOptions(run_dir=tmp_path, trials=10, folds=3, force_weights=True))
    assert forced.chosen != "uniform"
    assert "forced" in forced.reason


def test_submission_rows_are_matched_by_name_not_position(tmp_path) -> None:
    probs, targets = informative_and_noise(rows=200)
    classes = probs.shape[2]
    # Test file t<k>.png is class k % classes for both models; predictions are written in shuffled order.
    order = np.random.default_rng(1).permutation(12)
    test_probs = np.stack([softmax(6.0 * np.eye(classes)[order % classes])] * 2)
    write_run(tmp_path / "run", ["a", "b"], probs, targets, test_probs, [f"t{k}.png" for k in order])
    data = tmp_path / "data"
    data.mkdir()
    listed = "".join(f"t{k}.png,x\n" for k in range(12))
    (data / "sample_submission.csv").write_text("image_id,label\n" + listed)
    save_run(RunFile(data=str(data), plan=str(tmp_path / "plan.json"), effective_batch_size=8, budget_bytes=2**30,
                     settings=RunSettings(epochs=1, lr=0.01, pretrained=False), created=now(), updated=now()),
             tmp_path / "run")  # the run folder's record names the data folder
    tune_weights(TuneOptions(run_dir=tmp_path / "run", trials=5, folds=2))
    with (tmp_path / "run" / "submission.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image_id", "label"]
    assert rows[1:] == [[f"t{k}.png", f"c{k % classes}"] for k in range(12)]


def test_sample_listing_an_unpredicted_test_file_is_refused_before_fitting(tmp_path) -> None:
    probs, targets = informative_and_noise(rows=100)
    write_run(tmp_path, ["a", "b"], probs, targets)
    (tmp_path / "sample_submission.csv").write_text("image_id,label\nt0.png,x\nnot_predicted.png,x\n")
    with pytest.raises(UserError, match=r"not_predicted\.png"):
        tune_weights(TuneOptions(run_dir=tmp_path, data=tmp_path, trials=5))
    assert not (tmp_path / "optuna.db").exists()


def test_study_resumes_from_sqlite_with_the_trials_it_had(tmp_path) -> None:
    probs, targets = informative_and_noise(rows=200)
    write_run(tmp_path, ["a", "b"], probs, targets)
    first = tune_weights(TuneOptions(run_dir=tmp_path, trials=20, folds=2))
    assert (first.study.completed, first.study.ran) == (20, 20)
    second = tune_weights(TuneOptions(run_dir=tmp_path, trials=30, folds=2))
    assert (second.study.completed, second.study.ran) == (30, 10)
    assert second.study.best_value <= first.study.best_value
    record = json.loads((tmp_path / "weights.json").read_text())
    assert (record["study"]["n_trials"], record["study"]["ran"]) == (30, 10)
    again = tune_weights(TuneOptions(run_dir=tmp_path, trials=30, folds=2))
    assert (again.study.completed, again.study.ran) == (30, 0)


def test_a_named_study_is_refused_on_other_predictions(tmp_path) -> None:
    probs, targets = informative_and_noise(rows=200)
    write_run(tmp_path, ["a", "b"], probs, targets)
    tune_weights(TuneOptions(run_dir=tmp_path, trials=5, folds=2, study="mine"))
    other, _ = informative_and_noise(rows=200, seed=7)
    write_run(tmp_path, ["a", "b"], other, targets)
    with pytest.raises(UserError, match=r"'mine' .* other predictions .*another --study name"):
        tune_weights(TuneOptions(run_dir=tmp_path, trials=10, folds=2, study="mine"))
    fresh = tune_weights(TuneOptions(run_dir=tmp_path, trials=5, folds=2, study="second"))
    assert fresh.study.completed == 5


def test_an_entry_added_after_tuning_gets_its_own_default_study_which_resumes(tmp_path) -> None:
    """`planner predict` says to rerun tune-weights once an entry was added: that rerun must work."""
    probs, targets = informative_and_noise(rows=200)
    write_run(tmp_path, ["a", "b"], probs, targets)
    first = tune_weights(TuneOptions(run_dir=tmp_path, trials=6, folds=2))
    assert first.study.study_name == "tune-weights"
    third, _ = informative_and_noise(rows=200, seed=3)
    write_run(tmp_path, ["a", "b", "c"], np.concatenate([probs, third[:1]]), targets)
    added = tune_weights(TuneOptions(run_dir=tmp_path, trials=6, folds=2))
    assert added.study.study_name.startswith("tune-weights-") and (added.study.completed, added.study.ran) == (6, 6)
    assert set(added.names) == {"a", "b", "c"}
    again = tune_weights(TuneOptions(run_dir=tmp_path, trials=8, folds=2))
    assert (again.study.study_name, again.study.completed, again.study.ran) == (added.study.study_name, 8, 2)
    record = json.loads((tmp_path / "weights.json").read_text())
    assert record["study"]["name"] == added.study.study_name and set(record["weights"]) == {"a", "b", "c"}


@pytest.mark.parametrize(("bad", "message"), [
    ({"sampler": "random"}, "unknown sampler 'random'; choose one of tpe, cmaes, gp"),
    ({"trials": 0}, "--trials must be at least 1, got 0"),
    ({"folds": 1}, "--folds must be at least 2, got 1"),
])
def test_tune_options_refuse_bad_values_before_any_work(bad: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        TuneOptions(**bad)


def test_the_runs_entries_without_predictions_are_named_with_their_status(tmp_path, image_folder, planner_cli) -> None:
    """A skipped (or failed) entry is left out of the weights, and the result says so."""
    misfit = plan_entry("resnet18").model_copy(update={"fits": False})
    skipped = planner_cli("run", write_plan(tmp_path / "plan.json", [misfit]), "--out", tmp_path / "run",
                          "--data", image_folder, "--device", "cpu")
    assert skipped.returncode == 3, skipped.stderr
    probs, targets = informative_and_noise(rows=60)
    write_run(tmp_path / "run", ["a", "b"], probs, targets)
    result = tune_weights(TuneOptions(run_dir=tmp_path / "run", data=tmp_path, trials=3, folds=2))
    assert result.names == ("a", "b") and result.left_out == (f"{misfit.name} (skipped)",)


def test_weights_of_an_entry_trained_again_since_are_refused_and_test_repredictions_are_not(tmp_path) -> None:
    """weights.json remembers each entry's held-out rows: after a retrain (new data, new split) the weights
    and submission.csv are the old models'; new test images predicted again leave the weights valid."""
    probs, targets = informative_and_noise(rows=60)
    write_run(tmp_path, ["a", "b"], probs, targets)
    tune_weights(TuneOptions(run_dir=tmp_path, trials=3, folds=2))
    assert set(load_weights(tmp_path)) == {"a", "b"}
    rewrite(tmp_path / "preds" / "b.npz", test_probs=probs[1, :4].astype(np.float32), test_names=np.array(
        [f"new{i}.png" for i in range(4)]))
    assert set(load_weights(tmp_path)) == {"a", "b"}
    retrained, _ = informative_and_noise(rows=60, seed=5)
    rewrite(tmp_path / "preds" / "b.npz", valid_probs=retrained[0].astype(np.float32))
    with pytest.raises(UserError, match=r"other held-out predictions of b \(trained again .*--uniform"):
        load_weights(tmp_path)
