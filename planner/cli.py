"""The `planner` command line: thin commands over the stage cores.

Only this module imports typer and rich's console. Each command parses options, calls one core
function and prints its result; user mistakes (UserError) become one line on stderr and exit 2.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from planner.base.atomic import write_fault
from planner.base.errors import PlanDoesNotFit, UserError, path_fault
from planner.ensemble.options import TuneOptions
from planner.ensemble.storage import DEFAULT_STUDY
from planner.probe.options import ProbeOptions
from planner.terminal import EXIT_OUTPUT_CLOSED, OutputClosed, guard_streams
from planner_trainer.options import PredictOptions, RayOptions, RunOptions, ray_options_for

app = typer.Typer(
    help="Plan, train and ensemble large image models on a GPU that is too small for them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# In a CI log (not a terminal) rich would wrap tables at 80 columns; give them room instead.
_LOG_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 140
console = Console(highlight=False, width=_LOG_WIDTH)
err_console = Console(stderr=True, highlight=False, width=_LOG_WIDTH)

EXIT_USER_ERROR = 2
EXIT_DOES_NOT_FIT = 3
EXIT_INTERRUPTED = 130  # as a shell reports a command stopped by SIGINT
EXIT_TERMINATED = 143  # as a shell reports a command stopped by SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill PID`, `timeout`, a batch scheduler or `docker stop` ending the job), raised where the
    command runs so that it stops as on Ctrl-C: the entry in training is marked interrupted, temporary
    files, worker processes and Ray are cleaned up, where Python's default would end the process on the spot."""

    received = False  # typer exits 130 on any KeyboardInterrupt; main() makes it 143 for this one


def _raise_terminated(_signum: int, _frame: object) -> None:
    Terminated.received = True
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once, cleanup or not
    raise Terminated

# Option types declared once and reused by the commands.
DataOption = Annotated[
    Path | None, typer.Option("--data", help="Data folder: train_images/<label>/*, test_images/*.")
]
SeedOption = Annotated[int, typer.Option("--seed", help="Random seed.")]


class ProbeDevice(str, Enum):
    auto = "auto"
    cuda = "cuda"
    cpu = "cpu"
    estimate = "estimate"


def _show_version(value: bool) -> None:
    if value:
        from planner import __version__

        console.print(f"planner {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_show_version,
                                          help="Show the version and exit.")] = False,
) -> None:
    """Plan, train and ensemble large image models on a GPU that is too small for them.

    planner probe -> plan.json; planner run plan.json -> run folder; planner tune-weights RUN_DIR;
    planner predict RUN_DIR IMAGES.
    """


def main() -> None:
    """Console-script entry point: user errors become one line and exit 2, misfits exit 3, SIGTERM stops
    a command as Ctrl-C does (exit 143).

    click's usage errors (unknown options, values of the wrong type) are one line and exit 2 as well.
    """
    # Warnings of the libraries planner uses that the user cannot act on: fastai imports torch.jit.script
    # (deprecated in recent torch) and sets pandas' chained-assignment option (deprecated in pandas 3).
    warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.script.*")
    warnings.filterwarnings("ignore", message="The 'mode.chained_assignment' option is deprecated")
    signal.signal(signal.SIGTERM, _raise_terminated)
    guard_streams()
    try:
        os.getcwd()
    except FileNotFoundError:  # torch's libraries would end the process with a cryptic oneMKL "FATAL ERROR"
        err_console.print("error: the current folder no longer exists (deleted or moved): cd into an existing folder "
                          "and rerun", soft_wrap=True, markup=False)
        sys.exit(EXIT_USER_ERROR)
    try:
        code = app(standalone_mode=False)
    except _USAGE_ERROR as error:
        sys.exit(_report_usage_error(error))
    except SystemExit as done:
        if done.code == EXIT_INTERRUPTED:
            sys.exit(_stopped_code())
        raise
    except UserError as error:
        err_console.print(f"error: {error}", soft_wrap=True, markup=False)
        sys.exit(EXIT_USER_ERROR)
    except OSError as error:
        fault = write_fault(error) or path_fault(error)
        if fault is None:
            raise
        err_console.print(f"error: {fault}", soft_wrap=True, markup=False)
        sys.exit(EXIT_USER_ERROR)
    except PlanDoesNotFit as error:
        err_console.print(f"{error}", soft_wrap=True, markup=False)
        sys.exit(EXIT_DOES_NOT_FIT)
    if code == EXIT_INTERRUPTED:
        code = _stopped_code()
    sys.exit(code if isinstance(code, int) else 0)


