"""Saved models: ``RUN_DIR/models/<entry>.safetensors`` (weights) and ``<entry>.json`` (its recipe).

fastai's ``learn.export`` pickles the whole learner, and unpickling a file runs code, so a run keeps
plain tensors (safetensors) and a small JSON recipe instead: the timm architecture, the item and
batch transforms with their sizes, the normalisation statistics, the vocab, the precision, the
checkpointing flag, the TTA settings and the library versions. :func:`load_learner` rebuilds the
fastai learner from the recipe without downloading anything (``pretrained=False``, then the saved
weights), after checking the weights file against the size and SHA-256 that run.json records.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from planner.base.atomic import atomic_write, atomic_write_json
from planner.base.errors import UserError
from planner.base.jsonfile import load_record
from planner.base.plan import ItemTransform, Record, Size
from planner.base.recipe import AUG_MIN_SCALE
from planner.base.runfile import SavedModelRecord, load_run
from planner_trainer.rerun import retrain_command

if TYPE_CHECKING:
    from planner_trainer.try_spec import TrySpec

RECIPE_VERSION = 1
MODELS_FOLDER = "models"


class BatchTransforms(Record):
    """fastai's ``aug_transforms(size=size, min_scale=min_scale)``: the batch transforms of training and TTA."""

    kind: Literal["aug_transforms"] = "aug_transforms"
    size: Size
    min_scale: float


class Normalization(Record):
    """fastai's ``Normalize.from_stats(mean, std)`` (added by ``vision_learner`` for pretrained weights)."""

    mean: list[float]
    std: list[float]


class TtaRecipe(Record):
    """How the run predicted: ``n`` augmented passes blended with the plain one by ``beta``, every
    generator seeded with ``seed`` first, ``batch_size`` images per batch (TTA draws crops per batch)."""

    n: int = Field(gt=0)
    beta: float
    seed: int
    batch_size: int = Field(gt=0)


class ModelRecipe(Record):
    """Everything needed, besides the weights, to rebuild a trained entry's fastai learner."""

    version: Literal[1] = RECIPE_VERSION
    entry: str
    arch: str
    item: ItemTransform
    batch: BatchTransforms
    normalize: Normalization | None
    vocab: list[str]
    precision: Literal["fp16", "fp32"]
    trained_on: Literal["cuda", "cpu"]
    grad_checkpointing: bool
    tta: TtaRecipe
    parameters: int = Field(ge=0)
    versions: dict[str, str]


@dataclass(frozen=True)
class SavedModel:
    """A trained model in memory, ready to be written: its recipe and its weights (CPU tensors)."""

    recipe: ModelRecipe
    state_dict: dict[str, Any]


def capture_model(learn: Any, spec: TrySpec) -> SavedModel:
    """The trained learner's weights (copied to the CPU) and its recipe, taken before TTA."""
    import fastai
    import safetensors
    import timm
    import torch

    import planner

    inputs = spec.inputs
    state = {key: value.detach().cpu().contiguous() for key, value in learn.model.state_dict().items()}
    recipe = ModelRecipe(
        entry=spec.entry.name, arch=spec.entry.arch, item=spec.entry.item,
        batch=BatchTransforms(size=spec.entry.size, min_scale=AUG_MIN_SCALE),
        normalize=_normalization(learn.dls), vocab=[str(label) for label in learn.dls.vocab],
        precision="fp16" if inputs.device == "cuda" else "fp32", trained_on=inputs.device,
        grad_checkpointing=spec.entry.grad_checkpointing,
        tta=TtaRecipe(n=inputs.settings.tta_n, beta=inputs.settings.tta_beta, seed=inputs.seed,
                      batch_size=spec.micro_batch),
        parameters=sum(parameter.numel() for parameter in learn.model.parameters()),
        versions={"torch": torch.__version__, "timm": timm.__version__, "fastai": fastai.__version__,
                  "safetensors": safetensors.__version__, "planner": planner.__version__},
    )
    return SavedModel(recipe=recipe, state_dict=state)


