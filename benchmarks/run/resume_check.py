"""Cost of checking a finished entry's files before a rerun keeps it (``planner_trainer.run.damaged_files``):
the prediction file's arrays loaded, the saved weights' size and safetensors header, the recipe validated;
against hashing the weights (SHA-256, what loading a model checks), the check a rerun does not make.

Arms, on one entry of a reference-sized run: a prediction file of Paddy Doctor's shape (2,775 held-out and
3,469 test rows × 10 classes) and a weights file of ``--weights-mib`` (convnext_large's fp32 weights are
about 750 MiB), written to a temporary folder (so read from the page cache: a cold disk adds its read time
to the hash only, the check reads a few kilobytes of the weights). Usage::

    python -m benchmarks.run.resume_check [--weights-mib 750] [--reps 5] [--out benchmarks/results/resume_check.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import timeit
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from benchmarks.paths import RESULTS
from planner.base.predfile import Predictions, predictions_path, save_predictions
from planner.base.runfile import SavedModelRecord
from planner_trainer.run import damaged_files
from planner_trainer.saved_model import ModelRecipe, recipe_path, weights_path

ENTRY = "convnext_large-crop640-224"
VOCAB = [f"class{k}" for k in range(10)]


def write_entry(run_dir: Path, weights_mib: int) -> SavedModelRecord:
    """A prediction file, weights of ``weights_mib`` in 64 MiB tensors, and a recipe; run.json's model record."""
    rng = np.random.default_rng(0)

    def probs(rows: int) -> np.ndarray:
        values = rng.random((rows, len(VOCAB)), dtype=np.float32)
        return values / values.sum(axis=1, keepdims=True)

    save_predictions(predictions_path(run_dir, ENTRY), Predictions(
        valid_probs=probs(2775), valid_names=np.array([f"train_images/{VOCAB[i % 10]}/{i}.jpg" for i in range(2775)]),
        valid_targets=np.arange(2775) % 10, test_probs=probs(3469),
        test_names=np.array([f"{i}.jpg" for i in range(3469)]), vocab=np.array(VOCAB)))
    weights = weights_path(run_dir, ENTRY)
    weights.parent.mkdir(parents=True, exist_ok=True)
    chunk = 64 * 2**20 // 4
    save_file({f"layer{i}": np.full(chunk, i, dtype=np.float32) for i in range(weights_mib // 64)}, str(weights))
    recipe = {"entry": ENTRY, "arch": "convnext_large", "item": {"resize": [640, 480], "method": "crop"},
              "batch": {"size": [224, 224], "min_scale": 0.75}, "normalize": None, "vocab": VOCAB,
              "precision": "fp16", "trained_on": "cuda", "grad_checkpointing": False,
              "tta": {"n": 4, "beta": 0.25, "seed": 42, "batch_size": 32}, "parameters": 196_000_000,
              "versions": {}}
    recipe_path(run_dir, ENTRY).write_text(json.dumps(ModelRecipe.model_validate(recipe).to_dict()))
    data = weights.read_bytes()
    return SavedModelRecord(weights=f"models/{ENTRY}.safetensors", recipe=f"models/{ENTRY}.json", bytes=len(data),
                            sha256=hashlib.sha256(data).hexdigest())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-mib", type=int, default=750)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "resume_check.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder)
        model = write_entry(run_dir, args.weights_mib)
        assert damaged_files(run_dir, ENTRY, model) is None
        check = timeit.repeat(lambda: damaged_files(run_dir, ENTRY, model), number=1, repeat=args.reps)
        sha = timeit.repeat(lambda: hashlib.sha256(weights_path(run_dir, ENTRY).read_bytes()).hexdigest(), number=1,
                            repeat=args.reps)
    result = {"weights_mib": args.weights_mib, "reps": args.reps, "check_seconds": check, "sha256_seconds": sha,
              "check_median_ms": statistics.median(check) * 1e3, "sha256_median_ms": statistics.median(sha) * 1e3}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: value for key, value in result.items() if "median" in key}))


if __name__ == "__main__":
    main()