def _stopped_code() -> int:
    """The exit code of a command stopped by a KeyboardInterrupt: Ctrl-C's, SIGTERM's or a closed output pipe's."""
    if OutputClosed.received:
        return EXIT_OUTPUT_CLOSED
    return EXIT_TERMINATED if Terminated.received else EXIT_INTERRUPTED


def _stop_reason() -> str:
    """What stopped a command, for its closing line."""
    if OutputClosed.received:
        return ("stopped: the pipe its output went to was closed (its reader, e.g. `head` or a pager, ended; "
                "send the output to a file, `> log`, to let it finish)")
    return "terminated (SIGTERM)" if Terminated.received else "interrupted (Ctrl-C)"


def _print_table(table: Table) -> None:
    """Print ``table``; in a terminal too narrow for its columns' longest words (where rich would cut every
    cell to an ellipsis) print each row as "header: value" lines instead, which stay readable."""
    if console.measure(table, options=console.options.update_width(10_000)).minimum <= console.width:
        console.print(table)
        return
    if table.title:
        console.print(table.title)
    columns = [(f"{column.header}:", list(column.cells)) for column in table.columns]
    for row in range(table.row_count):
        record = Table.grid(padding=(0, 1))
        record.add_column(no_wrap=True)
        record.add_column(overflow="fold")
        for header, cells in columns:
            record.add_row(header, cells[row])
        console.print(record, style=table.rows[row].style)
        console.print()
    if table.caption:
        console.print(table.caption)


# click's usage error (an unknown option or command, a value of the wrong type, a missing value), as the
# installed typer raises it: its own copy of click since 0.2x, click itself before.
_USAGE_ERROR: type[Exception] = next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "UsageError")


def _report_usage_error(error: Exception) -> int:
    """Print a usage error as one line naming the problem and where the options are listed; its exit code.

    A bare ``planner`` is a usage error too (click 8.2 and later), whose help has been printed already."""
    if type(error).__name__ == "NoArgsIsHelpError":
        return error.exit_code
    message = " ".join(error.format_message().split()).rstrip(".")
    command = error.ctx.command_path if error.ctx is not None else "planner"
    err_console.print(f"error: {message[:1].lower()}{message[1:]}: see {command} --help", soft_wrap=True,
                      markup=False)
    return EXIT_USER_ERROR


def _parse_size(text: str) -> tuple[int, int]:
    from planner.base.entries import as_size

    parts = text.replace("x", ",").replace("X", ",").split(",")
    try:
        return as_size([int(part) for part in parts], where="--size")
    except ValueError:
        raise UserError(f"--size {text!r} must be an integer or ROWSxCOLS, e.g. 224 or 320x224") from None


def _probe_and_show(options, entries=None):
    """Probe with progress, write the plan, show its table and time summary (and, for several cards,
    the comparison); returns the plan."""
    from planner.probe.command import compare_plans, make_plan
    from planner.probe.report import ProbeProgress, cards_table, margin_line, plan_table, timing_summary
    from planner_trainer.progress import live_bars

    reporter = ProbeProgress(console, live=live_bars(console))
    comparison = None
    with reporter.progress:
        if len(options.gpus) > 1:
            plan, comparison = compare_plans(options, reporter, entries)
        else:
            plan = make_plan(options, reporter, entries)
    _print_table(plan_table(plan))
    console.print(margin_line(plan), soft_wrap=True)
    if plan.measured_on.device_model is not None:
        from planner.probe.meters.calibration import describe_device_model

        console.print(describe_device_model(plan.measured_on.device_model), soft_wrap=True)
    summary = timing_summary(plan)
    if summary:
        console.print(summary, soft_wrap=True)
    if comparison is not None:
        from planner.probe.cards import comparison_path

        _print_table(cards_table(comparison))
        console.print(f"comparison written to {comparison_path(options.output)}")
    console.print(f"plan written to {options.output} ({plan.seconds:.1f} s)")
    return plan


