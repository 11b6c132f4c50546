"""How big an entry's share of a GPU is, and which (micro-batch, accumulation) pair it trains with.

Pure arithmetic on plan values and card sizes (no Ray, no device), plus :func:`node_card_bytes`, which
reads a node's cards through NVML. The Ray backend (``planner_trainer.ray_backend``) asks these questions; they
are here so that they can be tested alone, and so that a Ray worker reading a node's cards imports
neither torch nor fastai.

Packing (``planner run --backend ray --pack``). The probe chose each entry's pair so that its peak
stays under ``budget × (1 − margin)``; the margin is the headroom the plan keeps for what it could
not measure. A packed entry gets the share of a card in which its peak keeps the same headroom::

    fraction = peak / (1 − margin) / card_bytes        (rounded up to Ray's resolution, at most 1)

Ray's fractional accounting gives one GPU only tasks whose fractions sum to at most 1, and each
fraction is at least ``peak_i / (1 − margin) / card_bytes``, so entries that share a card satisfy
``Σ peak_i ≤ (1 − margin) × card_bytes``: their predicted peaks fit together with the plan's margin
to spare. A peak of the whole card (``planner.base.cuda_device.peak_bytes``: reserved + what torch does not
see) already counts each process's CUDA context, which every process sharing a card pays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from planner.base.plan import PlanEntry

# Ray accounts fractional resources in units of 1/10,000 of a GPU.
RAY_RESOLUTION = 10_000


def pack_fraction(peak_bytes: int, margin: float, card_bytes: int) -> float:
    """The fraction of one GPU an entry asks Ray for with ``--pack``.

    Args:
        peak_bytes: the entry's predicted peak (whole-card bytes, as the plan records it).
        margin: the plan's margin (fraction of the budget kept free), ``0 <= margin < 1``.
        card_bytes: the memory of the GPU the share is taken of (the smallest in the cluster).

    Returns:
        ``peak / (1 − margin) / card_bytes`` rounded up to a multiple of 1/10,000 (Ray's resolution),
        at least 1/10,000 and at most 1 (an entry that needs more than a card gets a whole one).

    Raises:
        ValueError: a negative peak, a margin outside [0, 1) or a card of no bytes.
    """
    if peak_bytes < 0 or not 0 <= margin < 1 or card_bytes <= 0:
        raise ValueError(f"cannot share a card of {card_bytes} bytes for a peak of {peak_bytes} "
                         f"bytes with margin {margin}")
    needed = peak_bytes / (1 - margin) / card_bytes
    units = math.ceil(round(needed * RAY_RESOLUTION, 6))  # round(): 0.5 * 10_000 stays 5,000
    return min(RAY_RESOLUTION, max(1, units)) / RAY_RESOLUTION


def share_cap_fraction(share_bytes: int, context_bytes: int, card_bytes: int) -> float:
    """The fraction for ``torch.cuda.set_per_process_memory_fraction`` that keeps a process in its share.

    The cap limits torch's caching allocator only; the CUDA context and other non-torch bytes come on
    top, so they are taken off the share first (as ``planner.base.cuda_device.cap_to_budget`` does).

    Args:
        share_bytes: the bytes of the card this process may use (fraction × card).
        context_bytes: what the process holds outside torch's allocator.
        card_bytes: the card's total memory.

    Returns:
        ``(share − context) / card``, clamped to [0, 1].
    """
    return min(1.0, max(0.0, (share_bytes - context_bytes) / card_bytes))


@dataclass(frozen=True)
class TrainingPair:
    """The micro-batch and accumulation an entry trains with on a given card.

    Attributes:
        accum: gradient accumulation (``accum × micro_batch`` is the plan's effective batch).
        micro_batch: samples per forward/backward pass.
        predicted_peak_bytes: the probe's prediction for this pair (None when it did not fit).
        budget_bytes: the per-budget record it came from; None for the plan's default pair.
    """

    accum: int
    micro_batch: int
    predicted_peak_bytes: int | None
    budget_bytes: int | None = None


def pair_for_memory(entry: PlanEntry, memory_bytes: int | None) -> TrainingPair:
    """The pair planned for the largest budget that the card holds, else the plan's default pair.

    Args:
        entry: a plan entry; its ``per_budget`` list (written by ``planner probe`` with several
            ``--gpu-mem``) may be empty.
        memory_bytes: the memory the task may use: the card's total memory, or its share of it when
            the task got a fraction of a GPU; None when unknown (no CUDA device).

    Returns:
        The fitting per-budget pair with the largest ``budget_bytes <= memory_bytes``; the entry's
        own ``accum``/``micro_batch`` (the plan's first, smallest budget) when none qualifies.
    """
    default = TrainingPair(entry.accum, entry.micro_batch, entry.predicted_peak_bytes)
    if memory_bytes is None:
        return default
    fitting = [pair for pair in entry.per_budget if pair.fits and pair.budget_bytes <= memory_bytes]
    if not fitting:
        return default
    best = max(fitting, key=lambda pair: pair.budget_bytes)
    return TrainingPair(best.accum, best.micro_batch, best.predicted_peak_bytes, best.budget_bytes)


def node_card_bytes() -> int | None:
    """The memory of the smallest GPU on this machine, by NVML (every card, whatever
    ``CUDA_VISIBLE_DEVICES`` says); None when NVML sees none or is missing."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            sizes = [pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).total
                     for index in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML library, no driver, no permission
        return None
    return int(min(sizes)) if sizes else None
