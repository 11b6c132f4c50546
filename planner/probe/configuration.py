"""Which configuration to train: a micro-batch, with or without activation checkpointing.

The rule (stated in ``planner probe --help`` and the README):

1. The smallest accumulation without checkpointing, when one fits and its micro-batch is large
   enough for the model's normalisation: any micro-batch for a body without BatchNorm; at least
   :data:`MIN_BATCHNORM_MICRO_BATCH` for a BatchNorm body (unless the effective batch is smaller).
2. Otherwise the configuration predicted to train fastest among those that fit, preferring those
   whose micro-batch is large enough for the normalisation. Time per sample comes from the probes'
   timed steps when every option has them (a GPU probe), else from :func:`relative_cost`.

fastai's head always has a BatchNorm1d over pooled features; the rule looks at the body only (the
candidates already leave out micro-batch 1, the head's hard limit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MIN_BATCHNORM_MICRO_BATCH = 8
# Measured on an H100 (benchmarks/RESULTS.md, "What does activation checkpointing cost?"): timm's checkpointing added
# 38-96 % to a step of convnext_large or vit_large at micro-batch 32 and 64 (median 56 %).
RECOMPUTE_COST = 0.5
# A step's fixed cost (launches, optimizer, data hand-over) in samples' worth of compute: the
# H100's convnext_large steps took 72 ms at 32 and 121 ms at 64, i.e. 23 ms fixed + 1.5 ms per sample.
STEP_OVERHEAD_SAMPLES = 16


@dataclass(frozen=True)
class Option:
    """One configuration the probe measured (its search's chosen micro-batch)."""

    micro_batch: int
    grad_checkpointing: bool
    predicted_peak_bytes: int | None
    fits: bool
    seconds_per_sample: float | None = None

    @property
    def relative_cost(self) -> float:
        return relative_cost(self.micro_batch, self.grad_checkpointing)


def relative_cost(micro_batch: int, grad_checkpointing: bool) -> float:
    """Training time per sample in units of one sample's compute without checkpointing.

    ``(1 + RECOMPUTE_COST if checkpointing) × (1 + STEP_OVERHEAD_SAMPLES / micro_batch)``: small
    micro-batches pay the fixed cost of a step more often; checkpointing recomputes the forward pass.
    """
    recompute = 1 + RECOMPUTE_COST if grad_checkpointing else 1.0
    return recompute * (1 + STEP_OVERHEAD_SAMPLES / micro_batch)


def normalisation_floor(body_has_batchnorm: bool, effective_batch_size: int) -> int:
    """The smallest micro-batch the model's normalisation trains well at."""
    return min(MIN_BATCHNORM_MICRO_BATCH, effective_batch_size) if body_has_batchnorm else 1


def plain_is_enough(plain: Option, floor: int) -> bool:
    """Rule 1: the option without checkpointing fits at a micro-batch the normalisation accepts."""
    return plain.fits and plain.micro_batch >= floor


@dataclass(frozen=True)
class Choice:
    """The chosen option (None when nothing fits) and why, in a sentence for the plan."""

    option: Option | None
    reason: str


def choose(options: Sequence[Option], floor: int) -> Choice:
    """Apply the rule in the module docstring to the measured options."""
    plain = [o for o in options if not o.grad_checkpointing and o.fits]
    best_plain = max(plain, key=lambda o: o.micro_batch, default=None)
    if best_plain is not None and best_plain.micro_batch >= floor:
        return Choice(best_plain, "the smallest accumulation without checkpointing fits")
    fitting = [o for o in options if o.fits]
    if not fitting:
        return Choice(None, "nothing fits, not even the smallest micro-batch with checkpointing")
    normal = [o for o in fitting if o.micro_batch >= floor] or fitting
    if all(o.seconds_per_sample for o in normal):
        best = min(normal, key=lambda o: o.seconds_per_sample or 0.0)
        how = "measured step times"
    else:
        best = min(normal, key=lambda o: o.relative_cost)
        how = "the recompute-cost model"
    if best_plain is None:
        why = "no micro-batch fits without checkpointing"
    else:
        why = (f"without checkpointing only micro-batch {best_plain.micro_batch} fits, below the "
               f"{floor} BatchNorm needs")
    return Choice(best, f"{why}; fastest that fits by {how}")