@app.command()
def probe(
    gpu_mem: Annotated[list[str] | None, typer.Option(
        "--gpu-mem", help="Card size to plan for: 16G, 16GB, 16GiB, 16280MiB, 16000M, 1.5T. Every unit is "
        "binary (G = 2^30 bytes), as nvidia-smi and PyTorch report memory; the size is the whole card. "
        "Repeat it for mixed GPUs (--gpu-mem 16G --gpu-mem 80G): the plan is for the smallest, and each "
        "entry also gets a (micro-batch, accum) pair per size, which `planner run --backend ray` picks "
        "from by the GPU a task gets. Without it: --gpu's memory, else this machine's GPU.")] = None,
    gpu: Annotated[list[str] | None, typer.Option(
        "--gpu", help="A card by name (T4, P100, V100-16G, V100-32G, A10G, A10, L4, L40S, RTX 3090, RTX 4090, "
        "A100-40G, A100-80G, H100, H100-PCIE): its usable memory is the budget (unless --gpu-mem) and its speed "
        "gives each entry's predicted epoch and run time. Repeat it to compare cards: a plan for each, "
        "one table, PLAN.cards.json beside the plan; plan.json is for the first (or --for).")] = None,
    plan_for: Annotated[str | None, typer.Option(
        "--for", help="With several --gpu: the card plan.json is for.", show_default="the first --gpu")] = None,
    price: Annotated[list[str] | None, typer.Option(
        "--price", metavar="CARD=USD_PER_HOUR", help="With several --gpu: the price of a card per hour, to "
        "show each plan's cost (repeat it; no prices are built in).")] = None,
    epochs: Annotated[int, typer.Option("--epochs",
                                        help="Epochs of fine_tune the times are for.")] = ProbeOptions.epochs,
    host_speed: Annotated[float, typer.Option(
        "--host-speed", help="How fast the CPU of the machine that will train is per core, relative to this "
        "one (0.5: half as fast): the host's share of each step (Python dispatching every op, fastai's "
        "optimizer stepping each parameter) and, with a data folder, its image loading are measured here and "
        "scaled by it.")] = ProbeOptions.host_speed,
    plot: Annotated[bool, typer.Option(
        "--plot", help="Also draw the plan beside it (plan.png): per entry, predicted peak against "
        "micro-batch with the budget, and the predicted epoch time of each candidate.")] = False,
    models: Annotated[Path | None, typer.Option(
        "--models", help="TOML or JSON models file: a list `model` of {arch, item, sizes}; "
        "replaces the reference set.")] = None,
    arch: Annotated[str | None, typer.Option("--arch", help="One timm architecture (with --size).")] = None,
    size: Annotated[str | None, typer.Option("--size", help="Final size for --arch: 224 or 320x224.")] = None,
    effective_bs: Annotated[int, typer.Option("--effective-bs",
                                              help="Samples per optimizer step.")] = ProbeOptions.effective_batch_size,
    data: DataOption = None,
    device: Annotated[ProbeDevice, typer.Option(
        "--device", help="auto: cuda when a GPU is present, else estimate.")] = ProbeDevice(ProbeOptions.device),
    margin: Annotated[str | None, typer.Option(
        "--margin", help="Fraction of the card kept free (0–0.5, or a percentage: 0.1 or 10%). Default: the one "
                         "covering the meter's measured probe-to-run error, which the plan records.",
        show_default=False)] = None,
    output: Annotated[Path, typer.Option("-o", "--output",
                                         help="Where to write the plan.")] = ProbeOptions.output,
    checkpointing: Annotated[bool, typer.Option(
        "--checkpointing/--no-checkpointing",
        help="Weigh timm's activation checkpointing. Rule: the smallest accumulation without "
        "checkpointing when one fits at a micro-batch the model's normalisation accepts (any without "
        "BatchNorm in the body, at least 8 with it); otherwise the configuration predicted to train "
        "fastest among those that fit, checkpointing included. --no-checkpointing never uses it.")] = (
        ProbeOptions.checkpointing),
    jobs: Annotated[int | None, typer.Option(
        "--jobs", "-j", show_default="one per core other processes leave free",
        help="Processes that probe architectures side by side with --device estimate (its probes need no "
        "device; the plan is the same with any number). --jobs 1 probes in this process.")] = ProbeOptions.jobs,
    loader_workers: Annotated[int | None, typer.Option(
        "--loader-workers", show_default="one per core here, up to 16 (none with --device cpu), as planner run uses",
        help="With a data folder: the DataLoader workers of the machine that trains. The probe times decoding and "
        "resizing a sample of the folder's images here and scales it to them; each pass then takes the slowest of "
        "card, host and loader. 0: the training process decodes between steps.")] = ProbeOptions.loader_workers,
) -> None:
    """Measure training steps and plan the gradient accumulation that fits a GPU memory budget."""
    from planner.base.budget import parse_budget
    from planner.probe.command import misfit_message

    options = ProbeOptions(
        budgets=tuple(parse_budget(text) for text in gpu_mem or []), gpus=tuple(gpu or ()), plan_for=plan_for,
        prices=_named_numbers(price, "--price", "CARD=USD_PER_HOUR, e.g. --price A100-80G=1.9"), models=models,
        arch=arch, size=_parse_size(size) if size is not None else None, effective_batch_size=effective_bs, data=data,
        device=device.value, margin=None if margin is None else _parse_fraction(margin, "--margin"), output=output,
        checkpointing=checkpointing, epochs=epochs, host_speed=host_speed, jobs=jobs, loader_workers=loader_workers,
    )
    plan = _probe_and_show(options)
    if plot:
        from planner.probe.plot import plot_plan

        console.print(f"plot written to {plot_plan(plan, output.with_suffix('.png'))}")
    unfit = misfit_message(plan, checkpointing)
    if unfit:
        raise PlanDoesNotFit(unfit)


