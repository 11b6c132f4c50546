"""The `planner` command line: thin commands over the stage cores.

Only this module imports typer and rich's console. Each command parses options, calls one core
function and prints its result; user mistakes (UserError) become one line on stderr and exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console

from planner.errors import PlanDoesNotFit, UserError

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


def main() -> None:
    """Console-script entry point: run the app and map user errors to one line and exit 2."""
    try:
        result = app(standalone_mode=False)
    except click.exceptions.ClickException as error:  # bad options: click's own one-liner
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
