"""Synthetic run folders for the tune-weights tests: prediction files in the `planner run` contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def informative_and_noise(rows: int = 400, classes: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Model 0 knows the answer (about 85 % right, fairly calibrated); model 1 is Dirichlet noise."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, classes, rows)
    informative = softmax(2.5 * np.eye(classes)[targets] + rng.standard_normal((rows, classes)))
    noise = rng.dirichlet(np.ones(classes), rows)
    return np.stack([informative, noise]), targets


def complementary(rows: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four classes: model 0 is sure and right on classes 0-1 and guesses on 2-3; model 1 the reverse."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 4, rows)
    onehot = np.eye(4)[targets]
    first_half = (targets < 2)[:, None]
    noise = 0.3 * rng.standard_normal((2, rows, 4))
    model0 = softmax(np.where(first_half, 3.0 * onehot, 0.0) + noise[0])
    model1 = softmax(np.where(first_half, 0.0, 3.0 * onehot) + noise[1])
    return np.stack([model0, model1]), targets


def accurate_and_cautious(rows: int = 600, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Four classes where log loss and error rate disagree: the fitted weights win on one, lose on the other.

    Model 0 is right 85 % of the time but gives the true class only 0.05 when wrong; model 1 is right
    70 % of the time and keeps 0.2 on the true class when wrong. Log loss moves weight to the cautious
    model 1, which makes many more errors than the plain average, so the fitted methods' error rate is
    worse than uniform's by far more than noise.
    """
    rng = np.random.default_rng(seed)
    classes = 4
    targets = rng.integers(0, classes, rows)
    other = (targets + rng.integers(1, classes, rows)) % classes
    eye = np.eye(classes)

    def model(accuracy: float, right: float, wrong_true: float, wrong_other: float) -> np.ndarray:
        is_right = rng.random(rows) < accuracy
        when_right = right * eye[targets] + (1 - right) / (classes - 1) * (1 - eye[targets])
        rest = (1 - wrong_true - wrong_other) / (classes - 2)
        when_wrong = wrong_true * eye[targets] + wrong_other * eye[other] + rest * (1 - eye[targets] - eye[other])
        return np.where(is_right[:, None], when_right, when_wrong)

    return np.stack([model(0.85, 0.5, 0.05, 0.5), model(0.7, 0.7, 0.2, 0.45)]), targets


def write_run(
    run_dir: Path,
    names: list[str],
    valid_probs: np.ndarray,
    targets: np.ndarray,
    test_probs: np.ndarray | None = None,
    test_names: list[str] | None = None,
) -> Path:
    """Write ``run_dir/preds/<name>.npz`` per model; held-out names are ``train_images/<label>/v<i>.png``."""
    classes = valid_probs.shape[2]
    vocab = np.array([f"c{k}" for k in range(classes)])
    valid_names = np.array([f"train_images/{vocab[t]}/v{i}.png" for i, t in enumerate(targets)])
    if test_probs is None:
        test_probs = valid_probs[:, :10]
    if test_names is None:
        test_names = [f"t{i}.png" for i in range(test_probs.shape[1])]
    (run_dir / "preds").mkdir(parents=True, exist_ok=True)
    for name, valid, test in zip(names, valid_probs, test_probs, strict=True):
        np.savez(
            run_dir / "preds" / f"{name}.npz",
            valid_probs=valid.astype(np.float32),
            valid_names=valid_names,
            valid_targets=targets,
            test_probs=test.astype(np.float32),
            test_names=np.array(test_names),
            vocab=vocab,
        )
    return run_dir


def rewrite(path: Path, **changes: np.ndarray | None) -> None:
    """Replace (or, with None, drop) arrays of one prediction file."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    for name, value in changes.items():
        if value is None:
            arrays.pop(name)
        else:
            arrays[name] = value
    np.savez(path, **arrays)