TUNE_WEIGHTS_HELP = (
    "Tune ensemble weights on held-out predictions with Optuna; write weights.json, submission.csv "
    "and weights.png in RUN_DIR. Every method (each model alone, uniform, hand weights, greedy "
    "selection, the SLSQP optimum, Optuna) is scored in-sample and by K-fold cross-fitting; tuned "
    "weights replace the plain average only if their cross-fitted gain over it is at least 2 standard "
    "errors of log loss and 0.3 points of error rate; the report says which condition failed. The submission "
    'follows DATA/sample_submission.csv; DATA defaults to the "data" field of RUN_DIR/run.json.'
)


@app.command("tune-weights", help=TUNE_WEIGHTS_HELP)
def tune_weights_command(
    run_dir: Annotated[Path | None, typer.Argument(
        help="Run folder written by `planner run` (reads preds/*.npz).",
        show_default="the most recently updated run folder here or in runs/")] = None,
    data: DataOption = None,
    trials: Annotated[
        int,
        typer.Option(
            "--trials",
            help="Completed trials the study should hold: a resumed study with fewer runs the rest, "
            "one with as many or more runs none. Cross-fitting runs min(N, 200) in-memory trials per fold.",
        ),
    ] = TuneOptions.trials,
    sampler: Annotated[str, typer.Option("--sampler", help="Optuna sampler: tpe, cmaes or gp.")] = TuneOptions.sampler,
    seed: SeedOption = TuneOptions.seed,
    storage: Annotated[
        str | None,
        typer.Option("--storage", help="Any Optuna storage URL. A SQLite file takes one tune-weights at a time; "
                     "several processes or machines share a study on a server, e.g. postgresql://USER@HOST/DB "
                     "(--trials is then the study's total).", show_default="sqlite:///RUN_DIR/optuna.db"),
    ] = None,
    study: Annotated[
        str | None,
        typer.Option("--study", help="Study name in the storage; reruns resume it. Default: a study per set of "
                     "predictions (tune-weights-<hash> once an entry was added or trained again).",
                     show_default=DEFAULT_STUDY),
    ] = TuneOptions.study,
    hand_weights: Annotated[
        list[str] | None,
        typer.Option(
            "--hand-weights",
            metavar="NAME=W",
            help="Hand weight of one entry (repeat the option); entries not named keep the reference rule: "
            'names containing "vit" weigh 2, others 1.',
        ),
    ] = None,
    folds: Annotated[int, typer.Option("--folds", help="Folds of the honest cross-fitted score.")] = (
        TuneOptions.folds),
    force_weights: Annotated[
        bool,
        typer.Option(
            "--force-weights", help="Use the best fitted weights even if their cross-fitted gain fails the rule above."
        ),
    ] = TuneOptions.force_weights,
) -> None:
    """Thin command over ``planner.ensemble.tune.tune_weights``; its help is TUNE_WEIGHTS_HELP."""
    options = TuneOptions(
        run_dir=run_dir,
        data=data,
        trials=trials,
        sampler=sampler,
        seed=seed,
        storage=storage,
        study=study,
        hand_weights=_named_numbers(hand_weights, "--hand-weights", "NAME=WEIGHT"),
        folds=folds,
        force_weights=force_weights,
    )
    result = _tune_and_show(options)
    if run_dir is None:
        console.print(f"run folder: {result.run_dir} (the most recently updated)")


