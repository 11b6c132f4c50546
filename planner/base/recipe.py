"""The training recipe, in one place, so that the probe measures exactly what `planner run` trains.

Both stages build data with :func:`make_dataloaders` and the learner with :func:`build_learner`:
fastai's ``vision_learner`` (timm body + fastai head), fastai's Adam, ``GradientAccumulation`` on the
effective batch, ``aug_transforms(size, min_scale=0.75)`` as batch transforms (on the GPU when the
data loaders live there) and ``to_fp16()`` on CUDA. On the CPU fastai's mixed precision does nothing
(its autocast is CUDA-only), so CPU training is fp32 and no MixedPrecision callback is added.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from planner.base.compat import channels_first_timm_body, timm_renamed_models
from planner.base.plan import ItemTransform, Size


def item_transform(item: ItemTransform) -> Any:
    """fastai's ``Resize`` for an item transform record."""
    from fastai.vision.all import Resize, ResizeMethod

    method = {"crop": ResizeMethod.Crop, "squish": ResizeMethod.Squish, "pad": ResizeMethod.Pad}[item.method]
    return Resize(item.resize, method=method)


AUG_MIN_SCALE = 0.75


def batch_transforms(size: Size) -> list:
    """The reference's batch augmentation at the entry's final size."""
    from fastai.vision.all import aug_transforms

    return aug_transforms(size=size, min_scale=AUG_MIN_SCALE)


def validation_batch_size(micro_batch: int) -> int:
    """The held-out loader's batch: the training micro-batch, as fastai's ``val_bs`` defaults to."""
    return micro_batch


def make_dataloaders(
    items: Sequence[Any],
    *,
    get_x: Callable[[Any], Any],
    get_y: Callable[[Any], str],
    is_valid: Callable[[Any], bool],
    item: ItemTransform,
    size: Size,
    micro_batch: int,
    device: str,
    vocab: Sequence[str] | None = None,
    seed: int | None = None,
    num_workers: int | None = None,
) -> Any:
    """fastai DataLoaders for images, with the entry's item and batch transforms.

    Args:
        items: the item list (file paths for training, anything ``get_x`` understands otherwise).
        get_x: item -> image (a path, read by ``planner.base.pixels.open_rgb``, or a PIL image).
        get_y: item -> label.
        is_valid: item -> True when the item is in the held-out split.
        item: the item transform, applied per image on the CPU.
        size: the final size after the batch transforms.
        micro_batch: the batch size of one forward/backward pass.
        device: where batches (and so the batch transforms) go: "cuda" or "cpu".
        vocab: a fixed class order; None lets fastai sort the labels it sees.
        seed: seeds the shuffling of the training loader.
        num_workers: DataLoader worker processes; None: :func:`loader_workers` for ``device``.
    """
    from fastai.vision.all import CategoryBlock, DataBlock, FuncSplitter, ImageBlock

    from planner.base.rgb_image import RGBImage

    block = DataBlock(
        blocks=(ImageBlock(RGBImage), CategoryBlock(vocab=list(vocab) if vocab is not None else None)),
        get_x=get_x,
        get_y=get_y,
        splitter=FuncSplitter(is_valid),
        item_tfms=item_transform(item),
        batch_tfms=batch_transforms(size),
    )
    if num_workers is None:
        num_workers = loader_workers(device)
    return block.dataloaders(list(items), bs=micro_batch, val_bs=validation_batch_size(micro_batch), device=device,
                             num_workers=num_workers, seed=seed)


MAX_LOADER_WORKERS = 16


def loader_workers(device: str, cores: int | None = None) -> int:
    """The DataLoader worker processes a run uses: fastai's default when batches go to a GPU (one per
    core, up to :data:`MAX_LOADER_WORKERS`), so that image decoding keeps up with the card, and none
    on the CPU, where workers would only compete with training for the same cores.

    Args:
        device: where the run trains: "cuda" or "cpu".
        cores: the training machine's cores; None: the cores this process may use.
    """
    if device != "cuda":
        return 0
    if cores is None:
        from fastai.torch_core import num_cpus

        cores = num_cpus()
    return max(1, min(MAX_LOADER_WORKERS, cores))


