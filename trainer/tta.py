"""Test-time augmentation, seeded, so that `planner predict` can repeat what `planner run` computed.

fastai's ``Learner.tta`` draws random crops, flips and warps (Python's ``random`` per batch, torch per
image, and Python's ``random`` in the item transform's random crop). Seeding every generator right
before it (fastai's ``set_seed``) makes the draws depend only on the seed, the images, their order and
the batch size, which the run records; a model rebuilt from its saved weights then gives the same
TTA probabilities to float tolerance.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def seeded_tta(learn: Any, dl: Any, n: int, beta: float, seed: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """fastai's ``tta(n=n, beta=beta)`` with every random generator seeded first.

    Args:
        learn: the learner.
        dl: the data loader to predict (``None``: the held-out split, unshuffled).
        n: augmented passes.
        beta: weight of the plain (un-augmented) pass in the blend: ``lerp(augmented, plain, beta)``.
        seed: seeds Python's, numpy's and torch's generators before the first pass.

    Returns:
        (TTA probabilities, plain probabilities, targets or None), as float32/int64 numpy arrays.
    """
    import torch
    from fastai.torch_core import set_seed

    if dl is None:
        dl = learn.dls.valid.new(shuffled=False, drop_last=False)
    set_seed(seed)
    (augmented, plain), targets = learn.tta(dl=dl, n=n, beta=None)
    blended = torch.lerp(augmented, plain, beta)  # what tta(beta=beta) returns
    return (
        blended.float().numpy(),
        plain.float().numpy(),
        None if targets is None else targets.long().numpy(),
    )


def plain_predictions(learn: Any, dl: Any) -> np.ndarray:
    """Un-augmented probabilities (what TTA blends in with weight ``beta``), float32."""
    probs, _ = learn.get_preds(dl=dl)
    return probs.float().numpy()