@contextmanager
def _trial_progress():
    """Optuna trial bars on a terminal (nothing in a log: ``live_bars``); yields the core's progress callback."""
    from rich.progress import Progress

    from planner_trainer.progress import live_bars

    with Progress(console=console, transient=True, disable=not live_bars(console)) as bar:
        tasks: dict[str, int] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        yield progress


def _tune_and_show(options):
    """Tune with trial progress, then show every method's scores and the choice; returns the result."""
    from planner.ensemble.report import scores_table
    from planner.ensemble.tune import tune_weights

    with _trial_progress() as progress:
        result = tune_weights(options, progress)

    _print_table(scores_table(result))
    if result.storage_note:
        console.print(result.storage_note, soft_wrap=True)
    console.print(
        f"study {result.study.study_name!r} in {result.study.storage_shown}: {result.study.completed} trials "
        f"({result.study.ran} run now), best log loss {result.study.best_value:.4f}"
    )
    if result.study.storage is not None:
        import shlex

        console.print(f"open it in optuna-dashboard (pip install optuna-dashboard): "
                      f"optuna-dashboard {shlex.quote(result.study.storage_shown)}", soft_wrap=True)
    console.print(f"chosen: {result.chosen}. {result.reason}.")
    weights = zip(result.names, result.weights, strict=True)
    console.print("weights: " + ", ".join(f"{name} {weight:.3f}" for name, weight in weights))
    if result.left_out:
        console.print(f"left out, no predictions: {', '.join(result.left_out)}", soft_wrap=True)
    console.print(
        f"wrote {result.weights_path}, {result.submission_path}, {result.png_path} ({result.seconds:.1f} s)"
    )
    return result


def _parse_fraction(text: str, option: str) -> float:
    """``"0.1"`` or ``"10%"`` → 0.1: a fraction as plans print it (margin 4%) or as a number.

    Raises:
        UserError: neither a number nor a percentage.
    """
    number = text.strip()
    percent = number.endswith("%")
    try:
        value = float(number.removesuffix("%"))
    except ValueError:
        raise UserError(f"{option} {text!r} is not a fraction: write it as 0.1 or 10%") from None
    return value / 100 if percent else value


def _named_numbers(items: list[str] | None, option: str, form: str) -> dict[str, float]:
    """The ``NAME=NUMBER`` items of a repeatable option by name.

    Raises:
        UserError: an item is not ``NAME=NUMBER``, or names what another item names (which should win is unclear).
    """
    pairs = [_parse_named_number(item, option, form) for item in items or []]
    names = [name for name, _ in pairs]
    twice = next((name for name in names if names.count(name) > 1), None)
    if twice is not None:
        raise UserError(f"{option} gives {twice} twice: give it once")
    return dict(pairs)


