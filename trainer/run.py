"""`planner run`: train every entry of a plan, resumably, and keep the evidence; the one run driver
of both backends.

Read top to bottom: check the plan, the device and the data; take the run folder's lock; read or
draw its one held-out split; read or start ``run.json``; skip the entries finished earlier (and
those the plan says do not fit); submit the others to the backend (``trainer.backend``: here, or as
Ray tasks) and record each try's result as it comes, resubmitting an entry with the next larger
accumulation when it ran out of memory. Every file is written atomically, so Ctrl-C leaves finished
entries untouched and the next run redoes only the unfinished ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from planner.base.atomic import check_writable, remove_stale_temporaries
from planner.base.budget import format_bytes
from planner.base.errors import UserError
from planner.base.locations import data_for_run, default_run_dir
from planner.base.lock import held_exclusively
from planner.base.plan import Plan, PlanEntry, load_plan
from planner.base.predfile import PREDS_FOLDER, predictions_path
from planner.base.runfile import (
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
from trainer.attempt import EntryError, TryDone, TryResult
from trainer.backend import Backend, LocalBackend
from trainer.data import DataLayout, scan_data
from trainer.job import RunInputs, TrainJob
from trainer.options import RunOptions
from trainer.progress import LogFile, Reporter, Reporters
from trainer.saved_model import MODELS_FOLDER
from trainer.split import Split, shared_split

LOG_FILE = "run.log"
LOCK_FILE = ".lock"


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
    data_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
    options: RunOptions = RunOptions(),
    reporter: Reporter = Reporter(),
    backend: Backend | None = None,
) -> RunResult:
    """Train the plan's entries into ``run_dir``; skip those finished by an earlier run.

    Args:
        plan_path: plan.json written by `planner probe`.
        data_dir: the data folder (``train_images/<label>/*``, ``test_images/*``); None: the folder the
            plan was probed with, else ``.`` when it holds ``train_images/``.
        run_dir: the run folder (created if missing): split.json, run.json, run.log, preds/*.npz;
            None: ``runs/<plan name>`` beside the plan, so that the same command resumes it.
        options: see :class:`RunOptions`.
        reporter: receives progress events (the CLI passes a rich one); run.log gets them too.
        backend: where the tries train: :class:`~trainer.backend.LocalBackend` (default: one after
            another in this process) or ``trainer.ray_backend.RayBackend``.

    Returns:
        The run folder's final record (entries of earlier runs included), the plan's entry names
        and the device.

    Raises:
        UserError: bad plan, device, data or options, or a run folder made with another split,
            data folder or training settings.
        KeyboardInterrupt: the run was interrupted; finished entries are kept.
    """
    backend = backend or LocalBackend()
    plan = load_plan(plan_path)
    check_entry_names(plan)
    data_dir = data_for_run(Path(data_dir) if data_dir is not None else None, plan.data)
    run_dir = check_writable(run_dir if run_dir is not None else default_run_dir(Path(plan_path)), "--out",
                             folder=True)
    device = backend.device(options.device, options.cpu_memory_limit)
    layout = scan_data(data_dir)  # before the lock: a bad data folder leaves no run folder behind
    with one_writer(run_dir):
        run_dir, split, book, reporter = start_run_folder(plan_path, plan, layout, run_dir, options, reporter)
        try:
            todo = entries_to_train(plan, book, reporter, device, options.include_misfits)
            if todo:
                inputs = RunInputs(effective_batch_size=plan.effective_batch_size, layout=layout, split=split,
                                   settings=options.settings(), device=options.device, seed=options.seed,
                                   cpu_memory_limit=options.cpu_memory_limit, save_models=options.save_models)
                tries = Tries(plan, book, reporter)
                with backend.opened(plan, todo, inputs, run_dir, reporter, tries.started):
                    for entry in todo:
                        backend.submit(entry, None)
                    while backend.pending:
                        retry = tries.record(backend.next_result())
                        if retry is not None:
                            backend.submit(*retry)
        finally:
            reporter.run_finished()
    names = tuple(entry.name for entry in plan.entries)
    devices = {book.run.entries[name].device for name in names if name in book.run.entries}
    trained_on = "cuda" if "cuda" in devices or (not devices and device == "cuda") else "cpu"
    return RunResult(run_dir=run_dir, run=book.run, names=names, device=trained_on)


@contextmanager
def one_writer(run_dir: str | Path) -> Iterator[None]:
    """Hold the run folder's lock while training: a second `planner run` on it is refused in one line
    naming the holder, instead of both training the same entries (locks over NFS are not reliable)."""
    folder = Path(run_dir).expanduser().resolve()

    def refusal(holder: str) -> str:
        return f"run folder {folder} is in use by {holder}: wait for that run to finish, or use another --out"

    with held_exclusively(folder / LOCK_FILE, refusal):
        yield


class Tries:
    """The driver's bookkeeping of every entry's tries, written to run.json as they start and end."""

    def __init__(self, plan: Plan, book: RunBook, reporter: Reporter) -> None:
        self.plan, self.book, self.reporter = plan, book, reporter
        self.records: dict[str, EntryRecord] = {}
        self.first_accum: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    def started(self, job: TrainJob) -> None:
        """A try starts in this process: run.json says ``running`` (with the misses so far) meanwhile."""
        record = self.records.get(job.entry.name) or new_entry_record(
            job.entry, self.plan, accum=job.accum, micro_batch=job.micro_batch, device=job.inputs.device,
            started=now())
        self.records[job.entry.name] = record.model_copy(update={"accum": job.accum, "micro_batch": job.micro_batch})
        self.book.put(self.records[job.entry.name])
        self.reporter.entry_started(job.entry.name, job.accum, job.micro_batch, job.inputs.settings.epochs + 1)

    def record(self, result: TryResult) -> tuple[PlanEntry, int] | None:
        """Put a try's result in run.json; after an out-of-memory, the retry to submit (the entry and the
        next larger accumulation of the effective batch), else None."""
        entry, effective = result.entry, self.plan.effective_batch_size
        name = entry.name
        self.seconds[name] = self.seconds.get(name, 0.0) + result.seconds
        self.first_accum.setdefault(name, result.accum)
        record = self.records.get(name) or new_entry_record(
            entry, self.plan, accum=result.accum, micro_batch=result.micro_batch, device=result.device,
            started=result.started)
        record = record.model_copy(update={"accum": result.accum, "micro_batch": result.micro_batch,
                                           **({"worker": result.worker} if result.worker else {})})
        outcome = result.outcome
        if isinstance(outcome, TryDone):
            return self._done(finished_record(
                record, memory=outcome.memory, epochs=outcome.epochs, metrics=outcome.metrics,
                predictions=outcome.predictions, seconds=self.seconds[name], model=outcome.model))
        if isinstance(outcome, EntryError):
            return self._done(failed_record(record, record.oom_misses, self.seconds[name], outcome.message))
        misses = [*record.oom_misses, outcome]
        larger = accumulation_ladder(effective, result.accum)[1:]
        self.reporter.entry_oom(name, outcome, larger[0] if larger else None)
        if not larger:
            tried = accumulation_ladder(effective, self.first_accum[name])
            return self._done(failed_record(record, misses, self.seconds[name],
                                            f"out of memory at every accumulation ({', '.join(map(str, tried))})"))
        self.records[name] = record.model_copy(update={
            "accum": larger[0], "micro_batch": effective // larger[0], "oom_misses": misses})
        self.book.put(self.records[name])
        return entry, larger[0]

    def _done(self, record: EntryRecord) -> None:
        self.book.put(record)
        self.reporter.entry_done(record)


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


def new_entry_record(entry: PlanEntry, plan: Plan, *, accum: int, micro_batch: int, device: str,
                     started: str) -> EntryRecord:
    """An entry's record when its first try starts (status ``running``), as both backends write it."""
    return EntryRecord(
        name=entry.name, arch=entry.arch, item=entry.item, size=entry.size, status="running",
        device=device, precision="fp16" if device == "cuda" else "fp32",
        planned_accum=entry.accum, planned_micro_batch=entry.micro_batch,
        accum=accum, micro_batch=micro_batch, predicted_peak_bytes=entry.predicted_peak_bytes,
        predicted_on=plan.measured_on.device, grad_checkpointing=entry.grad_checkpointing, started=started,
        time=planned_time(entry, device),
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


def check_entry_names(plan: Plan) -> None:
    """Entry names become file names (``preds/<name>.npz``)."""
    for index, entry in enumerate(plan.entries):
        if "/" in entry.name or "\\" in entry.name or entry.name.startswith("."):
            raise UserError(f"plan entry {index} has the name {entry.name!r}, which cannot be a file name")
    if not plan.entries:
        raise UserError("the plan has no entries: nothing to train")


def start_run_folder(
    plan_path: str | Path, plan: Plan, layout: DataLayout, run_dir: str | Path, options: RunOptions,
    reporter: Reporter,
) -> tuple[Path, Split, RunBook, Reporter]:
    """Open (or create) the run folder with its one split and record, and announce the run; the data
    was checked before (``scan_data``), so a bad data folder leaves nothing behind.

    The same for both backends, so a folder started by one can be resumed by the other.

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
