"""Test predictions made again from saved models, for a run whose test set changed after training.

The held-out predictions stay (the training data did not change, so neither did the models nor the
split); the test probabilities are computed as the run computed them: the saved weights, the run's
transforms, its seeded TTA at its batch size (``planner_trainer.saved_model``, ``planner_trainer.tta``), so that the
file is what training on this test set would have written.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from planner.base.predfile import Predictions, predictions_path, read_prediction_arrays, save_predictions
from planner_trainer.data import DataLayout
from planner_trainer.memory import release_memory
from planner_trainer.saved_model import build_from_recipe, read_saved_model
from planner_trainer.tta import seeded_tta


def repredict_test(run_dir: Path, name: str, layout: DataLayout, device: str) -> None:
    """Replace entry ``name``'s test predictions with its saved model's on ``layout``'s test files.

    Raises:
        UserError: the saved model or the prediction file is missing or damaged (named).
    """
    recipe, state_dict = read_saved_model(run_dir, name)
    path = predictions_path(run_dir, name)
    saved = Predictions(**read_prediction_arrays(path))
    if layout.test:
        learn = build_from_recipe(recipe, state_dict, device)
        test_dl = learn.dls.test_dl([layout.test_path(file) for file in layout.test])
        test_probs = seeded_tta(learn, test_dl, recipe.tta.n, recipe.tta.beta, recipe.tta.seed)[0]
        del learn, test_dl
        release_memory(device)
    else:
        test_probs = np.zeros((0, len(recipe.vocab)), dtype=np.float32)
    save_predictions(path, replace(saved, test_probs=test_probs, test_names=np.array(layout.test, dtype=str)))