def _parse_named_number(item: str, option: str, form: str) -> tuple[str, float]:
    """``"vit_large=2"`` → ``("vit_large", 2.0)``: one ``NAME=NUMBER`` of a repeatable option.

    Raises:
        UserError: ``item`` is not ``NAME=NUMBER`` (the message says ``option expects form``).
    """
    name, _, value = item.rpartition("=")
    try:
        if name:
            return name, float(value)
    except ValueError:
        pass
    raise UserError(f"{option} expects {form}, got {item!r}")

# Options of `planner run`.
RunDirOption = Annotated[Path | None, typer.Option(
    "--out", "-o", help="Run folder: split.json, run.json, run.log, preds/<entry>.npz. Rerun to resume.",
    show_default="runs/<plan name> beside the plan")]
EpochsOption = Annotated[int, typer.Option("--epochs", help="fine_tune epochs after its frozen one.")]
LrOption = Annotated[float, typer.Option("--lr", help="fine_tune base learning rate.")]
NoPretrainedOption = Annotated[bool, typer.Option("--no-pretrained", help="Start from random weights.")]


class RunDevice(str, Enum):
    auto = "auto"
    cuda = "cuda"
    cpu = "cpu"


# An Enum, not a Literal: typer reads Literal options only from 0.19 on (pyproject's floor is lower).
DeviceOption = Annotated[RunDevice, typer.Option("--device", help="auto: cuda if available, else cpu (fp32).")]
ValidPctOption = Annotated[float, typer.Option("--valid-pct", help="Held-out fraction (one split per run).")]


class BackendName(str, Enum):
    local = "local"
    ray = "ray"


BackendOption = Annotated[BackendName, typer.Option(
    "--backend", help="local: one entry after another in this process. ray: entries as Ray tasks over every "
    "GPU of a Ray cluster (pip install 'fit-planner\\[ray]'); RUN_DIR and --data must be at the same path on every "
    "node.")]
RayAddressOption = Annotated[str | None, typer.Option(
    "--ray-address", help="Ray cluster to join (auto, host:6379, ray://host:10001); default: start a local "
    "Ray instance for this run.", show_default=False)]
GpusPerEntryOption = Annotated[float, typer.Option(
    "--gpus-per-entry", help="ray: GPUs each entry's task asks for; a fraction below 1 shares cards, 0 "
    "trains on CPU workers.")]
PackOption = Annotated[bool, typer.Option(
    "--pack", help="ray: ask each entry for the fraction of a GPU its predicted peak (plus the plan's margin) "
    "needs, so that small entries share a large card; each task's process is capped to its share.")]
MaxRetriesOption = Annotated[int, typer.Option(
    "--max-retries", help="ray: retries of an entry whose worker or node died.")]


def _run_and_show(plan: Path, data: Path | None, out: Path | None, options, backend=None):
    """Train with live progress (on ``backend``: the local one by default), then show the summary
    table; returns the run's result."""
    from planner_trainer.progress import SUMMARY_COLUMNS, SUMMARY_NOTE, RichReporter, summary_rows
    from planner_trainer.run import run_plan

    result = run_plan(plan, data, out, options, RichReporter(console), backend)

    table = Table(*SUMMARY_COLUMNS, title=f"planner run: {result.run_dir}", box=box.SIMPLE_HEAD)
    for row in summary_rows(result.run, result.names):
        table.add_row(*row)
    if not console.is_terminal:  # a log is not 80 columns wide: print the table at its natural width
        table.width = console.measure(table, options=console.options.update_width(250)).maximum
        console.print(table, crop=False)
    else:
        _print_table(table)
    console.print(SUMMARY_NOTE, soft_wrap=True)
    if result.device == "cpu":
        console.print("CPU training is fp32: fastai's to_fp16 uses CUDA autocast only.")
    if result.device == "cuda" and backend is None:
        from planner.probe.recalibrate import record_run

        pairs_file = record_run(result.run)
        if pairs_file is not None:
            console.print(f"measured peaks paired with the estimate in {pairs_file} (planner calibrate uses them)")
    return result


