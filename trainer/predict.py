"""`planner predict`: the run's saved models on new images, combined with the tuned ensemble weights.

Each entry's learner is rebuilt from its recipe and checked weights (``planner_trainer.saved_model``), predicts
the images with the run's transforms and, by default, the run's seeded TTA at the run's batch size
(TTA draws its crops per batch, so those make the draws, and so the probabilities, the run's), and is
released before the next. The probabilities are averaged with the given weights (weights.json's, read
by the ensemble stage) or uniformly. Given weights must weigh every finished entry with a saved model:
weights.json tuned before an entry was trained would leave its model out unseen, so predict refuses
it (rerun tune-weights, or average uniformly). Unreadable images, broken links among them, are listed
and left out; the rest are predicted.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from planner.base.atomic import atomic_write_text
from planner.base.errors import UserError
from planner.base.images import IMAGE_SUFFIXES, images_in, is_broken_link
from planner.base.paths import resolved_folder
from planner.base.pixels import decode_problem
from planner.base.runfile import load_run
from planner.base.threads import torch_threads_kept
from planner_trainer.options import PredictOptions
from planner_trainer.rerun import retrain_command

Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``: batches done of an entry's passes."""


@dataclass(frozen=True)
class Unreadable:
    """An image that could not be read, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class PredictResult:
    """The ensemble's predictions for the readable images, in input order.

    Attributes:
        names: each image's name in the CSV (its file name; the path given when names repeat).
        paths: the image files.
        vocab: the class names (probability columns).
        probs: (images × classes) combined probabilities.
        entry_probs: each entry's own probabilities, by entry name.
        weights: the weight of each entry used.
        weights_source: "weights.json" or "uniform".
        unreadable: images left out.
        device: where it ran.
    """

    names: tuple[str, ...]
    paths: tuple[Path, ...]
    vocab: tuple[str, ...]
    probs: np.ndarray
    entry_probs: dict[str, np.ndarray]
    weights: dict[str, float]
    weights_source: str
    unreadable: tuple[Unreadable, ...]
    device: str

    @property
    def labels(self) -> list[str]:
        """The most probable class of each image."""
        return [self.vocab[i] for i in self.probs.argmax(axis=1)]


def predict(run_dir: str | Path, images: str | Path | Sequence[str | Path], weights: Mapping[str, float] | None = None,
            options: PredictOptions = PredictOptions(), progress: Progress | None = None) -> PredictResult:
    """Predict images (files or folders) with a run's saved models and ensemble weights.

    Args:
        run_dir: the run folder written by `planner run`.
        images: image files and folders (a folder's images, not its subfolders, in name order), or one.
        weights: weight per entry (weights.json's, as ``load_weights`` reads it), covering every finished
            entry with a saved model; None, or ``options.uniform``: every such entry, uniformly.
        options: see :class:`PredictOptions`.
        progress: called after each batch.

    Returns:
        The combined and per-entry probabilities, and the images left out.

    Raises:
        UserError: not a run folder, no saved model, weights that leave out a saved model or weigh an
            entry without one, a damaged model file, a missing path, no readable image.
    """
    import torch

    from planner.base.recipe import prepare_device
    from planner_trainer.memory import release_memory
    from planner_trainer.saved_model import build_from_recipe, read_saved_model

    run_dir = resolved_folder(run_dir, "run folder")
    if weights is not None and not isinstance(weights, Mapping):
        raise UserError(f"weights must map each entry's name to its weight, e.g. load_weights({str(run_dir)!r}), "
                        f"or be None for equal weights; got {type(weights).__name__}")
    uniform = weights is None or options.uniform
    chosen = _entry_weights(run_dir, None if uniform else weights)
    files = list_images([images] if isinstance(images, str | os.PathLike) else images)
    reasons = {path: _unreadable(path) for path in files}
    readable = [path for path, reason in reasons.items() if reason is None]
    unreadable = tuple(Unreadable(path, reason) for path, reason in reasons.items() if reason is not None)
    if not readable:
        raise UserError(f"none of the {len(files)} image(s) can be read (first: {unreadable[0].path}: "
                        f"{unreadable[0].reason})")
    device = _device(options.device, torch.cuda.is_available())
    entry_probs: dict[str, np.ndarray] = {}
    vocab: tuple[str, ...] | None = None
    with torch_threads_kept():  # on the CPU prepare_device sets torch's threads; a notebook gets its own back
        prepare_device(device)
        for name in chosen:
            recipe, state_dict = read_saved_model(run_dir, name)
            if vocab is not None and tuple(recipe.vocab) != vocab:
                raise UserError(f"entry {name} has other classes than the run's other entries: {recipe.vocab}")
            vocab = tuple(recipe.vocab)
            learn = build_from_recipe(recipe, state_dict, device, options.batch_size)
            entry_probs[name] = _predict_entry(learn, readable, recipe, options.tta, name, progress)
            del learn, state_dict
            release_memory(device)
    assert vocab is not None
    stacked = np.stack([entry_probs[name] for name in chosen]).astype(np.float64)
    mixed = np.tensordot(np.array(list(chosen.values()), dtype=np.float64), stacked, axes=1)
    return PredictResult(
        names=_names(readable), paths=tuple(readable), vocab=vocab, probs=mixed, entry_probs=entry_probs,
        weights=dict(chosen), weights_source="uniform" if uniform else "weights.json",
        unreadable=unreadable, device=device,
    )


def _predict_entry(learn: Any, files: list[Path], recipe: Any, tta: bool, name: str,
                   progress: Progress | None) -> np.ndarray:
    """One learner's probabilities: the run's seeded TTA, or the plain pass."""
    from planner_trainer.tta import plain_predictions, seeded_tta

    dl = learn.dls.test_dl(files)
    passes = recipe.tta.n + 1 if tta else 1
    counter = _batch_counter(name, passes * len(dl), progress)
    learn.add_cb(counter)
    try:
        if tta:
            return seeded_tta(learn, dl, recipe.tta.n, recipe.tta.beta, recipe.tta.seed)[0]
        return plain_predictions(learn, dl)
    finally:
        learn.remove_cb(counter)


def _batch_counter(name: str, total: int, progress: Progress | None) -> Any:
    """A fastai callback that reports every predicted batch (it touches nothing the predictions use)."""
    from fastai.callback.core import Callback

    class BatchCounter(Callback):
        order = 100

        def __init__(self) -> None:
            self.done = 0

        def after_batch(self) -> None:
            self.done += 1
            if progress is not None:
                progress(name, self.done, total)

    return BatchCounter()


def _entry_weights(run_dir: Path, weights: Mapping[str, float] | None) -> dict[str, float]:
    """The entries to predict with and their weights: the given ones (zero weights left out), else
    every finished entry with a saved model, uniformly.

    Given weights must name every finished entry with a saved model (a zero weight names it too): an
    entry trained after tune-weights would otherwise be left out of the ensemble without a word.

    Raises:
        UserError: no run.json; no entry has a saved model; the weights weigh an entry not in run.json or
            one without a saved model, or leave out an entry with one.
    """
    run = load_run(run_dir)
    if run is None:
        raise UserError(f"{run_dir} has no run.json: pass a run folder written by `planner run`")
    saved = [name for name, record in sorted(run.entries.items())
             if record.status == "finished" and record.model is not None]
    if not saved:
        raise UserError(f"{run_dir} has no saved model (trained with --no-save-models): train its entries again, "
                        f"keeping their models, with {retrain_command(run, run_dir)}")
    fixes = (f"rerun `planner tune-weights {run_dir}` to weigh every entry, or pass --uniform to average every "
             "saved model equally")
    if weights is not None:
        chosen = {name: float(weight) for name, weight in weights.items() if weight > 0}
        missing = [name for name in chosen if name not in run.entries]
        if missing:
            raise UserError(f"weights.json weighs entries not in {run_dir}/run.json: {', '.join(missing)}; {fixes}")
        unsaved = [name for name in chosen if name not in saved]
        if unsaved:
            raise UserError(f"weights.json weighs entries with no saved model in {run_dir}: {', '.join(unsaved)} "
                            "(not finished, or trained with --no-save-models): retrain them with "
                            f"{retrain_command(run, run_dir)}, or pass --uniform to average the saved models equally")
        left_out = [name for name in saved if name not in weights]
        if left_out:
            raise UserError(f"weights.json leaves out {', '.join(left_out)} (finished in {run_dir} after "
                            f"tune-weights ran): {fixes}")
        return chosen
    return {name: 1 / len(saved) for name in saved}


def list_images(images: Sequence[str | Path]) -> list[Path]:
    """Image files, in the order given, each once; a folder's image files (by extension) sorted by name.
    Symbolic links are kept as the links (a link is named by its own name, as `planner run` names test
    images; a broken one is reported with the unreadable images).

    Raises:
        UserError: a path does not exist, or there is no image at all.
    """
    files: list[Path] = []
    for item in images:
        path = Path(item).expanduser()
        if path.is_dir():
            files.extend(images_in(path, broken_links=True))
        elif path.is_file() or is_broken_link(path):
            files.append(path)
        else:
            raise UserError(f"{path} not found: pass image files or folders of images")
    files = list(dict.fromkeys(Path(os.path.abspath(path)) for path in files))  # a link keeps its own name
    if not files:
        raise UserError(f"no image file in {', '.join(map(str, images)) or 'an empty list'}: pass image files "
                        f"({' '.join(sorted(IMAGE_SUFFIXES))}) or folders that hold them directly (their "
                        "sub-folders are not read)")
    return files


def _unreadable(path: Path) -> str | None:
    """Why the image cannot be read as the models read it (a broken link, or ``decode_problem``), or None."""
    if is_broken_link(path):
        return f"a broken symbolic link: its target {os.readlink(path)} does not exist"
    return decode_problem(path)


def _names(paths: list[Path]) -> tuple[str, ...]:
    """File names, as sample_submission.csv names test images; full paths when two share a name."""
    names = [path.name for path in paths]
    if len(set(names)) == len(names):
        return tuple(names)
    return tuple(str(path) for path in paths)


def _device(requested: str, available: bool) -> str:
    if requested == "cuda" and not available:
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu")
    if requested not in ("auto", "cuda", "cpu"):
        raise UserError(f"--device {requested!r} must be auto, cuda or cpu")
    return "cuda" if requested == "cuda" or (requested == "auto" and available) else "cpu"


def write_predictions_csv(path: str | Path, result: PredictResult, probs: bool = False) -> Path:
    """Write ``image_id,label`` per image (and with ``probs`` one column per class), atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image_id", "label", *(result.vocab if probs else ())])
    for name, label, row in zip(result.names, result.labels, result.probs, strict=True):
        writer.writerow([name, label, *(f"{p:.9g}" for p in row)] if probs else [name, label])
    return atomic_write_text(path, buffer.getvalue())
