"""How many images a run trains on, and whether that gives every fit an optimizer step.

fastai's training loader drops the last partial batch, and ``GradientAccumulation(effective)`` steps
only once a fit has seen ``effective`` samples (its count restarts with each fit of ``fine_tune``).
With ``accum × micro_batch = effective``, a fit's first epoch steps at least once exactly when
``floor(n_train / micro_batch) >= accum``, that is when ``n_train >= effective``, whatever the pair:
so one comparison decides it for every entry of a plan, and the probe (with a data folder) and
`planner run` both make it before any work. The held-out count per class is the run's split rule
(``planner_trainer.split``), kept here so that the probe counts the same training images.
"""

from __future__ import annotations

from collections.abc import Iterable

from planner.base.errors import UserError

DEFAULT_VALID_PCT = 0.2
"""The held-out fraction of a run's split unless ``--valid-pct`` says otherwise."""


def held_out_count(class_size: int, valid_pct: float) -> int:
    """Held-out images of a class of ``class_size``: ``round(valid_pct × n)``, at least one, and at
    least one left for training (a class of one image stays in training)."""
    return min(max(round(valid_pct * class_size), 1), class_size - 1)


def training_count(class_sizes: Iterable[int], valid_pct: float) -> int:
    """Images left for training after the split (the sum over classes)."""
    return sum(size - held_out_count(size, valid_pct) for size in class_sizes)


def suggested_effective_batch(n_train: int) -> int:
    """The largest power of two up to ``n_train`` (at least 2): an effective batch the data can fill."""
    return max(2, 1 << (max(n_train, 1).bit_length() - 1))


def check_steps(n_train: int, n_images: int, effective_batch_size: int, valid_pct: float, fix: str) -> None:
    """Refuse a training split too small for one optimizer step per fit.

    Args:
        n_train: images in the training split.
        n_images: images in ``train_images`` (training and held out).
        effective_batch_size: samples per optimizer step.
        valid_pct: the held-out fraction, for the message.
        fix: what lowers the effective batch where this is checked (e.g. probe again with
            ``--effective-bs N``); ``{n}`` in it is replaced by a batch the data can fill.

    Raises:
        UserError: ``n_train < effective_batch_size``: no fit would take an optimizer step.
    """
    if n_train >= effective_batch_size:
        return
    suggestion = suggested_effective_batch(n_train)
    raise UserError(
        f"the training split holds {n_train} image(s) ({n_images} in train_images, {n_images - n_train} held out "
        f"with --valid-pct {valid_pct:g}), fewer than the effective batch {effective_batch_size}: fastai would "
        f"take no optimizer step and the models would stay untrained. {fix.format(n=suggestion)}, or add "
        "training images"
    )
