"""`planner run`: train every entry of a plan, resumably, and keep the evidence; the one run driver
of both backends.

Read top to bottom: check the plan, the device (on CUDA, set the allocator configuration before
CUDA starts: ``planner.base.allocator``) and the data (every fit must get an optimizer step); take
the run folder's lock; compare the data with what the folder was trained on (a copy with the
same bytes is the same data; changed training data: refuse, or start afresh with ``--retrain``);
read or draw its one held-out split; read
or start ``run.json``; predict a changed test set again from the saved models; skip the entries
finished earlier (and those the plan says do not fit); say when the allocator configuration is not
the plan's; submit the others to the backend
(``planner_trainer.backend``: here, or as Ray tasks) and record each try's result as it comes, resubmitting an
entry with the next larger accumulation when it ran out of memory. Every file is written atomically,
so Ctrl-C leaves finished entries untouched (the one training is marked ``interrupted``) and the
next run redoes only the unfinished ones.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from planner.base.allocator import ALLOC_CONF, describe_allocator, same_allocator, use_allocator
from planner.base.atomic import check_writable, remove_stale_temporaries
from planner.base.budget import format_bytes
from planner.base.compat import timm_renamed_models
from planner.base.errors import UserError, first_line
from planner.base.locations import data_for_run, default_run_dir
from planner.base.lock import held_exclusively
from planner.base.margin import card_needed, format_margin, margin_covering
from planner.base.plan import AllocatorConfig, Plan, PlanEntry, batch_divisors, load_plan, micro_batch_for
from planner.base.predfile import PREDS_FOLDER, prediction_file_problem, predictions_path, read_prediction_arrays
from planner.base.runfile import (
    RUN_FILE,
    DataRecord,
    EntryRecord,
    EpochRecord,
    FileSet,
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
    peaks_comparable,
    save_run,
)
from planner.base.threads import torch_threads_kept
from planner.base.trainsize import check_steps, training_count
from planner_trainer.backend import Backend, LocalBackend, resolve_device
from planner_trainer.data import DataLayout, label_of, scan_data
from planner_trainer.fingerprint import (
    LISTING_FILE,
    data_record,
    describe_change,
    listing,
    load_listing,
    same_files,
    save_listing,
    training_changed,
)
from planner_trainer.hub import cached_weights_when_offline
from planner_trainer.one_try import EntryError, TryDone, TryResult
from planner_trainer.options import RunOptions
from planner_trainer.progress import LogFile, Reporter, Reporters
from planner_trainer.repredict import repredict_test
from planner_trainer.rerun import retrain_command
from planner_trainer.saved_model import MODELS_FOLDER, recipe_path, saved_model_problem, weights_path
from planner_trainer.split import SPLIT_FILE, Split, check_holds_out, load_split, shared_split
from planner_trainer.try_spec import RunInputs, TrySpec

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
    reporter: Reporter | None = None,
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
        reporter: receives progress events (the CLI passes a rich one; None: none); run.log gets them too.
        backend: where the tries train: :class:`~planner_trainer.backend.LocalBackend` (default: one after
            another in this process) or ``planner_trainer.ray_backend.RayBackend``.

    Returns:
        The run folder's final record (entries of earlier runs included), the plan's entry names
        and the device.

    Raises:
        UserError: bad plan, device, data or options, or a run folder made with another split,
            data folder or training settings.
        KeyboardInterrupt: the run was interrupted; finished entries are kept.
    """
    if isinstance(plan_path, Plan):
        raise UserError("run_plan takes the plan file's path (plan.json: run.json records it, and the run folder "
                        "goes beside it by default), not the Plan record: pass the path make_plan wrote it to, "
                        "ProbeOptions.output")
    backend = backend or LocalBackend()
    reporter = reporter if reporter is not None else Reporter()
    plan_path = Path(plan_path).expanduser()
    plan = load_plan(plan_path)
    plan.check_entry_names()
    data_dir = data_for_run(Path(data_dir).expanduser() if data_dir is not None else None, plan.data)
    run_dir = check_writable(Path(run_dir).expanduser() if run_dir is not None else default_run_dir(plan_path),
                             "--out", folder=True)
    device = backend.device(options.device, options.cpu_memory_limit)
    allocator = use_allocator() if device == "cuda" else None  # before re-predicting or training starts CUDA
    layout = scan_data(data_dir)  # before the lock: a bad data folder leaves no run folder behind
    check_holds_out(layout.train, options.valid_pct)
    check_steps(training_count(Counter(map(label_of, layout.train)).values(), options.valid_pct), len(layout.train),
                plan.effective_batch_size, options.valid_pct,
                fix="Probe again with --effective-bs {n} or smaller, or hold out less with --valid-pct")
    with one_writer(run_dir), torch_threads_kept():  # training sets torch's threads; a notebook gets its own back
        run_dir, split, book, reporter = start_run_folder(plan_path, plan, layout, run_dir, options, reporter)
        try:
            if not options.retrain:
                retrain_damaged(plan, book, reporter)
            stale = stale_test_predictions(plan, book, layout, options.retrain)
            repredict_entries(stale, book, layout, options.device, reporter)
            todo = entries_to_train(plan, book, reporter, device, options.include_misfits, options.retrain)
            if todo:
                note_renamed_architectures(todo, reporter)
                note_allocator_change(plan, allocator, reporter)
                inputs = RunInputs(effective_batch_size=plan.effective_batch_size, layout=layout, split=split,
                                   settings=options.settings(), device=device, seed=options.seed,
                                   cpu_memory_limit=options.cpu_memory_limit, save_models=options.save_models,
                                   allocator=allocator)
                tries = Tries(plan, book, reporter)
                for entry in todo:
                    forget_outputs(run_dir, entry.name)  # an earlier try's files never stand for this one's
                try:
                    with cached_weights_when_offline(inputs.settings.pretrained, reporter), \
                            backend.opened(plan, todo, inputs, run_dir, reporter, tries.started):
                        for entry in todo:
                            backend.submit(entry, None)
                        while backend.pending:
                            retry = tries.record(backend.next_result())
                            if retry is not None:
                                backend.submit(*retry)
                except KeyboardInterrupt:
                    tries.interrupted()
                    raise
                except OSError as error:  # outputs could not be written (a full disk): the entry did not finish
                    with suppress(OSError):  # run.json may not be writable either
                        tries.interrupted(first_line(error))
                    raise
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

    def started(self, spec: TrySpec) -> None:
        """A try starts in this process: run.json says ``running`` (with the misses so far) meanwhile."""
        record = self.records.get(spec.entry.name) or new_entry_record(
            spec.entry, self.plan, accum=spec.accum, micro_batch=spec.micro_batch, device=spec.inputs.device,
            started=now())
        self.records[spec.entry.name] = record.model_copy(update={"accum": spec.accum, "micro_batch": spec.micro_batch})
        self.book.put(self.records[spec.entry.name])
        self.reporter.entry_started(spec.entry.name, spec.accum, spec.micro_batch, spec.inputs.settings.epochs + 1)

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
                predictions=outcome.predictions, seconds=self.seconds[name], model=outcome.model,
                test_files=self.book.run.inputs.test if self.book.run.inputs else None))
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
            "accum": larger[0], "micro_batch": micro_batch_for(effective, larger[0]), "oom_misses": misses})
        self.book.put(self.records[name])
        return entry, larger[0]

    def _done(self, record: EntryRecord) -> None:
        self.book.put(record)
        self.reporter.entry_done(record)
        passed = peak_over_plan(record)
        if passed:
            self.reporter.notice(passed)

    def interrupted(self, why: str = "Ctrl-C or SIGTERM") -> None:
        """After Ctrl-C, SIGTERM or ``why``: the entries still training are ``interrupted`` in run.json, and
        the reporter says how to go on."""
        for name in self.records:
            record = self.book.run.entries.get(name)
            if record is not None and record.status == "running":
                self.book.put(record.model_copy(update={
                    "status": "interrupted", "finished": now(), "seconds": self.seconds.get(name, 0.0),
                    "error": f"interrupted ({why}) while training: rerun the same command to train it"}))
                self.reporter.notice(f"interrupted {name}: rerun the same command to resume (finished entries are "
                                     "kept, this one trains again)")


