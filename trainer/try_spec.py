"""What one try of one entry is given: the entry, its accumulation and the run's shared inputs.

Its own module so that the try (``planner_trainer.training``) and the saved model (``planner_trainer.saved_model``),
which both need it, do not import each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.base.plan import AllocatorConfig, PlanEntry, micro_batch_for
from planner.base.runfile import RunSettings
from planner_trainer.data import DataLayout
from planner_trainer.split import Split


@dataclass(frozen=True)
class RunInputs:
    """What every try of a run shares.

    Attributes:
        effective_batch_size: the plan's effective batch (``GradientAccumulation``'s sample count).
        layout: the checked data folder.
        split: the run folder's held-out split.
        settings: epochs, learning rate, pretrained weights, TTA settings.
        device: "cuda" or "cpu" (fp16 on CUDA, fp32 on the CPU).
        seed: seeds weights initialisation and shuffling.
        cpu_memory_limit: cpu only: the tracker raises ``torch.OutOfMemoryError`` above it.
        save_models: keep each trained model (weights and recipe) for `planner predict`.
        allocator: the CUDA allocator configuration of the run (None when it trains on the CPU): in
            force in the driver's process, where the local backend trains; a Ray task applies it in its
            worker before CUDA starts there (``planner.base.allocator``).
    """

    effective_batch_size: int
    layout: DataLayout
    split: Split
    settings: RunSettings
    device: str
    seed: int
    cpu_memory_limit: int | None = None
    save_models: bool = True
    allocator: AllocatorConfig | None = None


@dataclass(frozen=True)
class TrySpec:
    """Everything one try needs: the entry, this try's accumulation, and the run's shared inputs.

    Attributes:
        entry: the plan entry (architecture, item transform, size).
        accum: this try's accumulation; ``micro_batch = effective_batch_size // accum``.
        inputs: what every try of the run shares.
    """

    entry: PlanEntry
    accum: int
    inputs: RunInputs

    @property
    def micro_batch(self) -> int:
        """The batch of one forward/backward pass: ``effective_batch_size // accum``."""
        return micro_batch_for(self.inputs.effective_batch_size, self.accum)
