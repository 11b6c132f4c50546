"""What `planner run` is asked: its options and their defaults, in one place.

The CLI's defaults and ``--help`` come from this record; it imports nothing heavy, so that
``planner --help`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from planner.base.errors import UserError
from planner.base.runfile import RunSettings


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
    """

    epochs: int = 12
    lr: float = 0.01
    pretrained: bool = True
    device: Literal["auto", "cuda", "cpu"] = "auto"
    valid_pct: float = 0.2
    seed: int = 42
    cpu_memory_limit: int | None = None
    include_misfits: bool = False
    save_models: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise UserError(f"--epochs {self.epochs} must be at least 1")
        if not self.lr > 0:
            raise UserError(f"--lr {self.lr} must be larger than zero, e.g. 0.01")
        if not 0 < self.valid_pct < 1:
            raise UserError(f"--valid-pct {self.valid_pct} must be between 0 and 1, e.g. 0.2")
        if self.device not in ("auto", "cuda", "cpu"):
            raise UserError(f"--device {self.device!r} must be auto, cuda or cpu")

    def settings(self) -> RunSettings:
        """The settings every entry of a run folder must share (recorded in run.json)."""
        return RunSettings(epochs=self.epochs, lr=self.lr, pretrained=self.pretrained)
