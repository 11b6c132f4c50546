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


@app.callback()
def _group() -> None:
    """Keep `planner COMMAND` a group while one command is registered: typer would make it the app."""


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


TUNE_WEIGHTS_HELP = (
    "Tune ensemble weights on held-out predictions with Optuna; write weights.json, submission.csv "
    "and weights.png in RUN_DIR. Every method (each model alone, uniform, hand weights, greedy "
    "selection, the SLSQP optimum, Optuna) is scored in-sample and by K-fold cross-fitting; tuned "
    "weights replace the plain average only if their cross-fitted gain is beyond noise. The submission "
    'follows DATA/sample_submission.csv; DATA defaults to the "data" field of RUN_DIR/run.json.'
)


@app.command("tune-weights", help=TUNE_WEIGHTS_HELP)
def tune_weights_command(
    run_dir: Annotated[Path, typer.Argument(help="Run folder written by `planner run` (reads preds/*.npz).")],
    data: DataOption = None,
    trials: Annotated[
        int,
        typer.Option(
            "--trials",
            min=1,
            help="Completed trials the study should hold: a resumed study with fewer runs the rest, "
            "one with as many or more runs none. Cross-fitting runs min(N, 200) in-memory trials per fold.",
        ),
    ] = 500,
    sampler: Annotated[str, typer.Option("--sampler", help="Optuna sampler: tpe, cmaes or gp.")] = "tpe",
    seed: SeedOption = 0,
    storage: Annotated[
        str | None,
        typer.Option("--storage", help="Any Optuna storage URL.", show_default="sqlite:///RUN_DIR/optuna.db"),
    ] = None,
    study: Annotated[str, typer.Option("--study", help="Study name in the storage; reruns resume it.")] = (
        "tune-weights"
    ),
    hand_weights: Annotated[
        list[str] | None,
        typer.Option(
            "--hand-weights",
            metavar="NAME=W",
            help="Hand weight of one entry (repeat the option); entries not named keep the reference rule: "
            'names containing "vit" weigh 2, others 1.',
        ),
    ] = None,
    folds: Annotated[int, typer.Option("--folds", min=2, help="Folds of the honest cross-fitted score.")] = 5,
    force_weights: Annotated[
        bool,
        typer.Option(
            "--force-weights", help="Use the best fitted weights even if their gain is within noise."
        ),
    ] = False,
) -> None:
    """Thin command over ``planner.ensemble.tune.tune_weights``; its help is TUNE_WEIGHTS_HELP."""
    from rich.progress import Progress

    from planner.ensemble.report import scores_table
    from planner.ensemble.tune import TuneOptions, tune_weights

    options = TuneOptions(
        run_dir=run_dir,
        data=data,
        trials=trials,
        sampler=sampler,
        seed=seed,
        storage=storage,
        study=study,
        hand_weights=dict(map(_parse_hand_weight, hand_weights or [])),
        folds=folds,
        force_weights=force_weights,
    )
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
        tasks: dict[str, int] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        result = tune_weights(options, progress)
    console.print(scores_table(result))
    console.print(
        f"study {result.study.study_name!r} in {result.study.storage_shown}: {result.study.completed} trials "
        f"({result.study.ran} run now), best log loss {result.study.best_value:.4f}"
    )
    console.print(f"chosen: {result.chosen}. {result.reason}.")
    weights = zip(result.names, result.weights, strict=True)
    console.print("weights: " + ", ".join(f"{name} {weight:.3f}" for name, weight in weights))
    console.print(
        f"wrote {result.weights_path}, {result.submission_path}, {result.png_path} ({result.seconds:.1f} s)"
    )


def _parse_hand_weight(item: str) -> tuple[str, float]:
    """``"vit_large=2"`` → ``("vit_large", 2.0)``."""
    name, _, value = item.rpartition("=")
    try:
        if name:
            return name, float(value)
    except ValueError:
        pass
    raise UserError(f"--hand-weights expects NAME=WEIGHT, got {item!r}")