@app.command("run")
def run(
    plan: Annotated[Path, typer.Argument(help="plan.json written by `planner probe`.")],
    out: RunDirOption = None,
    data: Annotated[Path | None, typer.Option(
        "--data", help="Data folder: train_images/<label>/*, test_images/*.",
        show_default="the plan's data folder, else . when it holds train_images/")] = None,
    epochs: EpochsOption = RunOptions.epochs,
    lr: LrOption = RunOptions.lr,
    no_pretrained: NoPretrainedOption = not RunOptions.pretrained,
    device: DeviceOption = RunDevice(RunOptions.device),
    valid_pct: ValidPctOption = RunOptions.valid_pct,
    seed: SeedOption = RunOptions.seed,
    backend: BackendOption = BackendName.local,
    ray_address: RayAddressOption = None,
    gpus_per_entry: GpusPerEntryOption = RayOptions.gpus_per_entry,
    pack: PackOption = RayOptions.pack,
    max_retries: MaxRetriesOption = RayOptions.max_retries,
    include_misfits: Annotated[bool, typer.Option(
        "--include-misfits", help="Also train entries the plan marks as not fitting the card (skipped by "
        "default, exit 3).")] = RunOptions.include_misfits,
    save_models: Annotated[bool, typer.Option(
        "--save-models/--no-save-models", help="Keep each trained model in RUN_DIR/models (safetensors weights "
        "+ JSON recipe) for `planner predict`.")] = RunOptions.save_models,
    retrain: Annotated[bool, typer.Option(
        "--retrain", help="Train every entry again, finished ones too, on the data as it is now. When the "
        "training images or classes changed since the folder was trained, it starts afresh: a new held-out "
        "split, and its predictions and models are replaced.")] = RunOptions.retrain,
) -> None:
    """Train every plan entry with fastai on one shared held-out split; save TTA predictions.

    Exit codes: 0 all trained; 1 an entry failed; 3 entries the plan marks as not fitting were skipped."""
    options = RunOptions(
        epochs=epochs, lr=lr, pretrained=not no_pretrained, device=device.value, valid_pct=valid_pct, seed=seed,
        include_misfits=include_misfits, save_models=save_models, retrain=retrain,
    )
    ray = ray_options_for(backend.value, RayOptions(address=ray_address, gpus_per_entry=gpus_per_entry, pack=pack,
                                                    max_retries=max_retries))
    where = None
    if ray is not None:
        from planner_trainer.ray_backend import RayBackend

        where = RayBackend(ray)
    try:
        result = _run_and_show(plan, data, out, options, where)
    except KeyboardInterrupt:  # Ray's waits raise a KeyboardInterrupt of their own for our Terminated: ask the flag
        err_console.print(f"{_stop_reason()}: finished entries are kept; rerun the same command to resume",
                          soft_wrap=True, markup=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if result.failed:
        raise typer.Exit(1)
    if result.skipped:
        raise typer.Exit(EXIT_DOES_NOT_FIT)


@app.command("predict")
def predict_command(
    run_dir: Annotated[Path, typer.Argument(help="Run folder written by `planner run` (reads models/, weights.json).")],
    images: Annotated[list[Path], typer.Argument(help="Image files or folders of images.")],
    tta: Annotated[bool, typer.Option(
        "--tta/--no-tta", help="The run's seeded TTA (reproduces its test probabilities), or the plain pass only.")]
    = PredictOptions.tta,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the CSV.")] = Path("predictions.csv"),
    probs: Annotated[bool, typer.Option("--probs", help="Add one probability column per class.")] = False,
    device: DeviceOption = RunDevice(PredictOptions.device),
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", help="Images per batch; default: each entry's training micro-batch, which "
        "reproduces the run's TTA draws (inference needs less memory than training at that batch).",
        show_default=False)] = None,
    uniform: Annotated[bool, typer.Option(
        "--uniform", help="Average every saved model with equal weights, ignoring weights.json (e.g. one tuned "
        "before the run's last entries were trained).")] = PredictOptions.uniform,
) -> None:
    """Predict images with the run's saved models, combined with weights.json (uniform without one).

    weights.json must weigh every saved model: after training more entries, rerun tune-weights or pass
    --uniform. Writes image_id,label per image. Exit codes: 0 all predicted; 1 some images could not be
    read (listed on stderr, the others are in the CSV); 2 a user mistake."""
    from planner.base.atomic import check_writable
    from planner.ensemble.record import load_weights
    from planner_trainer.predict import predict, write_predictions_csv

    options = PredictOptions(tta=tta, device=device, batch_size=batch_size, uniform=uniform)
    check_writable(output, "-o", folder=False)
    weights = None if options.uniform else load_weights(run_dir)  # --uniform: not even a damaged one stops it
    with _trial_progress() as progress:
        result = predict(run_dir, images, weights, options, progress)
    path = write_predictions_csv(output, result, probs=probs)
    for miss in result.unreadable:
        err_console.print(f"error: cannot read image {miss.path} ({miss.reason}): not predicted",
                          soft_wrap=True, markup=False)
    shown = ", ".join(f"{name} {weight:.3f}" for name, weight in result.weights.items())
    unread = f", {len(result.unreadable)} unreadable (listed on stderr)" if result.unreadable else ""
    console.print(f"{len(result.names)} image(s) predicted on {result.device} ({'TTA' if tta else 'no TTA'})"
                  f"{unread}; weights ({result.weights_source}): {shown}", soft_wrap=True)
    console.print(f"wrote {path}", soft_wrap=True)
    if result.unreadable:
        raise typer.Exit(1)


