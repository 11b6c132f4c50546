"""One try of one entry: the reference's fastai training, measured, then TTA predictions.

The recipe comes from ``planner.base.recipe`` (the probe builds the same data loaders and learner, so what
it measured is what is trained here). ``fine_tune`` runs unchanged; memory phases and epoch reports
are fastai callbacks passed to it. fastai is imported when a try starts, not with this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from planner.base.predfile import Predictions
from planner.base.recipe import build_learner, make_dataloaders
from planner.base.runfile import EpochRecord, MemoryRecord, Metrics
from planner_trainer.data import label_of
from planner_trainer.memory import make_meter
from planner_trainer.predictions import error_rate, log_loss
from planner_trainer.progress import Reporter
from planner_trainer.saved_model import SavedModel, capture_model
from planner_trainer.try_spec import TrySpec
from planner_trainer.tta import seeded_tta


class NotTrained(Exception):
    """A try that ran but left no usable model (a fit without an optimizer step, or training that
    diverged); the message says why and what to change. A rerun as it is would end the same way."""


@dataclass(frozen=True)
class TrainOutcome:
    """What a successful try produced (``model``: the trained weights and recipe, unless not kept)."""

    predictions: Predictions
    metrics: Metrics
    memory: MemoryRecord
    epochs: list[EpochRecord]
    model: SavedModel | None = None


def train_entry(spec: TrySpec, reporter: Reporter, cbs: Sequence[Any] = ()) -> TrainOutcome:
    """Train one entry as planned and predict the held-out split and the test files with TTA.

    Args:
        spec: the try.
        reporter: receives ``epoch_done`` events.
        cbs: extra fastai callbacks for ``fine_tune`` (an extension point; tests use it).

    Returns:
        Predictions, held-out scores, the measured memory and the epochs.

    Raises:
        torch.OutOfMemoryError: the try ran out of memory (or over ``cpu_memory_limit``); the caller
            retries with more accumulation after leaving its ``except`` block.
    """
    from fastai.callback.progress import ProgressCallback
    from fastai.torch_core import set_seed
    from fastcore.basics import noop

    from planner_trainer.callbacks import CpuThreads, LoaderWait, MemoryPhases, ReportEpochs

    entry, inputs = spec.entry, spec.inputs
    settings, layout, split = inputs.settings, inputs.layout, inputs.split
    set_seed(inputs.seed)
    meter = make_meter(inputs.device, spec.accum, inputs.cpu_memory_limit)
    held_out = set(split.valid)
    items = [name for name in layout.train if name not in held_out] + list(split.valid)
    dls = make_dataloaders(
        items, get_x=lambda name: layout.root / name, get_y=label_of, is_valid=held_out.__contains__,
        item=entry.item, size=entry.size, micro_batch=spec.micro_batch, device=inputs.device,
        vocab=layout.vocab, seed=inputs.seed,
    )
    learn = build_learner(dls, entry.arch, effective_batch_size=inputs.effective_batch_size,
                          pretrained=settings.pretrained, fp16=inputs.device == "cuda",
                          grad_checkpointing=entry.grad_checkpointing)
    learn.remove_cb(ProgressCallback)
    learn.logger = noop
    cpu = inputs.device == "cpu"
    waits = LoaderWait()
    epochs = ReportEpochs(reporter, entry.name, total_epochs=settings.epochs + 1, cpu=cpu, loader=waits)
    threads = [CpuThreads()] if cpu else []
    with meter.measuring(learn.model):
        learn.fine_tune(settings.epochs, settings.lr,
                        cbs=[*threads, MemoryPhases(meter), waits, waits.end, epochs, *cbs])
    check_every_fit_stepped(epochs.records, n_train=len(items) - len(split.valid), spec=spec)

    saved = capture_model(learn, spec) if inputs.save_models else None
    valid_probs, valid_plain, valid_targets = seeded_tta(learn, None, settings.tta_n, settings.tta_beta, inputs.seed)
    check_finite(valid_probs, "held-out", settings.lr)
    targets = np.array([layout.vocab.index(label_of(name)) for name in split.valid], dtype=np.int64)
    if not np.array_equal(valid_targets, targets):
        raise RuntimeError("fastai's held-out order differs from split.json; predictions would be misaligned")
    test_files = [layout.test_path(name) for name in layout.test]
    if test_files:
        test_dl = learn.dls.test_dl(test_files)
        test_probs = seeded_tta(learn, test_dl, settings.tta_n, settings.tta_beta, inputs.seed)[0]
        check_finite(test_probs, "test", settings.lr)  # a NaN row would make tune-weights refuse the whole folder
    else:
        test_probs = np.zeros((0, len(layout.vocab)), dtype=np.float32)
    predictions = Predictions(
        valid_probs=valid_probs, valid_names=np.array(split.valid), valid_targets=targets,
        test_probs=test_probs, test_names=np.array(layout.test, dtype=str), vocab=np.array(layout.vocab),
    )
    metrics = Metrics(
        n_valid=len(targets),
        error_rate=error_rate(valid_probs, targets), log_loss=log_loss(valid_probs, targets),
        error_rate_no_tta=error_rate(valid_plain, targets), log_loss_no_tta=log_loss(valid_plain, targets),
    )
    return TrainOutcome(predictions=predictions, metrics=metrics, memory=meter.record(),
                        epochs=epochs.records, model=saved)



def check_finite(probs: np.ndarray, which: str, lr: float) -> None:
    """Refuse predictions holding NaN or inf: the weights went non-finite (training diverged), and such a
    prediction file would be refused by tune-weights.

    Raises:
        NotTrained: some ``which`` (held-out or test) prediction is not finite.
    """
    bad = int((~np.isfinite(probs)).any(axis=1).sum())
    if bad:
        raise NotTrained(f"training diverged: {bad} of {len(probs)} {which} predictions are NaN or infinite "
                         f"(lr {lr:g}); train with a lower --lr into another --out folder")


def check_every_fit_stepped(epochs: list[EpochRecord], n_train: int, spec: TrySpec) -> None:
    """Refuse a try in which one of ``fine_tune``'s fits (frozen, unfrozen) updated no weight.

    `planner run` refuses such a split before training (``planner.base.trainsize``); this is the
    evidence that it held, so that an untrained model never reaches the predictions.

    Raises:
        NotTrained: a fit made no optimizer step.
    """
    for phase in ("frozen", "unfrozen"):
        steps = sum(epoch.optimizer_steps or 0 for epoch in epochs if epoch.phase == phase)
        if steps == 0:
            raise NotTrained(
                f"the {phase} fit made no optimizer step ({n_train} training images, accum {spec.accum} × "
                f"micro-batch {spec.micro_batch} = effective batch {spec.inputs.effective_batch_size}): the model "
                "was not trained; probe again with a smaller --effective-bs, or add training images"
            )
