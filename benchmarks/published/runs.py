"""timm's published RTX 3090 training benchmark as ground truth: rows, brackets, halves and scores.

Pure data handling, no model in sight. A row whose recorded batch is below 512 is a *bracket*: the
recorded batch trained on the 24 GB card and the next larger value of timm's decay sequence did
not. Models are split into a calibration half and a held-out half by a stable hash of the name, so
constants are fitted on one half and judged on the other, and the split never changes between
runs or machines.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from benchmarks.paths import PUBLISHED_CSV
from benchmarks.published.split import is_calibration
from planner.base.gpus import get_gpu

GIB = 2**30
CARD_BYTES = get_gpu("RTX 3090").budget_bytes
"""What torch reports as the RTX 3090's total (23.70 GiB; its out-of-memory messages say "23.70 GiB total
capacity"): the budget a plan for that card gets, so the fitted overhead means what the product's does."""
DECAY_SEQUENCE = (512, 384, 256, 192, 128, 96, 64, 48, 32, 24, 16, 12, 8, 6, 4, 3, 2, 1)
"""timm 0.6.6 ``decay_batch_step`` from 512: the batches the benchmark tried, largest first."""

Half = Literal["calibration", "held_out"]
Outcome = Literal["exact", "unsafe", "cautious"]


@dataclass(frozen=True)
class PublishedRun:
    """One model's row: the largest batch that trained at ``image_size`` on the 24 GB card, and the
    training samples per second it reached there."""

    model: str
    batch: int
    image_size: int
    param_count_millions: float
    samples_per_sec: float

    @property
    def next_batch(self) -> int | None:
        """The next larger batch of the sequence, which did not train; None at the top (512)."""
        return larger_batch(self.batch)

    @property
    def bracketed(self) -> bool:
        return self.next_batch is not None


def larger_batch(batch: int) -> int | None:
    index = DECAY_SEQUENCE.index(batch)
    return DECAY_SEQUENCE[index - 1] if index > 0 else None


def smaller_batch(batch: int) -> int | None:
    index = DECAY_SEQUENCE.index(batch)
    return DECAY_SEQUENCE[index + 1] if index + 1 < len(DECAY_SEQUENCE) else None


def load_runs(path: Path = PUBLISHED_CSV) -> list[PublishedRun]:
    """Every row of the published CSV, in file order."""
    with open(path, newline="") as handle:
        return [PublishedRun(model=row["model"], batch=int(row["train_batch_size"]),
                             image_size=int(row["train_img_size"]),
                             param_count_millions=float(row["param_count"]),
                             samples_per_sec=float(row["train_samples_per_sec"]))
                for row in csv.DictReader(handle)]


def half_of(model: str) -> Half:
    """The model's half: first byte of SHA-256 of its name, even -> calibration, odd -> held out."""
    return "calibration" if is_calibration(model) else "held_out"


def family_of(model: str) -> str:
    """A coarse family for tables: the name's first word, digits and variants dropped
    (``resnet50_gn`` -> ``resnet``, ``swinv2_large...`` -> ``swinv2``, ``tf_efficientnet_b0`` -> ``efficientnet``)."""
    word = re.sub(r"^(tf|gluon|ig|ssl|swsl|legacy|timm|jx|gc)_", "", model).split("_")[0]
    match = re.match(r"([a-z]+?(?:v\d+)?)(?:\d|$)", word)
    return match.group(1) if match else word


def params_match(published_millions: float, built: int) -> bool:
    """The CSV rounds parameter counts to 0.01 M: a built model agrees within that rounding."""
    return abs(built / 1e6 - published_millions) <= 0.0051 + 1e-9


def predicted_batch(fits: dict[int, bool]) -> int | None:
    """The largest batch of the sequence predicted to fit, from ``fits`` (batch -> fits).

    Memory grows with the batch, so the answer is the largest fitting batch below the smallest
    failing one; None when no measured batch fits.
    """
    failing = min((b for b, ok in fits.items() if not ok), default=None)
    fitting = [b for b, ok in fits.items() if ok and (failing is None or b < failing)]
    return max(fitting, default=None)


def outcome(published: int, predicted: int | None) -> Outcome:
    """exact; unsafe (predicts a batch the card could not train); cautious (a smaller one)."""
    if predicted == published:
        return "exact"
    return "unsafe" if predicted is not None and predicted > published else "cautious"


def bracket_outcome(fits_published: bool, fits_next: bool) -> Outcome:
    """The outcome from the two bracket points alone (memory is monotone in the batch)."""
    if fits_next:
        return "unsafe"
    return "exact" if fits_published else "cautious"


@dataclass(frozen=True)
class Rates:
    """Outcome counts of a set of models."""

    total: int
    exact: int
    unsafe: int
    cautious: int

    @classmethod
    def of(cls, outcomes: Iterable[Outcome]) -> Rates:
        outcomes = list(outcomes)
        return cls(len(outcomes), outcomes.count("exact"), outcomes.count("unsafe"), outcomes.count("cautious"))

    def percent(self, count: int) -> float:
        return 100.0 * count / self.total if self.total else 0.0

    def row(self) -> str:
        return (f"{self.total:4d}  exact {self.percent(self.exact):5.1f} %  unsafe {self.percent(self.unsafe):5.1f} %"
                f"  cautious {self.percent(self.cautious):5.1f} %")


def rates_by(keys: Sequence[str], outcomes: Sequence[Outcome]) -> dict[str, Rates]:
    """Rates per key (e.g. per family), keys sorted."""
    grouped: dict[str, list[Outcome]] = {}
    for key, result in zip(keys, outcomes, strict=True):
        grouped.setdefault(key, []).append(result)
    return {key: Rates.of(grouped[key]) for key in sorted(grouped)}