def peak_over_plan(record: EntryRecord) -> str | None:
    """One line when a finished entry's measured peak passed the plan's prediction for the micro-batch
    it trained at (peaks in the same units only); None otherwise."""
    memory, planned = record.memory, record.predicted_peak_bytes
    if record.status != "finished" or not peaks_comparable(record) or record.micro_batch != record.planned_micro_batch:
        return None
    if memory.peak_bytes <= planned:
        return None
    covering = margin_covering(planned / memory.peak_bytes - 1)
    return (f"{record.name}: the measured peak {format_bytes(memory.peak_bytes)} passed the plan's "
            f"{format_bytes(planned)} ({memory.peak_bytes / planned - 1:+.1%}; predicted by the {record.predicted_on} "
            f"meter): plan with --margin {covering:.2f} or more (it covers this error) before a longer run on a card "
            "this size")


def entries_to_train(plan: Plan, book: RunBook, reporter: Reporter, device: str,
                     include_misfits: bool, retrain: bool = False) -> list[PlanEntry]:
    """The plan's entries that still need training, as both backends pick them: an entry finished
    by an earlier run is skipped (unless ``retrain``), and so is one the plan says does not fit the
    card (recorded in run.json as ``skipped``, with why and the card it needs) unless ``include_misfits``."""
    todo = []
    for entry in plan.entries:
        previous = None if retrain else finished_earlier(book, entry.name)
        if previous:
            reporter.entry_skipped(entry.name, f"finished earlier ({previous.predictions}){replanned(previous, entry)}")
        elif not entry.fits and not include_misfits:
            reason = misfit_reason(entry, plan)
            book.put(skipped_record(entry, plan, device, reason))
            reporter.entry_skipped(entry.name, reason)
        else:
            todo.append(entry)
    return todo


