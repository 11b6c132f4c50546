"""The `planner` command line: thin commands over the stage cores.

Only this module imports typer and rich's console. Each command parses options, calls one core
function and prints its result; user mistakes (UserError) become one line on stderr and exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import click
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from planner.errors import PlanDoesNotFit, UserError

if TYPE_CHECKING:
    from trainer.run import RunResult

app = typer.Typer(
    help="Plan, train and ensemble large image models on a GPU that is too small for them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

EXIT_USER_ERROR = 2
EXIT_DOES_NOT_FIT = 3

# Option types declared once and reused by the commands.
DataOption = Annotated[
    Path | None, typer.Option("--data", help="Data folder: train_images/<label>/*, test_images/*.")
]
SeedOption = Annotated[int, typer.Option("--seed", help="Random seed.")]


@app.callback()
def _group() -> None:
    """Keep `planner COMMAND` a group while one command is registered: typer would make it the app."""


def main() -> None:
    """Console-script entry point: run the app and map user errors to one line and exit 2."""
    try:
        result = app(standalone_mode=False)
    except (click.exceptions.ClickException, typer.TyperException) as error:  # bad options: one-liner
        # recent typer vendors click: its usage errors derive from TyperException, not from click's
        error.show()
        sys.exit(EXIT_USER_ERROR)
    except click.exceptions.Abort:
        err_console.print("interrupted")
        sys.exit(130)
    except UserError as error:
        err_console.print(f"error: {error}", soft_wrap=True)
        sys.exit(EXIT_USER_ERROR)
    except PlanDoesNotFit as error:
        err_console.print(f"{error}", soft_wrap=True)
        sys.exit(EXIT_DOES_NOT_FIT)
    sys.exit(result if isinstance(result, int) else 0)


# Options of `planner run`.
RunDirOption = Annotated[Path, typer.Option(
    "--out", "-o", help="Run folder: split.json, run.json, run.log, preds/<entry>.npz. Rerun to resume.")]
EpochsOption = Annotated[int, typer.Option("--epochs", min=1, help="fine_tune epochs after its frozen one.")]
LrOption = Annotated[float, typer.Option("--lr", help="fine_tune base learning rate.")]
NoPretrainedOption = Annotated[bool, typer.Option("--no-pretrained", help="Start from random weights.")]
DeviceOption = Annotated[Literal["auto", "cuda", "cpu"], typer.Option(
    "--device", help="auto: cuda if available, else cpu (fp32).")]
ValidPctOption = Annotated[float, typer.Option("--valid-pct", help="Held-out fraction (one split per run).")]
CpuMemoryLimitOption = Annotated[str | None, typer.Option(
    "--cpu-memory-limit", envvar="PLANNER_CPU_MEMORY_LIMIT", hidden=True,
    help="Testing aid: on the CPU, raise out-of-memory above this many tracked bytes (e.g. 300M).")]


@app.command("run")
def run(
    plan: Annotated[Path, typer.Argument(help="plan.json written by `planner probe`.")],
    out: RunDirOption,
    data: DataOption = None,
    epochs: EpochsOption = 12,
    lr: LrOption = 0.01,
    no_pretrained: NoPretrainedOption = False,
    device: DeviceOption = "auto",
    valid_pct: ValidPctOption = 0.2,
    seed: SeedOption = 42,
    cpu_memory_limit: CpuMemoryLimitOption = None,
) -> int:
    """Train every plan entry with fastai on one shared held-out split; save TTA predictions."""
    from planner.budget import parse_budget
    from trainer.progress import RichReporter
    from trainer.run import RunOptions, run_plan

    if data is None:
        raise UserError("planner run needs --data DIR (train_images/<label>/*, test_images/*)")
    options = RunOptions(
        epochs=epochs, lr=lr, pretrained=not no_pretrained, device=device, valid_pct=valid_pct, seed=seed,
        cpu_memory_limit=parse_budget(cpu_memory_limit) if cpu_memory_limit else None,
    )
    result = run_plan(plan, data, out, options, RichReporter(console))
    _print_run_summary(result)
    return 1 if result.failed else 0


def _print_run_summary(result: RunResult) -> None:
    """The run's table: predicted against measured peaks, held-out scores, out-of-memory retries."""
    from trainer.progress import SUMMARY_COLUMNS, SUMMARY_NOTE, summary_rows

    table = Table(*SUMMARY_COLUMNS, title=f"planner run: {result.run_dir}", box=box.SIMPLE_HEAD)
    for row in summary_rows(result.run, result.names):
        table.add_row(*row)
    if not console.is_terminal:  # a log is not 80 columns wide: print the table at its natural width
        table.width = console.measure(table, options=console.options.update_width(250)).maximum
    console.print(table, crop=False)
    console.print(SUMMARY_NOTE, soft_wrap=True)
    if result.device == "cpu":
        console.print("CPU training is fp32: fastai's to_fp16 uses CUDA autocast only.")
