"""What `planner run` and `planner predict` are asked: their options and defaults, in one place.

The CLI's defaults come from this record and the record checks its values (one line naming the
option); each flag's help text is the CLI's, beside its parsing. It imports nothing heavy, so
that ``planner --help`` stays fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from planner.base.errors import UserError
from planner.base.fields import normalize_fields
from planner.base.runfile import RunSettings
from planner.base.seeds import check_seed
from planner.base.trainsize import DEFAULT_VALID_PCT


@dataclass(frozen=True)
class RunOptions:
    """The options of `planner run` (defaults: the reference's ``fine_tune(12, 0.01)``).

    Attributes:
        epochs: unfrozen epochs of ``fine_tune`` (after its one frozen epoch).
        lr: ``fine_tune``'s base learning rate.
        pretrained: start from pretrained timm weights (needs a network or a cache).
        device: "auto" (cuda when available), "cuda" or "cpu".
        valid_pct: the held-out fraction of the run folder's split.
        seed: seeds the split, the weights and the shuffling.
        cpu_memory_limit: testing aid: on the CPU, raise ``torch.OutOfMemoryError`` when the tracked
            live bytes exceed this, as a card of that size would.
        include_misfits: train entries the plan marks ``fits: false`` too (skipped by default).
        save_models: keep each trained model in ``models/`` (safetensors + JSON recipe) for `planner predict`.
        retrain: train every entry of the plan again, finished ones too, on the data as it is now; when
            the training data changed, the folder starts afresh (a new split; its predictions, models
            and tune-weights outputs are replaced).
    """

    epochs: int = 12
    lr: float = 0.01
    pretrained: bool = True
    device: Literal["auto", "cuda", "cpu"] = "auto"
    valid_pct: float = DEFAULT_VALID_PCT
    seed: int = 42
    cpu_memory_limit: int | None = None
    include_misfits: bool = False
    save_models: bool = True
    retrain: bool = False

    def __post_init__(self) -> None:
        normalize_fields(self)
        if self.epochs < 1:
            raise UserError(f"--epochs {self.epochs} must be at least 1")
        if not (math.isfinite(self.lr) and self.lr > 0):  # inf trains to NaN and cannot be recorded in run.json
            raise UserError(f"--lr {self.lr} must be a finite number larger than zero, e.g. 0.01")
        if not 0 < self.valid_pct < 1:
            raise UserError(f"--valid-pct {self.valid_pct} must be between 0 and 1, e.g. 0.2")
        if self.device not in ("auto", "cuda", "cpu"):
            raise UserError(f"--device {self.device!r} must be auto, cuda or cpu")
        check_seed(self.seed)

    def settings(self) -> RunSettings:
        """The settings every entry of a run folder must share (recorded in run.json)."""
        return RunSettings(epochs=self.epochs, lr=self.lr, pretrained=self.pretrained)


MOST_RAY_RETRIES = 2**31 - 1
"""The largest ``max_retries`` Ray takes: its core worker holds the count in a C int (larger ones end in an
OverflowError when the task is submitted)."""


@dataclass(frozen=True)
class RayOptions:
    """How ``planner run --backend ray`` uses the cluster.

    Attributes:
        address: a Ray cluster to join (``auto``, ``ray://host:10001``, ``host:6379``); None starts a
            local Ray instance for this run (or joins ``RAY_ADDRESS`` when set, as ``ray.init`` does).
        gpus_per_entry: GPUs each task asks for: 1 by default, a fraction below 1 to share cards by
            hand, 0 to train on CPU workers. The trainer uses one device; whole numbers above 1 only
            reserve more.
        pack: ask each entry for the fraction of a GPU its predicted peak needs
            (``planner_trainer.placement.pack_fraction``), so that small entries share large cards.
        max_retries: Ray retries of a task whose worker or node died.
        crash_once: testing aid: these entries' first task exits its worker process (``os._exit``)
            before training, leaving a marker file in the run folder so that the retry trains.
    """

    address: str | None = None
    gpus_per_entry: float = 1.0
    pack: bool = False
    max_retries: int = 2
    crash_once: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        normalize_fields(self)
        share = self.gpus_per_entry
        if share < 0 or (share > 1 and share != int(share)):
            raise UserError(f"--gpus-per-entry {share:g} must be 0, a fraction up to 1, or a whole number")
        if self.pack and share != 1:
            raise UserError("--pack chooses each entry's share of a GPU itself: leave --gpus-per-entry at 1")
        if not 0 <= self.max_retries <= MOST_RAY_RETRIES:
            raise UserError(f"--max-retries {self.max_retries} must be between 0 and {MOST_RAY_RETRIES}, e.g. 2")


def ray_options_for(backend: Literal["local", "ray"], ray: RayOptions) -> RayOptions | None:
    """``ray`` for the Ray backend; None for the local one, which takes none of Ray's flags.

    Raises:
        UserError: Ray's flags given for the local backend.
    """
    if backend == "ray":
        return ray
    if ray.pack or ray.address or ray.gpus_per_entry != 1.0:
        raise UserError("--pack, --ray-address and --gpus-per-entry apply to --backend ray")
    return None


@dataclass(frozen=True)
class PredictOptions:
    """The options of `planner predict`.

    Attributes:
        tta: the run's TTA (n augmented passes blended with the plain one); False: the plain pass only.
        device: "auto" (cuda when available), "cuda" or "cpu".
        batch_size: images per batch; None: each entry's batch as trained, which reproduces its TTA
            (inference at the training batch needs less memory than training did).
        uniform: average every finished entry's saved model with equal weights, ignoring weights.json
            (e.g. one that predates an entry trained after tune-weights).
    """

    tta: bool = True
    device: Literal["auto", "cuda", "cpu"] = "auto"
    batch_size: int | None = None
    uniform: bool = False

    def __post_init__(self) -> None:
        normalize_fields(self)
        if self.device not in ("auto", "cuda", "cpu"):
            raise UserError(f"--device {self.device!r} must be auto, cuda or cpu")
        if self.batch_size is not None and self.batch_size < 1:
            raise UserError(f"--batch-size {self.batch_size} must be at least 1")