def replanned(previous: EntryRecord, entry: PlanEntry) -> str:
    """Why a finished entry is kept although the plan now trains it another way (its accumulation or
    checkpointing, which change memory, not what is learned from the same effective batch); "" if not."""
    changes = []
    if (previous.planned_accum, previous.planned_micro_batch) != (entry.accum, entry.micro_batch):
        changes.append(f"planned at accum {previous.planned_accum} × micro-batch {previous.planned_micro_batch}, "
                       f"the plan now says {entry.accum} × {entry.micro_batch}")
    if previous.grad_checkpointing != entry.grad_checkpointing:
        changes.append(f"the plan now {'uses' if entry.grad_checkpointing else 'drops'} checkpointing")
    if not changes:
        return ""
    return f"; {', '.join(changes)}: kept, only how it fits in memory changed (--retrain trains it as planned now)"


def misfit_reason(entry: PlanEntry, plan: Plan) -> str:
    """One line: why the entry is not trained, and the smallest card that would fit it."""
    how = " with checkpointing" if entry.grad_checkpointing else ""
    text = (f"does not fit a {format_bytes(plan.budget_bytes)} card even at micro-batch {entry.micro_batch}{how}")
    if entry.predicted_peak_bytes is not None:
        card = card_needed(entry.predicted_peak_bytes, plan.margin)
        text += (f": needs {format_bytes(entry.predicted_peak_bytes)}, a card of at least {format_bytes(card)} "
                 f"with the plan's {format_margin(plan.margin)} margin")
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
    """The entry's record if an earlier run finished it (run.json says so and its npz exists; whether its
    files are whole is :func:`retrain_damaged`'s to check first)."""
    previous = book.run.entries.get(name)
    if previous and previous.status == "finished" and predictions_path(book.run_dir, name).exists():
        return previous
    return None


