"""What `planner probe` is asked: its options and their defaults, in one place.

The CLI's defaults come from this record and the record checks its values (one line naming the
option); each flag's help text is the CLI's, beside its parsing. It imports nothing heavy (no torch), so
that ``planner --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from planner.base.errors import UserError
from planner.base.fields import normalize_fields
from planner.base.plan import MIN_MICRO_BATCH, Size

MAX_MARGIN = 0.5
DEFAULT_EFFECTIVE_BATCH_SIZE = 64


@dataclass(frozen=True)
class ProbeOptions:
    """What `planner probe` is asked; the CLI's defaults come from here.

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
        margin: the fraction of the card kept free; None: the one covering the meter's measured
            probe-to-run error (``planner.probe.margins``).
        output: where the plan is written.
        checkpointing: weigh timm's activation checkpointing (``planner.probe.configuration``).
        epochs: the ``fine_tune`` epochs the predicted times are for.
        host_speed: how fast the CPU that will train is per core, relative to this machine's (the host's
            share of each step is measured here, ``planner.probe.hostbench``, and so is the data folder's
            loading, ``planner.probe.loadtime``); 1: this machine.
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
    size: int | Size | None = None
    effective_batch_size: int = DEFAULT_EFFECTIVE_BATCH_SIZE
    data: Path | None = None
    device: Literal["auto", "cuda", "cpu", "estimate"] = "auto"
    margin: float | None = None
    output: Path = Path("plan.json")
    checkpointing: bool = True
    epochs: int = 12
    host_speed: float = 1.0
    jobs: int | None = None
    loader_workers: int | None = None

    def __post_init__(self) -> None:
        """Refuse options that contradict each other or are out of range, in one line naming the option.

        Raises:
            UserError: a value of the wrong type (``planner.base.fields``), or the first such option.
        """
        normalize_fields(self)
        if any(budget <= 0 for budget in self.budgets):
            raise UserError(f"ProbeOptions.budgets {self.budgets} must be card sizes in bytes, each more than 0 "
                            "(16 * 2**30 is --gpu-mem 16G)")
        if not 0 < self.host_speed < float("inf"):
            raise UserError(f"--host-speed {self.host_speed:g} is not a speed: give how fast the training machine's "
                            "CPU is per core relative to this one, a positive number (1: as fast, 0.5: half as fast)")
        if self.loader_workers is not None and self.loader_workers < 0:
            raise UserError(f"--loader-workers {self.loader_workers} must be 0 or more (0: the training process "
                            "decodes the images itself), e.g. --loader-workers 4")
        if self.effective_batch_size < MIN_MICRO_BATCH:
            raise UserError(f"--effective-bs {self.effective_batch_size} is too small: fastai's head has BatchNorm, "
                            f"which cannot train on single images; use --effective-bs {MIN_MICRO_BATCH} or more")
        if self.device not in ("auto", "cuda", "cpu", "estimate"):
            raise UserError(f"--device {self.device!r} must be auto, cuda, cpu or estimate")
        if self.margin is not None and not 0 <= self.margin <= MAX_MARGIN:
            raise UserError(f"--margin {self.margin:g} must be between 0 and {MAX_MARGIN}, e.g. 0.1 or 10%, or left "
                            "out to keep the meter's measured error free")
        if self.epochs < 1:
            raise UserError(f"--epochs {self.epochs} must be at least 1 (the unfrozen epochs `planner run` trains, "
                            "after its one frozen epoch)")
        if self.jobs is not None and self.jobs < 1:
            raise UserError(f"--jobs {self.jobs} must be at least 1")
        if self.models and self.arch:
            raise UserError("give either --models or --arch/--size, not both")
        if (self.arch is None) != (self.size is None):
            raise UserError("--arch and --size go together, e.g. --arch resnet50 --size 224")
        if (self.plan_for or self.prices) and len(self.gpus) < 2:
            raise UserError("--for and --price compare cards: give two or more --gpu, e.g. --gpu T4 --gpu A100-80G")