def build_learner(
    dls: Any,
    arch: str,
    *,
    effective_batch_size: int,
    pretrained: bool,
    fp16: bool,
    grad_checkpointing: bool = False,
    cbs: Sequence[Any] = (),
) -> Any:
    """The reference's learner: ``vision_learner(dls, arch, metrics=error_rate,
    cbs=GradientAccumulation(effective_batch_size))``, ``.to_fp16()`` when ``fp16``; with
    ``grad_checkpointing`` the timm body recomputes its activations in the backward pass. A name timm
    has renamed is built under its current name (the same model and weights; timm would otherwise warn
    on stderr with its own file path).

    Raises:
        CheckpointingUnsupported: ``grad_checkpointing`` for a model that cannot do it.
    """
    from fastai.vision.all import GradientAccumulation, error_rate, vision_learner

    learn = vision_learner(
        dls, timm_renamed_models().get(arch) or arch, metrics=error_rate, pretrained=pretrained,
        cbs=[GradientAccumulation(effective_batch_size), *cbs],
    )
    channels_first_timm_body(learn.model[0])  # Swin's NHWC features (planner.base.compat)
    set_grad_checkpointing(learn.model, grad_checkpointing)
    return learn.to_fp16() if fp16 else learn


class CheckpointingUnsupported(ValueError):
    """The timm model has no gradient checkpointing."""


def set_grad_checkpointing(model: Any, enable: bool) -> None:
    """Turn timm's gradient checkpointing on or off in fastai's model (timm body + fastai head).

    timm's ``set_grad_checkpointing`` makes ``forward_features`` run its stages or blocks through
    ``torch.utils.checkpoint``: their activations are recomputed in the backward pass instead of
    kept. The head is small and keeps its activations.

    Raises:
        CheckpointingUnsupported: ``enable`` for a model whose timm class cannot checkpoint.
    """
    body = model[0].model
    try:
        body.set_grad_checkpointing(enable)
    except (AssertionError, AttributeError, NotImplementedError) as error:
        if enable:
            raise CheckpointingUnsupported(f"{type(body).__name__} has no gradient checkpointing in timm") from error


def synthetic_image(item: ItemTransform, seed: int) -> Image.Image:
    """A random RGB image already at the item transform's size (memory does not depend on pixels)."""
    rows, cols = (item.resize, item.resize) if isinstance(item.resize, int) else item.resize
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(rows, cols, 3), dtype=np.uint8))


def synthetic_dataloaders(
    item: ItemTransform, size: Size, micro_batch: int, *, device: str, n_batches: int, n_classes: int = 10,
    n_valid: int | None = None,
) -> Any:
    """DataLoaders over generated images: ``n_batches`` training batches and ``n_valid`` held-out
    images (default: one batch)."""
    n_train = micro_batch * n_batches
    labels = [f"class{i}" for i in range(n_classes)]
    return make_dataloaders(
        range(n_train + (n_valid or micro_batch)),
        get_x=lambda i: synthetic_image(item, i),
        get_y=lambda i: labels[i % n_classes],
        is_valid=lambda i: i >= n_train,
        item=item, size=size, micro_batch=micro_batch, device=device, vocab=labels, seed=0,
    )


def prepare_device(device: str) -> None:
    """fastai's CUDA set-up (``cudnn.benchmark = True``), done identically by probe and run; on the
    CPU, the threads other processes leave free (``planner.base.threads``; training re-checks each epoch).

    fastai 2.8 no longer calls ``setup_cuda`` on import, so both stages call it explicitly:
    cuDNN's first-iteration autotuning then shows up in the probe's peak as it will in training.
    """
    if device == "cpu":
        from planner.base.threads import use_cpu_threads

        use_cpu_threads()
    if device == "cuda":
        from fastai.torch_core import setup_cuda

        setup_cuda(benchmark=True)