def retrain_damaged(plan: Plan, book: RunBook, reporter: Reporter) -> None:
    """Mark ``failed`` in run.json, so that this run trains them again, the plan's finished entries whose
    files are gone or damaged (a prediction file deleted to train the entry again, a truncated model), each
    with one line naming the file and why; the others are kept. Cheap: the prediction file's arrays are
    loaded (kilobytes), the saved model's size and header checked (its SHA-256 is checked when it is loaded)."""
    for entry in plan.entries:
        record = book.run.entries.get(entry.name)
        if record is None or record.status != "finished":
            continue
        problem = damaged_files(book.run_dir, record.name, record.model)
        if problem is not None:
            book.put(record.model_copy(update={"status": "failed", "error": f"{problem}: rerun planner run to "
                                                                               "train it again"}))
            reporter.notice(f"{entry.name}: {problem}: training it again")


def damaged_files(run_dir: Path, name: str, model: SavedModelRecord | None) -> str | None:
    """What is wrong with a finished entry's prediction file or its saved model (run.json's ``model``, None
    when it kept none): the first problem, or None."""
    path = predictions_path(run_dir, name)
    problem = prediction_file_problem(path)
    if problem is not None:
        return f"{path.relative_to(run_dir).as_posix()} {problem}"
    return saved_model_problem(run_dir, model) if model is not None else None


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
    loading = entry.loader_time.epoch_seconds if entry.loader_time is not None else None
    if predicted is None:
        return TimeRecord(measured_device=device, predicted_loader_epoch_seconds=loading)
    return TimeRecord(predicted_gpu=predicted.gpu, predicted_epoch_seconds=predicted.epoch_seconds,
                      predicted_frozen_epoch_seconds=predicted.frozen_epoch_seconds,
                      predicted_total_seconds=predicted.total_seconds, predicted_time_bound=predicted.time_bound,
                      predicted_loader_epoch_seconds=loading, measured_device=device)


