"""`planner demo`: the whole pipeline on real data, on the CPU, in a few minutes.

scikit-learn's handwritten digits are written as an image folder in the reference layout (see
``planner.demo_data``), then three tiny timm architectures go through probe (cpu meter), run
(fastai, from scratch) and tune-weights (Optuna), as a user would run the three commands.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from planner.base.budget import parse_budget
from planner.base.entries import EntrySpec, single_entry
from planner.base.errors import UserError
from planner.base.plan import ItemTransform, Plan
from planner.demo_data import write_digits
from planner.ensemble.options import TuneOptions
from planner.probe.options import ProbeOptions
from planner_trainer.options import RunOptions

if TYPE_CHECKING:
    from planner.ensemble.results import TuneResult
    from planner_trainer.run import RunResult

__all__ = [
    "DEMO_BUDGET", "DEMO_EFFECTIVE_BATCH_SIZE", "DEMO_LR", "DemoShow", "demo_entries", "run_demo", "write_digits",
]

DEMO_ARCHS = ("resnet18", "convnext_atto", "resnet10t")
DEMO_SIZE = 32
DEMO_BUDGET = "1G"
DEMO_EFFECTIVE_BATCH_SIZE = 32
# From scratch, fine_tune's discriminative rates (body at lr/100) need a larger base rate than
# the reference's 0.01 for pretrained weights.
DEMO_LR = 0.1
MIN_DEMO_LIMIT = 100  # the smallest --limit


def demo_entries() -> list[EntrySpec]:
    """The demo's models: three small timm architectures at 32 px (digits are 8 × 8, upscaled)."""
    item = ItemTransform(resize=DEMO_SIZE, method="squish")
    return [entry for arch in DEMO_ARCHS for entry in single_entry(arch, DEMO_SIZE, item=item)]


class DemoShow(Protocol):
    """How the demo's steps are shown: the CLI renders each step as its command does."""

    def step(self, title: str) -> None:
        """A step starts (its title is the command a user would type)."""

    def probe(self, options: ProbeOptions, entries: list[EntrySpec]) -> Plan:
        """`planner probe` with these options and entries; returns the written plan."""

    def run(self, plan: Path, data: Path, run_dir: Path, options: RunOptions) -> RunResult:
        """`planner run`; returns its result."""

    def tune(self, options: TuneOptions) -> TuneResult:
        """`planner tune-weights`; returns its result."""

    def line(self, text: str) -> None:
        """One line of the summary."""


def run_demo(show: DemoShow, out: Path = Path("planner-demo"), *, limit: int | None = None, epochs: int = 3,
             trials: int = 200) -> None:
    """Write the digits under ``out``, then probe, run and tune-weights on them, and sum up.

    Args:
        show: shows each step (``planner.cli`` passes the commands' rendering).
        out: the demo folder: ``data/``, ``plan.json``, ``run/``.
        limit: use only this many of the 1,797 digits, for a quicker run (at least ``MIN_DEMO_LIMIT``).
        epochs: fine_tune epochs per model.
        trials: Optuna trials for the weights.

    Raises:
        UserError: a bad ``limit``, ``epochs`` or ``trials``, before anything is written.
    """
    if limit is not None and limit < MIN_DEMO_LIMIT:
        raise UserError(f"--limit {limit} must be at least {MIN_DEMO_LIMIT}")
    started = time.perf_counter()
    out = out.resolve()
    plan, run_dir = out / "plan.json", out / "run"
    run_options = RunOptions(epochs=epochs, lr=DEMO_LR, pretrained=False, device="cpu")
    tune_options = TuneOptions(run_dir=run_dir, trials=trials)
    data = write_digits(out / "data", limit=limit)
    show.step(f"1/3 planner probe --gpu-mem {DEMO_BUDGET} --device cpu  (digits written to {data})")
    show.probe(ProbeOptions(budgets=(parse_budget(DEMO_BUDGET),), effective_batch_size=DEMO_EFFECTIVE_BATCH_SIZE,
                            data=data, device="cpu", output=plan), demo_entries())
    show.step(f"2/3 planner run {plan} --no-pretrained --device cpu --epochs {epochs}")
    run = show.run(plan, data, run_dir, run_options)
    show.step(f"3/3 planner tune-weights {run_dir} --trials {trials}")
    tune = show.tune(tune_options)
    show.step("demo summary")
    for name in run.names:
        metrics = run.run.entries[name].metrics
        show.line(f"held-out accuracy {1 - metrics.error_rate:6.1%}  {name}")
    chosen = next(method for method in tune.methods if method.name == tune.chosen)
    show.line(f"held-out accuracy {1 - chosen.error_rate:6.1%}  ensemble ({tune.chosen} weights)")
    show.line(f"submission: {tune.submission_path}  ({time.perf_counter() - started:.0f} s in all)")
