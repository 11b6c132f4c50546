"""`planner demo`: the whole pipeline on real data, on the CPU, in a few minutes.

scikit-learn's handwritten digits are written as an image folder in the reference layout (see
``planner.demo_data``), then three tiny timm architectures go through probe (cpu meter), run
(fastai, from scratch) and tune-weights (Optuna), as a user would run the three commands.
"""

from __future__ import annotations

from planner.base.entries import EntrySpec, single_entry
from planner.base.plan import ItemTransform
from planner.demo_data import write_digits

__all__ = ["DEMO_BUDGET", "DEMO_EFFECTIVE_BATCH_SIZE", "DEMO_LR", "demo_entries", "write_digits"]

DEMO_ARCHS = ("resnet18", "convnext_atto", "resnet10t")
DEMO_SIZE = 32
DEMO_BUDGET = "1G"
DEMO_EFFECTIVE_BATCH_SIZE = 32
# From scratch, fine_tune's discriminative rates (body at lr/100) need a larger base rate than
# the reference's 0.01 for pretrained weights.
DEMO_LR = 0.1


def demo_entries() -> list[EntrySpec]:
    """The demo's models: three small timm architectures at 32 px (digits are 8 × 8, upscaled)."""
    item = ItemTransform(resize=DEMO_SIZE, method="squish")
    return [entry for arch in DEMO_ARCHS for entry in single_entry(arch, DEMO_SIZE, item=item)]