@app.command("calibrate")
def calibrate_command(
    pairs: Annotated[list[Path] | None, typer.Argument(
        help="Pairs files measured on other machines (their ~/.cache/planner/calibration/pairs.jsonl); "
        "added to this machine's.", show_default="this machine's pairs only")] = None,
) -> None:
    """Refit the estimate's device constants for every card planner measured peaks on (cuda-meter probes,
    `planner run` on a GPU); later estimate plans for that card, torch and allocator use them."""
    from planner.probe.recalibrate import calibrate_stacks

    report = calibrate_stacks(pairs or ())
    table = Table("card, torch, allocator", "pairs", "constants before", "after", "median error before → after",
                  "worst under before → after", "held back", title=f"planner calibrate: {report.pairs} pairs",
                  box=box.SIMPLE_HEAD)

    def constants(device) -> str:
        return f"{device.reserved_factor:.2f} × {device.allocator} + {device.overhead_bytes / 2**20:,.0f} MiB"

    for result in report.calibrations:
        before, after = result.errors_before, result.errors_after
        table.add_row(result.stack.describe(), str(after.count), constants(result.before.device),
                      constants(result.device), f"{before.median:+.1%} → {after.median:+.1%}",
                      f"{before.worst_under:+.1%} → {after.worst_under:+.1%}",
                      result.held_back or "–")
    _print_table(table)
    console.print(f"calibrated constants kept in {report.saved}; estimates for these cards use them")


class _ShownDemo:
    """The demo's steps rendered as their commands render them (``planner.demo.DemoShow``)."""

    def step(self, title: str) -> None:
        console.rule(title)

    def probe(self, options, entries):
        return _probe_and_show(options, entries)

    def run(self, plan: Path, data: Path, run_dir: Path, options):
        return _run_and_show(plan, data, run_dir, options)

    def tune(self, options):
        return _tune_and_show(options)

    def line(self, text: str) -> None:
        console.print(text)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Demo folder: data/, plan.json, run/.")] = Path(
        "planner-demo"),
    limit: Annotated[int | None, typer.Option(
        "--limit", help="Use only this many of the 1,797 digits, for a quicker run.")] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="fine_tune epochs per model.")] = 3,
    trials: Annotated[int, typer.Option("--trials", help="Optuna trials for the weights.")] = 200,
) -> None:
    """Run probe -> run -> tune-weights on real handwritten digits, on the CPU, in a few minutes."""
    from planner.demo import run_demo

    run_demo(_ShownDemo(), out, limit=limit, epochs=epochs, trials=trials)