def _normalization(dls: Any) -> Normalization | None:
    from fastai.vision.all import Normalize

    for tfm in dls.valid.after_batch.fs:
        if isinstance(tfm, Normalize):
            return Normalization(mean=tfm.mean.flatten().tolist(), std=tfm.std.flatten().tolist())
    return None


def weights_path(run_dir: Path, name: str) -> Path:
    """Where an entry's weights live."""
    return run_dir / MODELS_FOLDER / f"{name}.safetensors"


def recipe_path(run_dir: Path, name: str) -> Path:
    """Where an entry's recipe lives."""
    return run_dir / MODELS_FOLDER / f"{name}.json"


def save_model(run_dir: Path, saved: SavedModel) -> SavedModelRecord:
    """Write the weights and then the recipe, each atomically.

    Returns:
        run.json's record of them: paths relative to ``run_dir``, the weights' size and SHA-256.
    """
    from safetensors.torch import save

    data = save(saved.state_dict, metadata={"format": "pt", "entry": saved.recipe.entry})
    name = saved.recipe.entry
    weights = atomic_write(weights_path(run_dir, name), lambda f: f.write(data))
    recipe = atomic_write_json(recipe_path(run_dir, name), saved.recipe.to_dict())
    return SavedModelRecord(weights=weights.relative_to(run_dir).as_posix(),
                            recipe=recipe.relative_to(run_dir).as_posix(),
                            bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


def read_saved_model(run_dir: str | Path, entry: str) -> tuple[ModelRecipe, dict[str, Any]]:
    """An entry's recipe and weights, checked against run.json (size and SHA-256) before anything is
    loaded.

    Raises:
        UserError: no run.json, no such finished entry, no saved model, a missing or damaged file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    run_dir = Path(run_dir).expanduser().resolve()
    record = saved_model_record(run_dir, entry)
    path = run_dir / record.weights
    if not path.is_file():
        raise UserError(f"{path} is missing: retrain the folder's entries with {_retrain(run_dir)}")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != record.bytes or digest != record.sha256:
        raise UserError(f"{path} fails its checksum ({len(data)} bytes, sha256 {digest[:12]}…; run.json says "
                        f"{record.bytes} bytes, {record.sha256[:12]}…): the file is damaged; retrain the folder's "
                        f"entries with {_retrain(run_dir)}")
    recipe = load_recipe(run_dir / record.recipe)
    try:
        return recipe, load(data)
    except SafetensorError as error:
        raise UserError(f"{path} is not a safetensors file ({error})") from None


def saved_model_problem(run_dir: Path, record: SavedModelRecord) -> str | None:
    """Why an entry's saved model is not whole ("models/x.safetensors is missing (deleted?)"...), or None:
    the weights' size against run.json's and their safetensors header, and the recipe. What a rerun checks
    before keeping a finished entry; it reads no weights (their SHA-256 is checked when they are loaded)."""
    from safetensors import SafetensorError, safe_open

    weights = run_dir / record.weights
    try:
        size = weights.stat().st_size
        if size != record.bytes:
            return f"{record.weights} has {size} bytes, run.json says {record.bytes} (truncated or replaced?)"
        with safe_open(weights, framework="numpy"):
            pass
    except FileNotFoundError:
        return f"{record.weights} is missing (deleted?)"
    except PermissionError:
        return f"{record.weights} cannot be read: permission denied for this user"
    except (OSError, SafetensorError) as error:
        return f"{record.weights} is not a whole safetensors file ({error})"
    recipe = run_dir / record.recipe
    try:
        load_recipe(recipe)
    except UserError:
        return f"{record.recipe} {'cannot be read as a model recipe' if recipe.exists() else 'is missing (deleted?)'}"
    return None


def saved_model_record(run_dir: Path, entry: str) -> SavedModelRecord:
    """run.json's record of an entry's saved model.

    Raises:
        UserError: no run.json, no such finished entry, or it was trained without saving its model.
    """
    run = load_run(run_dir)
    if run is None:
        raise UserError(f"{run_dir} has no run.json: pass a run folder written by `planner run`")
    record = run.entries.get(entry)
    if record is None or record.status != "finished":
        finished = sorted(name for name, item in run.entries.items() if item.status == "finished")
        raise UserError(f"{run_dir} has no finished entry {entry!r} (finished: {', '.join(finished) or 'none'})")
    if record.model is None:
        raise UserError(f"entry {entry} in {run_dir} has no saved model (trained with --no-save-models or "
                        f"before models were saved): retrain the folder's entries with {_retrain(run_dir)}")
    return record.model


def _retrain(run_dir: Path) -> str:
    """The command that retrains the folder's entries, saving their models (see ``planner_trainer.rerun``)."""
    run = load_run(run_dir)
    return retrain_command(run, run_dir) if run is not None else "planner run PLAN --out RUN_DIR --retrain"


def load_recipe(path: Path) -> ModelRecipe:
    """Read and validate a recipe file.

    Raises:
        UserError: missing, unreadable, not JSON, another version, or a bad field (named).
    """
    return load_record(path, ModelRecipe, what="model recipe", version=RECIPE_VERSION,
                       fix=f"retrain the folder's entries with {_retrain(path.parent.parent)}")


def build_from_recipe(recipe: ModelRecipe, state_dict: dict[str, Any], device: str = "cpu",
                      batch_size: int | None = None) -> Any:
    """The fastai learner of a recipe, with the saved weights, ready to predict.

    The data loaders hold a few blank images only (fastai needs them to size the head and to make
    ``test_dl``s with the recipe's transforms); nothing is downloaded (``pretrained=False``).

    Args:
        recipe: the entry's recipe.
        state_dict: its weights.
        device: "cuda" or "cpu"; fp16 on CUDA when the entry was trained in fp16.
        batch_size: images per batch (default: the run's, which reproduces its TTA).
    """
    from fastai.callback.progress import ProgressCallback
    from fastai.vision.all import Normalize
    from fastcore.basics import noop

    from planner.base.recipe import build_learner, make_dataloaders, synthetic_image

    if recipe.batch.min_scale != AUG_MIN_SCALE:
        raise UserError(f"{recipe.entry} was trained with aug_transforms(min_scale={recipe.batch.min_scale}), "
                        f"this planner applies {AUG_MIN_SCALE}")
    vocab, n = recipe.vocab, len(recipe.vocab)
    bs = batch_size or recipe.tta.batch_size
    dls = make_dataloaders(
        range(2 * n), get_x=lambda i: synthetic_image(recipe.item, i), get_y=lambda i: vocab[i % n],
        is_valid=lambda i: i >= n, item=recipe.item, size=recipe.batch.size, micro_batch=bs, device=device,
        vocab=vocab, seed=recipe.tta.seed,
    )
    if recipe.normalize is not None:
        dls.add_tfms([Normalize.from_stats(recipe.normalize.mean, recipe.normalize.std, cuda=device == "cuda")],
                     "after_batch")
    learn = build_learner(dls, recipe.arch, effective_batch_size=bs, pretrained=False,
                          fp16=device == "cuda" and recipe.precision == "fp16")
    learn.model.load_state_dict(state_dict, strict=True)
    learn.model.eval()
    learn.remove_cb(ProgressCallback)
    learn.logger = noop
    return learn


def load_model(run_dir: str | Path, entry: str, device: str = "cpu", batch_size: int | None = None) -> Any:
    """A finished entry's fastai ``Learner``, rebuilt from its recipe and checked weights
    (``learn.model`` is the plain torch module; ``learn.predict(path)`` classifies one image).

    Raises:
        UserError: see :func:`read_saved_model`.
    """
    recipe, state_dict = read_saved_model(run_dir, entry)
    return build_from_recipe(recipe, state_dict, device, batch_size)
