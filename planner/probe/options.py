"""What `planner probe` is asked: its options and their defaults, in one place.

The CLI's defaults and ``--help`` come from this record; it imports nothing heavy (no torch), so
that ``planner --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from planner.base.errors import UserError
from planner.base.plan import MIN_MICRO_BATCH, Size

DEFAULT_MARGIN = 0.05
DEFAULT_EFFECTIVE_BATCH_SIZE = 64


@dataclass(frozen=True)
class ProbeOptions:
    """What `planner probe` is asked; the CLI's defaults and ``--help`` come from here.

    Attributes:
        budgets: card sizes in bytes (``--gpu-mem``); the plan is for the smallest, and each entry
            gets a pair per size when there are several. Empty: ``gpu``'s usable memory, else this
            machine's GPU's total memory.
        gpus: cards by name (``planner.base.gpus``): a card's usable memory is the budget when
            ``budgets`` is empty, and its speed gives each entry's predicted times. Several cards: a
            plan for each, compared (``planner.probe.cards``).
        plan_for: with several cards, the one plan.json is for (default: the first).
        prices: US dollars per hour by card name, to price each card's plan in the comparison.
        models: a models file replacing the reference set.
        arch, size: one architecture at one size, instead.
        effective_batch_size: samples per optimizer step.
        data: the data folder (its images are probed, its sizes time the epochs); None: ``.`` when
            it holds ``train_images/``, else generated images.
        device: ``auto`` (cuda when a GPU is present, else estimate), ``cuda``, ``cpu`` or ``estimate``.
        margin: the fraction of the card kept free.
        output: where the plan is written.
        checkpointing: weigh timm's activation checkpointing (``planner.probe.configuration``).
        epochs: the ``fine_tune`` epochs the predicted times are for.
        jobs: processes that probe architectures side by side where probes need no device (the
            estimate meter); None: one per core other processes leave free.
        loader_workers: the DataLoader workers of the machine that trains, which the data folder's
            loading time is scaled to; None: what `planner run` uses here (``planner.base.recipe.loader_workers``:
            one per core up to 16 on a GPU, none with ``device`` cpu).
    """

    budgets: tuple[int, ...] = ()
    gpus: tuple[str, ...] = ()
    plan_for: str | None = None
    prices: Mapping[str, float] = field(default_factory=dict)
    models: Path | None = None
    arch: str | None = None
    size: Size | None = None
    effective_batch_size: int = DEFAULT_EFFECTIVE_BATCH_SIZE
    data: Path | None = None
    device: Literal["auto", "cuda", "cpu", "estimate"] = "auto"
    margin: float = DEFAULT_MARGIN
    output: Path = Path("plan.json")
    checkpointing: bool = True
    epochs: int = 12
    jobs: int | None = None
    loader_workers: int | None = None

    def __post_init__(self) -> None:
        if self.loader_workers is not None and self.loader_workers < 0:
            raise UserError(f"--loader-workers {self.loader_workers} must be 0 or more (0: the training process "
                            "decodes the images itself), e.g. --loader-workers 4")
        if self.effective_batch_size < MIN_MICRO_BATCH:
            raise UserError(f"--effective-bs {self.effective_batch_size} is too small: fastai's head has BatchNorm, "
                            f"which cannot train on single images; use --effective-bs {MIN_MICRO_BATCH} or more")