def finished_record(
    record: EntryRecord, *, memory: MemoryRecord, epochs: list[EpochRecord], metrics: Metrics, predictions: str,
    seconds: float, model: SavedModelRecord | None = None, test_files: FileSet | None = None,
) -> EntryRecord:
    """The record of an entry whose try succeeded; its predictions (of the test set ``test_files``) are
    saved at ``predictions`` (relative), its model (unless not kept) as ``model`` says."""
    timing = measured_time(record.time or TimeRecord(measured_device=record.device), epochs)
    return record.model_copy(update={
        "status": "finished", "memory": memory, "epochs": epochs, "metrics": metrics,
        "predictions": predictions, "model": model, "seconds": seconds, "finished": now(), "time": timing,
        "error": None, "test_files": test_files,
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
    return [accum for accum in batch_divisors(effective_batch_size) if accum >= planned_accum]


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
        UserError: a run folder made with another split, data folder or settings, or trained on
            training data that changed since (without ``options.retrain``).
    """
    run_dir = Path(run_dir).expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    for folder in (run_dir, run_dir / PREDS_FOLDER, run_dir / MODELS_FOLDER):  # a killed writer's half files
        remove_stale_temporaries(folder)
    previous = load_run(run_dir)
    known = load_listing(run_dir)
    files = listing(layout, known)
    inputs = data_record(layout, files)
    if previous is not None and previous.inputs is not None:
        if training_changed(previous.inputs, inputs, known, files):
            change = describe_change(previous.inputs, inputs, known, files, "train")
            if not options.retrain:
                raise UserError(
                    f"the training data in {layout.root} changed since {run_dir} was trained ({change}): its models "
                    "learned the old data. Train every entry on the data as it is now with --retrain (a new split; "
                    "the folder's predictions and models are replaced), or use another --out folder")
            start_afresh(run_dir)
            previous = None
        elif same_files(previous.inputs, inputs, known, files, "test"):
            previous = test_set_kept(previous, previous.inputs.test, inputs.test)
    restarted = previous is not None and restart_untrained(run_dir, previous, plan, options)
    if restarted:
        previous = None
    split = shared_split(run_dir, layout, options.valid_pct, options.seed)
    run = _open_run(run_dir, Path(plan_path), plan, layout, options.settings(), previous, inputs, options.retrain)
    save_listing(run_dir, files)
    book = RunBook(run_dir, run)
    reporter = Reporters(reporter, LogFile(run_dir / LOG_FILE))
    reporter.run_started(run_dir, [entry.name for entry in plan.entries])
    if restarted:
        reporter.notice(f"{run_dir} was started with other settings, but no entry finished there: it starts afresh "
                        f"with this run's ({_show(options.settings())} --valid-pct {options.valid_pct:g} "
                        f"--seed {options.seed}, effective batch {plan.effective_batch_size})")
    if not layout.test:
        reporter.notice(f"no test images in {layout.root / 'test_images'}: the entries predict the held-out split "
                        "only; add test images and rerun this command to predict them with the saved models")
    return run_dir, split, book, reporter


def note_renamed_architectures(entries: list[PlanEntry], reporter: Reporter) -> None:
    """One line per entry to train whose architecture timm has renamed (instead of timm's warning on
    stderr); a run that trains nothing does not import timm for it."""
    renamed = timm_renamed_models()
    for entry in entries:
        if renamed.get(entry.arch):
            reporter.notice(f"{entry.name}: timm now calls {entry.arch} {renamed[entry.arch]}; that model is trained")


def note_allocator_change(plan: Plan, allocator: AllocatorConfig | None, reporter: Reporter) -> None:
    """One line when this run's CUDA allocator configuration is not the one the plan's peaks are for.

    Said only where both are known and matter: the run trains on CUDA (``allocator`` is its configuration,
    None on the CPU) and the plan records a configuration, which the cuda meter does (the one it measured
    with) and the estimate meter does (the one planner chose for a CUDA run); a plan of the cpu meter,
    whose peaks are live tensor bytes, and plans from before planner recorded it say nothing.
    """
    planned = plan.measured_on.allocator
    if allocator is None or planned is None or same_allocator(planned, allocator):
        return
    how = "measured" if plan.measured_on.device == "cuda" else "estimated"
    fix = f"{ALLOC_CONF}={planned.conf}" if planned.conf else f"{ALLOC_CONF}= (empty: torch's defaults)"
    reporter.notice(f"allocator: the plan's peaks were {how} with {describe_allocator(planned)}, this run uses "
                    f"{describe_allocator(allocator)}: reserved memory, and so the peaks, may differ; run with "
                    f"{fix} or probe again with this run's setting")


def restart_untrained(run_dir: Path, previous: RunFile, plan: Plan, options: RunOptions) -> bool:
    """Start the folder afresh when this run asks for other settings, effective batch or split and none of
    its entries finished (an interrupted or failed first run): nothing learned would mix with the new
    settings, so they are taken instead of refusing them. Returns whether it did."""
    if any(record.status == "finished" for record in previous.entries.values()):
        return False
    split_path = run_dir / SPLIT_FILE
    split = load_split(split_path) if split_path.exists() else None
    same = (previous.settings == options.settings() and previous.effective_batch_size == plan.effective_batch_size
            and (split is None or (split.valid_pct, split.seed) == (options.valid_pct, options.seed)))
    if not same:
        start_afresh(run_dir)
    return not same


def test_set_kept(run: RunFile, before: FileSet, now: FileSet) -> RunFile:
    """``run`` with the entries that predicted the test set ``before`` marked as predicting ``now``: the
    same files with other times (a copied data folder), so that nothing is predicted again."""
    return run.model_copy(update={"entries": {
        name: record.model_copy(update={"test_files": now}) if record.test_files == before else record
        for name, record in run.entries.items()}})


def start_afresh(run_dir: Path) -> None:
    """Remove what a run folder learned from its earlier data: its split, record, listing, predictions
    and models (run.log and other files stay)."""
    for name in (SPLIT_FILE, RUN_FILE, LISTING_FILE):
        (run_dir / name).unlink(missing_ok=True)
    for folder in (PREDS_FOLDER, MODELS_FOLDER):
        shutil.rmtree(run_dir / folder, ignore_errors=True)


def forget_outputs(run_dir: Path, name: str) -> None:
    """Remove an entry's prediction file and saved model before it trains, so that a try that fails
    never leaves an earlier try's files standing for it."""
    for path in (predictions_path(run_dir, name), weights_path(run_dir, name), recipe_path(run_dir, name)):
        path.unlink(missing_ok=True)


def stale_test_predictions(plan: Plan, book: RunBook, layout: DataLayout, retrain: bool) -> list[EntryRecord]:
    """The plan's finished entries whose test predictions are of another test set than the data
    folder's now (none with ``retrain``: every entry trains again).

    Raises:
        UserError: such an entry has no saved model to predict with (the message names the command
            that retrains it).
    """
    inputs = book.run.inputs
    if retrain or inputs is None:
        return []
    stale = [record for entry in plan.entries
             if (record := finished_earlier(book, entry.name)) is not None
             and not _predicted_on(record, inputs, book.run_dir, layout)]
    unsaved = [record.name for record in stale if record.model is None]
    if unsaved:
        previous = {record.test_files.count for record in stale if record.test_files is not None}
        was = f"{', '.join(map(str, sorted(previous)))} → " if previous else ""
        raise UserError(
            f"test_images changed since {', '.join(unsaved)} predicted it ({was}{inputs.test.count} files), and "
            f"{'they were' if len(unsaved) > 1 else 'it was'} trained without saving the model (--no-save-models), "
            f"so nothing can predict the new test set but training again: {retrain_command(book.run, book.run_dir)}")
    return stale


def _predicted_on(record: EntryRecord, inputs: DataRecord, run_dir: Path, layout: DataLayout) -> bool:
    """Whether the entry's test predictions are of the data folder's test set; a record from before
    test sets were recorded is judged by the names in its prediction file."""
    if record.test_files is not None:
        return record.test_files == inputs.test
    names = read_prediction_arrays(predictions_path(run_dir, record.name))["test_names"].tolist()
    return sorted(names) == sorted(layout.test)


def repredict_entries(stale: list[EntryRecord], book: RunBook, layout: DataLayout, requested_device: str,
                      reporter: Reporter) -> None:
    """Predict the test set again with each stale entry's saved model (no training), and record it."""
    if not stale:
        return
    import torch

    device = resolve_device("cpu" if requested_device == "cpu" else "auto", torch.cuda.is_available())
    test = book.run.inputs.test if book.run.inputs else None
    for record in stale:
        reporter.notice(f"re-predict {record.name}: test_images changed since it was trained; predicting its "
                        f"{len(layout.test)} test images with its saved model ({device}), no training")
        repredict_test(book.run_dir, record.name, layout, device)
        book.put(record.model_copy(update={"test_files": test}))
    reporter.notice("test predictions are of the new test set: rerun planner tune-weights for a new submission")


def _open_run(
    run_dir: Path, plan_path: Path, plan: Plan, layout: DataLayout, settings: RunSettings, run: RunFile | None,
    inputs: DataRecord, retrain: bool = False,
) -> RunFile:
    """The run folder's record: new, or the earlier one (``run``) checked against this run, with the
    data as it is now (``inputs``); with ``retrain`` a finished entry may have changed in the plan (it
    trains again)."""
    if run is None:
        run = RunFile(data=str(layout.root), plan=str(plan_path.resolve()),
                      effective_batch_size=plan.effective_batch_size, budget_bytes=plan.budget_bytes,
                      settings=settings, created=now(), updated=now(), inputs=inputs)
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
    if not retrain:
        for entry in plan.entries:
            _check_same_training(run.entries.get(entry.name), entry, run_dir)
    run = run.model_copy(update={"inputs": inputs, "updated": now()})
    save_run(run, run_dir)
    return run


def _check_same_training(record: EntryRecord | None, entry: PlanEntry, run_dir: Path) -> None:
    if record is None or record.status != "finished":
        return
    if (record.arch, record.item, tuple(record.size)) != (entry.arch, entry.item, tuple(entry.size)):
        raise UserError(
            f"entry {entry.name} in {run_dir} was trained as "
            f"{record.arch} {record.item.label} {record.size}, "
            f"the plan now says {entry.arch} {entry.item.label} {entry.size}: use another --out folder, or --retrain "
            "to train every entry of the plan again in this one"
        )


def _show(settings: RunSettings) -> str:
    weights = "--pretrained" if settings.pretrained else "--no-pretrained"
    return f"--epochs {settings.epochs} --lr {settings.lr} {weights}"
