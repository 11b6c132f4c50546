"""The wait for batches is measured without changing training: real fastai, timm's tiny ``test_resnet``,
real image files. (Timing the batch transforms wraps the loader's; fastai sets a pipeline up for each
pass, training or validation, and a wrapper in its place would have trained without augmentation.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastai.callback.progress import ProgressCallback
from fastai.torch_core import set_seed

from planner.base.plan import ItemTransform
from planner.base.recipe import build_learner, make_dataloaders
from planner_trainer.callbacks import LoaderWait
from planner_trainer.data import label_of, scan_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fit_once(folder: Path, cbs: list) -> tuple[list[float], object]:
    """One seeded epoch of fine_tune's unfrozen fit; the recorded losses and the learner."""
    layout = scan_data(folder)
    set_seed(0)
    valid = set(layout.train[::4])
    dls = make_dataloaders(layout.train, get_x=lambda name: layout.root / name, get_y=label_of,
                           is_valid=valid.__contains__, item=ItemTransform(resize=40), size=(32, 32),
                           micro_batch=4, device="cpu", vocab=layout.vocab, seed=0)
    learn = build_learner(dls, "test_resnet", effective_batch_size=4, pretrained=False, fp16=False)
    learn.remove_cb(ProgressCallback)
    learn.fit(1, 1e-3, cbs=cbs)
    return [float(value) for value in learn.recorder.values[-1]], learn


def test_measuring_the_wait_leaves_training_unchanged(image_folder: Path) -> None:
    plain, _ = fit_once(image_folder, [])
    waits = LoaderWait()
    measured, learn = fit_once(image_folder, [waits, waits.end])
    assert measured == plain  # the same augmentation, batches and weights: identical losses
    assert waits.seconds > 0  # the epoch's training and validation loops waited for their batches
    assert {type(loader.after_batch).__name__ for loader in (learn.dls.train, learn.dls.valid)} == {"Pipeline"}
