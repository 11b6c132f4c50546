"""`planner run`: train every entry of a plan, resumably, and keep the evidence.

Read top to bottom: check the plan, the device and the data; read or draw the run folder's one
held-out split; read or start ``run.json``; then for each entry either skip it (finished earlier) or
train it, retrying with the next larger accumulation when it runs out of memory. Every file is
written atomically, so Ctrl-C leaves finished entries untouched and the next run redoes only the
unfinished one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch

from planner.atomic import remove_stale_temporaries
from planner.budget import format_bytes
from planner.errors import UserError, first_line
from planner.lock import held_exclusively
from planner.plan import Plan, PlanEntry, load_plan
from trainer.data import DataLayout, scan_data
from trainer.fit import RunInputs, TrainJob, TrainOutcome, train_entry
from trainer.memory import release_memory
from trainer.predictions import PREDS_FOLDER, predictions_path, save_predictions
from trainer.progress import LogFile, Reporter, Reporters
from trainer.recipe import prepare_device
from trainer.runfile import (
    EntryRecord,
    EpochRecord,
    MemoryRecord,
    Metrics,
    OomMiss,
    RunBook,
    RunFile,
    RunSettings,
    SavedModelRecord,
    TimeRecord,
    load_run,
    measured_time,
    now,
    save_run,
)
from trainer.saved_model import MODELS_FOLDER, save_model
from trainer.split import Split, shared_split

LOG_FILE = "run.log"
LOCK_FILE = ".lock"


@dataclass(frozen=True)
class RunOptions:
    """The options of `planner run` (defaults: the reference's ``fine_tune(12, 0.01)``).

    Attributes:
        epochs: unfrozen epochs of ``fine_tune`` (after its one frozen epoch).
        lr: ``fine_tune``'s base learning rate.
        pretrained: start from pretrained timm weights (needs a network or a cache).
        device: "auto" (cuda when available), "cuda" or "cpu".
        valid_pct: the held-out fraction of the run folder's split.
        seed: seeds the split, the weights and the shuffling.
        cpu_memory_limit: testing aid: on the CPU, raise ``torch.OutOfMemoryError`` when the tracked
            live bytes exceed this, as a card of that size would.
        include_misfits: train entries the plan marks ``fits: false`` too (skipped by default).
        save_models: keep each trained model in ``models/`` (safetensors + JSON recipe) for `planner predict`.
    """

    epochs: int = 12
    lr: float = 0.01
    pretrained: bool = True
    device: Literal["auto", "cuda", "cpu"] = "auto"
    valid_pct: float = 0.2
    seed: int = 42
    cpu_memory_limit: int | None = None
    include_misfits: bool = False
    save_models: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise UserError(f"--epochs {self.epochs} must be at least 1")
        if not self.lr > 0:
            raise UserError(f"--lr {self.lr} must be larger than zero, e.g. 0.01")
        if not 0 < self.valid_pct < 1:
            raise UserError(f"--valid-pct {self.valid_pct} must be between 0 and 1, e.g. 0.2")
        if self.device not in ("auto", "cuda", "cpu"):
            raise UserError(f"--device {self.device!r} must be auto, cuda or cpu")

    def settings(self) -> RunSettings:
        """The settings every entry of a run folder must share (recorded in run.json)."""
        return RunSettings(epochs=self.epochs, lr=self.lr, pretrained=self.pretrained)


@dataclass(frozen=True)
class RunResult:
    """What a run ended with: the folder's record, and which of its entries this plan names."""

    run_dir: Path
    run: RunFile
    names: tuple[str, ...]
    device: str

    @property
    def failed(self) -> list[str]:
        """The plan's entries given up: out of memory at every accumulation, or another error."""
        return [name for name in self.names if self.run.entries[name].status == "failed"]

    @property
    def skipped(self) -> list[str]:
        """The plan's entries skipped because they do not fit the card."""
        return [name for name in self.names if self.run.entries[name].status == "skipped"]


def run_plan(
    plan_path: str | Path,
    data_dir: str | Path,
    run_dir: str | Path,
    options: RunOptions = RunOptions(),
    reporter: Reporter = Reporter(),
    cbs: Sequence[Any] = (),
) -> RunResult:
    """Train the plan's entries into ``run_dir``; skip those finished by an earlier run.

    Args:
        plan_path: plan.json written by `planner probe`.
        data_dir: the data folder (``train_images/<label>/*``, ``test_images/*``).
        run_dir: the run folder (created if missing): split.json, run.json, run.log, preds/*.npz.
        options: see :class:`RunOptions`.
        reporter: receives progress events (the CLI passes a rich one); run.log gets them too.
        cbs: extra fastai callbacks added to every ``fine_tune`` (an extension point).

    Returns:
        The run folder's final record (entries of earlier runs included), the plan's entry names
        and the device.

    Raises:
        UserError: bad plan, device, data or options, or a run folder made with another split,
            data folder or training settings.
        KeyboardInterrupt: the run was interrupted; finished entries are kept.
    """
    plan = load_plan(plan_path)
    _check_entry_names(plan)
    device = _resolve_device(options)
    layout = scan_data(data_dir)  # before the lock: a bad data folder leaves no run folder behind
    with one_writer(run_dir):
        run_dir, split, book, reporter = start_run_folder(plan_path, plan, layout, run_dir, options, reporter)
        inputs = RunInputs(effective_batch_size=plan.effective_batch_size, layout=layout, split=split,
                           settings=options.settings(), device=device, seed=options.seed,
                           cpu_memory_limit=options.cpu_memory_limit, save_models=options.save_models)
        prepare_device(device)
        try:
            for entry in entries_to_train(plan, book, reporter, device, options.include_misfits):
                job = TrainJob(entry=entry, accum=entry.accum, inputs=inputs)
                record = _train_with_fallback(job, plan, book, reporter, cbs)
                reporter.entry_done(record)
        finally:
            reporter.run_finished()
    return RunResult(run_dir=run_dir, run=book.run, names=tuple(e.name for e in plan.entries), device=device)


@contextmanager
def one_writer(run_dir: str | Path) -> Iterator[None]:
    """Hold the run folder's lock while training: a second `planner run` on it is refused in one line
    naming the holder, instead of both training the same entries (locks over NFS are not reliable)."""
    folder = Path(run_dir).expanduser().resolve()

    def refusal(holder: str) -> str:
        return f"run folder {folder} is in use by {holder}: wait for that run to finish, or use another --out"

    with held_exclusively(folder / LOCK_FILE, refusal):
        yield


def _train_with_fallback(
    job: TrainJob, plan: Plan, book: RunBook, reporter: Reporter, cbs: Sequence[Any]
) -> EntryRecord:
    """Train at the planned accumulation; after an OOM retry at the next divisor of the effective
    batch (same effective batch, smaller micro-batch). Returns the entry's final record (saved)."""
    clock = time.perf_counter()
    misses: list[OomMiss] = []
    record = new_entry_record(job, plan, now())
    ladder = accumulation_ladder(job.inputs.effective_batch_size, job.entry.accum)
    for index, accum in enumerate(ladder):
        job = replace(job, accum=accum)
        record = record.model_copy(update={"accum": accum, "micro_batch": job.micro_batch,
                                           "oom_misses": misses})
        book.put(record)
        reporter.entry_started(job.entry.name, accum, job.micro_batch, job.inputs.settings.epochs + 1)
        result = _attempt(job, reporter, cbs)
        release_memory(job.inputs.device)  # outside the except block: the traceback no longer holds tensors
        if isinstance(result, EntryError):
            record = failed_record(record, misses, time.perf_counter() - clock, result.message)
            book.put(record)
            return record
        if isinstance(result, TrainOutcome):
            model = save_model(book.run_dir, result.model) if result.model else None  # before the npz: finished
            path = save_predictions(predictions_path(book.run_dir, job.entry.name), result.predictions)  # means kept
            record = finished_record(record, memory=result.memory, epochs=result.epochs, metrics=result.metrics,
                                     predictions=path.relative_to(book.run_dir).as_posix(),
                                     seconds=time.perf_counter() - clock, model=model)
            book.put(record)
            return record
        misses = [*misses, result]
        reporter.entry_oom(job.entry.name, result, ladder[index + 1] if index + 1 < len(ladder) else None)
    record = failed_record(record, misses, time.perf_counter() - clock,
                           f"out of memory at every accumulation ({', '.join(map(str, ladder))})")
    book.put(record)
    return record


def entries_to_train(plan: Plan, book: RunBook, reporter: Reporter, device: str,
                     include_misfits: bool) -> list[PlanEntry]:
    """The plan's entries that still need training, as both backends pick them: an entry finished
    by an earlier run is skipped, and so is one the plan says does not fit the card (recorded in
    run.json as ``skipped``, with why and the card it needs) unless ``include_misfits``."""
    todo = []
    for entry in plan.entries:
        previous = finished_earlier(book, entry.name)
        if previous:
            reporter.entry_skipped(entry.name, f"finished earlier ({previous.predictions})")
        elif not entry.fits and not include_misfits:
            reason = misfit_reason(entry, plan)
            book.put(skipped_record(entry, plan, device, reason))
            reporter.entry_skipped(entry.name, reason)
        else:
            todo.append(entry)
    return todo


def misfit_reason(entry: PlanEntry, plan: Plan) -> str:
    """One line: why the entry is not trained, and the smallest card that would fit it."""
    how = " with checkpointing" if entry.grad_checkpointing else ""
    text = (f"does not fit a {format_bytes(plan.budget_bytes)} card even at micro-batch {entry.micro_batch}{how}")
    if entry.predicted_peak_bytes is not None:
        card = entry.predicted_peak_bytes / (1 - plan.margin)
        text += (f": needs {format_bytes(entry.predicted_peak_bytes)}, a card of at least {format_bytes(card)} "
                 f"with the plan's {plan.margin:.0%} margin")
    return text + " (train it anyway with --include-misfits)"


def skipped_record(entry: PlanEntry, plan: Plan, device: str, reason: str) -> EntryRecord:
    """run.json's record of an entry not trained because it does not fit."""
    return EntryRecord(
        name=entry.name, arch=entry.arch, item=entry.item, size=entry.size, status="skipped", device=device,
        precision="fp16" if device == "cuda" else "fp32", planned_accum=entry.accum,
        planned_micro_batch=entry.micro_batch, accum=entry.accum, micro_batch=entry.micro_batch,
        predicted_peak_bytes=entry.predicted_peak_bytes, predicted_on=plan.measured_on.device,
        grad_checkpointing=entry.grad_checkpointing, started=now(), finished=now(), error=reason,
    )


def finished_earlier(book: RunBook, name: str) -> EntryRecord | None:
    """The entry's record if an earlier run finished it (run.json says so and its npz exists)."""
    previous = book.run.entries.get(name)
    if previous and previous.status == "finished" and predictions_path(book.run_dir, name).exists():
        return previous
    return None


def new_entry_record(job: TrainJob, plan: Plan, started: str) -> EntryRecord:
    """An entry's record when its first try starts (status ``running``), as both backends write it."""
    return EntryRecord(
        name=job.entry.name, arch=job.entry.arch, item=job.entry.item, size=job.entry.size, status="running",
        device=job.inputs.device, precision="fp16" if job.inputs.device == "cuda" else "fp32",
        planned_accum=job.entry.accum, planned_micro_batch=job.entry.micro_batch,
        accum=job.accum, micro_batch=job.micro_batch, predicted_peak_bytes=job.entry.predicted_peak_bytes,
        predicted_on=plan.measured_on.device, grad_checkpointing=job.entry.grad_checkpointing, started=started,
        time=planned_time(job.entry, job.inputs.device),
    )


def planned_time(entry: PlanEntry, device: str) -> TimeRecord:
    """The time record of an entry before training: the plan's prediction, when it has one."""
    predicted = entry.predicted_time
    if predicted is None:
        return TimeRecord(measured_device=device)
    return TimeRecord(predicted_gpu=predicted.gpu, predicted_epoch_seconds=predicted.epoch_seconds,
                      predicted_frozen_epoch_seconds=predicted.frozen_epoch_seconds,
                      predicted_total_seconds=predicted.total_seconds, measured_device=device)


def finished_record(
    record: EntryRecord, *, memory: MemoryRecord, epochs: list[EpochRecord], metrics: Metrics, predictions: str,
    seconds: float, model: SavedModelRecord | None = None,
) -> EntryRecord:
    """The record of an entry whose try succeeded; its predictions are saved at ``predictions`` (relative),
    its model (unless not kept) as ``model`` says."""
    timing = measured_time(record.time or TimeRecord(measured_device=record.device), epochs)
    return record.model_copy(update={
        "status": "finished", "memory": memory, "epochs": epochs, "metrics": metrics,
        "predictions": predictions, "model": model, "seconds": seconds, "finished": now(), "time": timing,
    })


def failed_record(record: EntryRecord, misses: list[OomMiss], seconds: float, error: str) -> EntryRecord:
    """The record of an entry given up on."""
    return record.model_copy(update={
        "status": "failed", "oom_misses": misses, "seconds": seconds, "finished": now(), "error": error,
    })


@dataclass(frozen=True)
class EntryError:
    """A try that failed for a reason other than memory: the entry is given up, the run goes on."""

    message: str


def _attempt(job: TrainJob, reporter: Reporter, cbs: Sequence[Any]) -> TrainOutcome | OomMiss | EntryError:
    """One try; an out-of-memory error becomes an :class:`OomMiss`, any other error an
    :class:`EntryError` naming it and the fix (their tracebacks are dropped)."""
    try:
        return train_entry(job, reporter, cbs)
    except torch.OutOfMemoryError as error:
        return OomMiss(accum=job.accum, micro_batch=job.micro_batch, message=first_line(error, "out of memory"))
    except Exception as error:  # any other failure of this entry: recorded, the next entries still train
        return EntryError(describe_entry_error(error))


def describe_entry_error(error: BaseException) -> str:
    """One line for an entry that failed: what happened and what to do (the rerun retries it)."""
    from PIL import UnidentifiedImageError

    text = f"{type(error).__name__}: {first_line(error)}"
    lines = str(error).strip().splitlines()
    if len(lines) > 1 and lines[0].startswith("Exception occured in"):  # fastai's wrapper: the cause is below
        where = lines[0].removeprefix("Exception occured in ").rstrip(":")
        text = f"{type(error).__name__}: {lines[1].strip()} ({where})"
    if isinstance(error, UnidentifiedImageError | OSError) and not isinstance(error, ConnectionError):
        hint = "an image could not be read: remove or replace it"
    elif "Unknown model" in text or "Invalid pretrained tag" in text:
        hint = "the plan names an architecture this timm does not have: fix the entry's arch or probe again"
    elif isinstance(error, ConnectionError) or any(word in text for word in ("HTTP", "URL", "connection", "hub")):
        hint = "pretrained weights could not be downloaded: connect, fill the cache, or use --no-pretrained"
    else:
        hint = "see run.log"
    return f"{text} ({hint}; rerun the same command to retry this entry)"


def accumulation_ladder(effective_batch_size: int, planned_accum: int) -> list[int]:
    """The accumulations to try, in order: the planned one, then every larger divisor of the
    effective batch (fastai's ``GradientAccumulation`` counts samples, so only divisors keep the
    effective batch exact).

    Args:
        effective_batch_size: the plan's effective batch.
        planned_accum: the entry's planned accumulation (a divisor of it).

    Returns:
        Ascending accumulations, starting with ``planned_accum``.
    """
    candidates = range(planned_accum, effective_batch_size + 1)
    return [accum for accum in candidates if effective_batch_size % accum == 0]


def _check_entry_names(plan: Plan) -> None:
    """Entry names become file names (``preds/<name>.npz``)."""
    for index, entry in enumerate(plan.entries):
        if "/" in entry.name or "\\" in entry.name or entry.name.startswith("."):
            raise UserError(f"plan entry {index} has the name {entry.name!r}, which cannot be a file name")
    if not plan.entries:
        raise UserError("the plan has no entries: nothing to train")


def _resolve_device(options: RunOptions) -> str:
    """``auto`` means cuda when available; a memory limit applies to the CPU only."""
    available = torch.cuda.is_available()
    if options.device == "cuda" and not available:
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu")
    device = "cuda" if options.device == "cuda" or (options.device == "auto" and available) else "cpu"
    if options.cpu_memory_limit is not None and device != "cpu":
        raise UserError("--cpu-memory-limit applies to CPU training only (--device cpu)")
    return device


def start_run_folder(
    plan_path: str | Path, plan: Plan, layout: DataLayout, run_dir: str | Path, options: RunOptions,
    reporter: Reporter,
) -> tuple[Path, Split, RunBook, Reporter]:
    """Open (or create) the run folder with its one split and record, and announce the run; the data
    was checked before (``scan_data``), so a bad data folder leaves nothing behind.

    Shared by both backends, so a folder started by one can be resumed by the other.

    Returns:
        The absolute run folder, the split, the run book, and the reporter that also writes ``run.log``.

    Raises:
        UserError: a run folder made with another split, data folder or settings.
    """
    run_dir = Path(run_dir).expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    for folder in (run_dir, run_dir / PREDS_FOLDER, run_dir / MODELS_FOLDER):  # a killed writer's half files
        remove_stale_temporaries(folder)
    split = shared_split(run_dir, layout, options.valid_pct, options.seed)
    book = RunBook(run_dir, _open_run(run_dir, Path(plan_path), plan, layout, options.settings()))
    reporter = Reporters(reporter, LogFile(run_dir / LOG_FILE))
    reporter.run_started(run_dir, [entry.name for entry in plan.entries])
    return run_dir, split, book, reporter


def _open_run(
    run_dir: Path, plan_path: Path, plan: Plan, layout: DataLayout, settings: RunSettings
) -> RunFile:
    """The run folder's record: new, or an earlier one checked against this run."""
    run = load_run(run_dir)
    if run is None:
        run = RunFile(data=str(layout.root), plan=str(plan_path.resolve()),
                      effective_batch_size=plan.effective_batch_size, budget_bytes=plan.budget_bytes,
                      settings=settings, created=now(), updated=now())
        save_run(run, run_dir)
        return run
    where = f"{run_dir} was started"
    hint = "rerun with the folder's values or use another --out folder"
    if run.data != str(layout.root):
        raise UserError(f"{where} on the data folder {run.data}, not {layout.root}: {hint}")
    if run.settings != settings:
        raise UserError(f"{where} with {_show(run.settings)}, this run asks for {_show(settings)}: {hint}")
    if run.effective_batch_size != plan.effective_batch_size:
        raise UserError(f"{where} with effective batch {run.effective_batch_size}, this plan has "
                        f"{plan.effective_batch_size}: {hint}")
    for entry in plan.entries:
        _check_same_training(run.entries.get(entry.name), entry, run_dir)
    return run


def _check_same_training(record: EntryRecord | None, entry: PlanEntry, run_dir: Path) -> None:
    if record is None or record.status != "finished":
        return
    if (record.arch, record.item, tuple(record.size)) != (entry.arch, entry.item, tuple(entry.size)):
        raise UserError(
            f"entry {entry.name} in {run_dir} was trained as "
            f"{record.arch} {record.item.label} {record.size}, "
            f"the plan now says {entry.arch} {entry.item.label} {entry.size}: use another --out folder"
        )


def _show(settings: RunSettings) -> str:
    weights = "--pretrained" if settings.pretrained else "--no-pretrained"
    return f"--epochs {settings.epochs} --lr {settings.lr} {weights}"
