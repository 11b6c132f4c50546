"""`planner run --backend ray`: the plan's entries as Ray tasks, spread over every GPU of a cluster.

Driver (the process that runs ``planner run``): checks the plan, the data and the run folder with the
local backend's helpers (``trainer.run``), draws the held-out split once, then submits one Ray task per
unfinished entry and records each result in run.json as it arrives (a ``ray.wait`` loop). Only the
driver writes run.json, so a restarted driver skips finished entries exactly as the local backend does
(run.json says ``finished`` and ``preds/<entry>.npz`` exists).

Task (a Ray worker, one try of one entry): picks the (micro-batch, accumulation) pair planned for the
GPU it got (``trainer.placement.pair_for_memory``), caps its process to its share of the card when it
got a fraction of one, and trains with the local backend's one-try code (``trainer.run._attempt``, i.e.
``trainer.fit.train_entry``). It writes ``preds/<entry>.npz`` atomically and returns the rest of the
entry's record. Out of memory is caught inside the task and returned; the driver then resubmits the
entry at the next larger accumulation (same effective batch, ``accumulation_ladder``), because Ray does
not change a task's arguments or resources when it retries it. A worker or node that dies is Ray's to
retry (``max_retries``); any other exception fails that entry (``retry_exceptions=False``) and the others
go on. Each GPU task runs in a fresh worker process (``max_calls=1``, Ray's default for GPU tasks): a
reused process keeps the CUDA device and context of its first task.

Where things must be: the run folder and the data folder on a filesystem every worker sees at the same
path (NFS or a shared volume; on one machine it trivially is), and planner installed on every node.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from planner.errors import UserError, first_line
from planner.plan import Plan, PlanEntry, load_plan
from trainer.data import scan_data
from trainer.fit import RunInputs, TrainJob
from trainer.placement import node_card_bytes, pack_fraction, pair_for_memory, share_cap_fraction
from trainer.progress import LineReporter, LogFile, Reporter, Reporters
from trainer.run import (
    LOG_FILE,
    RunOptions,
    RunResult,
    _check_entry_names,
    accumulation_ladder,
    describe_entry_error,
    entries_to_train,
    failed_record,
    finished_record,
    new_entry_record,
    one_writer,
    start_run_folder,
)
from trainer.runfile import (
    EntryRecord,
    EpochRecord,
    MemoryRecord,
    Metrics,
    OomMiss,
    RunBook,
    SavedModelRecord,
    WorkerRecord,
)

INSTALL_HINT = "--backend ray needs Ray: pip install 'planner[ray]' (or pip install 'ray>=2.9')"
CRASH_MARKER = ".crash-once-{name}"


@dataclass(frozen=True)
class RayOptions:
    """How ``planner run --backend ray`` uses the cluster.

    Attributes:
        address: a Ray cluster to join (``auto``, ``ray://host:10001``, ``host:6379``); None starts a
            local Ray instance for this run (or joins ``RAY_ADDRESS`` when set, as ``ray.init`` does).
        gpus_per_entry: GPUs each task asks for: 1 by default, a fraction below 1 to share cards by
            hand, 0 to train on CPU workers. The trainer uses one device; whole numbers above 1 only
            reserve more.
        pack: ask each entry for the fraction of a GPU its predicted peak needs
            (``trainer.placement.pack_fraction``), so that small entries share large cards.
        max_retries: Ray retries of a task whose worker or node died.
        crash_once: testing aid: these entries' first task exits its worker process (``os._exit``)
            before training, leaving a marker file in the run folder so that the retry trains.
    """

    address: str | None = None
    gpus_per_entry: float = 1.0
    pack: bool = False
    max_retries: int = 2
    crash_once: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        share = self.gpus_per_entry
        if share < 0 or (share > 1 and share != int(share)):
            raise UserError(f"--gpus-per-entry {share:g} must be 0, a fraction up to 1, or a whole number")
        if self.pack and share != 1:
            raise UserError("--pack chooses each entry's share of a GPU itself: leave --gpus-per-entry at 1")
        if self.max_retries < 0:
            raise UserError(f"--max-retries {self.max_retries} must be 0 or more")


@dataclass(frozen=True)
class SharedInputs:
    """What every task of a run needs; put in Ray's object store once."""

    run_dir: Path
    inputs: RunInputs


@dataclass(frozen=True)
class TaskSpec:
    """One try of one entry as the driver submits it.

    Attributes:
        entry: the plan entry.
        accum: None on the first try (the task picks the pair for its GPU), else a retry's accumulation.
        gpu_share: the GPUs (or fraction of one) the task asked Ray for.
        crash_once: testing aid (see :class:`RayOptions`).
    """

    entry: PlanEntry
    accum: int | None
    gpu_share: float
    crash_once: bool = False


@dataclass(frozen=True)
class TaskDone:
    """A try that trained: everything of the record but the prediction file, which the task wrote."""

    memory: MemoryRecord
    epochs: list[EpochRecord]
    metrics: Metrics
    predictions: str
    model: SavedModelRecord | None = None


@dataclass(frozen=True)
class TaskResult:
    """What a task returns: the try's outcome, the device and pair it trained with, its seconds (after
    the imports: the local backend's measure), and where it ran."""

    outcome: TaskDone | OomMiss
    device: str
    accum: int
    micro_batch: int
    seconds: float
    worker: WorkerRecord


def run_plan_ray(
    plan_path: str | Path,
    data_dir: str | Path,
    run_dir: str | Path,
    options: RunOptions = RunOptions(),
    ray_options: RayOptions = RayOptions(),
    reporter: Reporter = Reporter(),
) -> RunResult:
    """Train the plan's unfinished entries as Ray tasks into ``run_dir`` (see the module docstring).

    Uses the Ray connection of this process if there is one (``ray.init`` called earlier), else starts
    or joins one as ``ray_options.address`` says and shuts it down at the end.

    Args:
        plan_path: plan.json written by `planner probe`.
        data_dir: the data folder, at the same path on every node.
        run_dir: the run folder, at the same path on every node.
        options: the training options, as for the local backend.
        ray_options: see :class:`RayOptions`.
        reporter: receives ``run_started``, ``entry_skipped``, ``entry_oom``, ``entry_done`` and
            ``run_finished`` in the driver; tasks print their ``train`` and epoch lines (Ray forwards
            a worker's output to the driver) and append them to run.log.

    Returns:
        The run folder's final record, the plan's entry names and the device the entries trained on.

    Raises:
        UserError: Ray is not installed or cannot be reached, the cluster has no GPU that a task
            asks for, or the plan, data, options or run folder are wrong (as for the local backend).
        KeyboardInterrupt: the run was interrupted; unfinished tasks are cancelled, finished entries kept.
    """
    ray = _import_ray()
    plan = load_plan(plan_path)
    _check_entry_names(plan)
    if options.cpu_memory_limit is not None and options.device != "cpu":
        raise UserError("--cpu-memory-limit applies to CPU training only (--device cpu)")
    if options.device == "cuda" and ray_options.gpus_per_entry == 0:
        raise UserError("--gpus-per-entry 0 trains on CPU workers: use --device cpu or auto, or give each "
                        "entry a GPU")
    layout = scan_data(data_dir)  # before the lock: a bad data folder leaves no run folder behind
    with one_writer(run_dir):
        run_dir, split, book, reporter = start_run_folder(plan_path, plan, layout, run_dir, options, reporter)
        try:
            # a skipped entry's record names the device its task would have asked for
            wanted = "cpu" if options.device == "cpu" or ray_options.gpus_per_entry == 0 else "cuda"
            todo = entries_to_train(plan, book, reporter, wanted, options.include_misfits)
            if todo:
                if not sys.stdout.isatty():  # Ray's prefixes of forwarded worker lines: no colour codes in a log
                    os.environ.setdefault("RAY_COLOR_PREFIX", "0")
                shared = SharedInputs(run_dir=run_dir, inputs=RunInputs(
                    effective_batch_size=plan.effective_batch_size, layout=layout, split=split,
                    settings=options.settings(), device=options.device, seed=options.seed,
                    cpu_memory_limit=options.cpu_memory_limit, save_models=options.save_models))
                with _connected(ray, ray_options.address):
                    shares = _gpu_shares(ray, plan, todo, ray_options)
                    _check_gpus(ray, max(shares.values()))
                    _Driver(ray, plan, shared, book, reporter, ray_options, shares).run(todo)
        finally:
            reporter.run_finished()
    names = tuple(entry.name for entry in plan.entries)
    devices = {book.run.entries[name].device for name in names if name in book.run.entries}
    return RunResult(run_dir=run_dir, run=book.run, names=names, device="cuda" if "cuda" in devices else "cpu")


class _Driver:
    """Submits the tries, waits for them and records each result as it arrives."""

    def __init__(self, ray: Any, plan: Plan, shared: SharedInputs, book: RunBook, reporter: Reporter,
                 options: RayOptions, shares: dict[str, float]) -> None:
        self.ray, self.plan, self.shared, self.book, self.reporter = ray, plan, shared, book, reporter
        self.options, self.shares = options, shares
        self.shared_ref = ray.put(shared)
        max_calls = 1 if any(share > 0 for share in shares.values()) else 0  # fresh process per GPU task
        self.task = ray.remote(max_calls=max_calls)(train_task)
        self.pending: dict[Any, PlanEntry] = {}
        self.records: dict[str, EntryRecord] = {}
        self.first_accum: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    def run(self, entries: Sequence[PlanEntry]) -> None:
        try:
            for entry in entries:
                self.submit(entry, None)
            while self.pending:
                (ref,), _ = self.ray.wait(list(self.pending), num_returns=1)
                entry = self.pending.pop(ref)
                try:
                    result = self.ray.get(ref)
                except self.ray.exceptions.RayError as error:
                    cause = getattr(error, "cause", None)  # the task's own exception, if it raised
                    self.give_up(entry, describe_entry_error(cause) if cause else _named_first_line(error))
                    continue
                self.record(entry, result)
        finally:
            for ref in self.pending:  # interrupted: stop what is still queued or training
                self.ray.cancel(ref, force=True)

    def submit(self, entry: PlanEntry, accum: int | None) -> None:
        share = self.shares[entry.name]
        spec = TaskSpec(entry=entry, accum=accum, gpu_share=share, crash_once=entry.name in self.options.crash_once)
        ref = self.task.options(num_gpus=share, max_retries=self.options.max_retries, retry_exceptions=False,
                                name=f"train {entry.name}").remote(spec, self.shared_ref)
        self.pending[ref] = entry

    def record(self, entry: PlanEntry, result: TaskResult) -> None:
        """Put a try's result in run.json; after an OOM, resubmit with the next larger accumulation."""
        name, effective = entry.name, self.plan.effective_batch_size
        self.seconds[name] = self.seconds.get(name, 0.0) + result.seconds
        self.first_accum.setdefault(name, result.accum)
        record = self.records.get(name) or new_entry_record(
            self._job(entry, result.accum, result.device), self.plan, _iso(result.worker.started_unix))
        record = record.model_copy(update={"accum": result.accum, "micro_batch": result.micro_batch,
                                           "worker": result.worker})
        outcome = result.outcome
        if isinstance(outcome, TaskDone):
            record = finished_record(record, memory=outcome.memory, epochs=outcome.epochs, metrics=outcome.metrics,
                                     predictions=outcome.predictions, seconds=self.seconds[name],
                                     model=outcome.model)
            self.book.put(record)
            self.reporter.entry_done(record)
            return
        misses = [*record.oom_misses, outcome]
        larger = accumulation_ladder(effective, result.accum)[1:]
        self.reporter.entry_oom(name, outcome, larger[0] if larger else None)
        if not larger:
            tried = accumulation_ladder(effective, self.first_accum[name])
            record = failed_record(record, misses, self.seconds[name],
                                   f"out of memory at every accumulation ({', '.join(map(str, tried))})")
            self.book.put(record)
            self.reporter.entry_done(record)
            return
        self.records[name] = record.model_copy(update={
            "accum": larger[0], "micro_batch": effective // larger[0], "oom_misses": misses})
        self.book.put(self.records[name])
        self.submit(entry, larger[0])

    def give_up(self, entry: PlanEntry, error: str) -> None:
        """A task that raised, or whose worker died more often than ``max_retries`` allows."""
        record = self.records.get(entry.name)
        if record is None:
            device = "cpu" if self.shared.inputs.device == "cpu" or self.shares[entry.name] == 0 else "cuda"
            record = new_entry_record(self._job(entry, entry.accum, device), self.plan, _iso(time.time()))
        record = failed_record(record, record.oom_misses, self.seconds.get(entry.name, 0.0), error)
        self.book.put(record)
        self.reporter.entry_done(record)

    def _job(self, entry: PlanEntry, accum: int, device: str) -> TrainJob:
        return _make_job(self.shared, entry, accum, device)


def _make_job(shared: SharedInputs, entry: PlanEntry, accum: int, device: str) -> TrainJob:
    return TrainJob(entry=entry, accum=accum, inputs=replace(shared.inputs, device=device))


def train_task(spec: TaskSpec, shared: SharedInputs) -> TaskResult:
    """The Ray task: one try of one entry on the GPU (or share of one) Ray gave this worker.

    Args:
        spec: the entry, the accumulation of a retry (None on the first try) and the share asked for.
        shared: the run's common inputs.

    Returns:
        The outcome (``TaskDone`` with the prediction file written, or ``OomMiss``), the device and
        pair trained with, and a :class:`WorkerRecord`.

    Raises:
        UserError: ``--device cuda`` on a worker that sees no CUDA device.
    """
    import ray

    from trainer.memory import release_memory
    from trainer.predictions import predictions_path, save_predictions
    from trainer.recipe import prepare_device
    from trainer.run import _attempt
    from trainer.saved_model import save_model

    started = time.time()
    if spec.crash_once:
        _crash_once(shared.run_dir, spec.entry.name)
    # fastai imports torch.jit.script, deprecated in recent torch (the CLI hides the same warning).
    warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.script.*")
    clock = time.perf_counter()
    import fastai.vision.all  # noqa: F401  (timed: every fresh worker pays it before its first epoch)

    import_seconds = time.perf_counter() - clock
    clock = time.perf_counter()
    device = _task_device(shared.inputs.device, spec.gpu_share)
    card_bytes, usable_bytes = _claim_gpu(spec.gpu_share) if device == "cuda" else (None, None)
    accum = spec.accum or pair_for_memory(spec.entry, usable_bytes).accum
    job = _make_job(shared, spec.entry, accum, device)
    prepare_device(device)
    reporter = Reporters(LineReporter(partial(print, flush=True)), LogFile(shared.run_dir / LOG_FILE))
    reporter.entry_started(spec.entry.name, accum, job.micro_batch, shared.inputs.settings.epochs + 1)
    result = _attempt(job, reporter, ())
    release_memory(device)  # outside _attempt's except block, as the local backend does
    if isinstance(result, OomMiss):
        outcome: TaskDone | OomMiss = result
    else:
        model = save_model(shared.run_dir, result.model) if result.model else None  # before the npz
        path = save_predictions(predictions_path(shared.run_dir, spec.entry.name), result.predictions)
        outcome = TaskDone(memory=result.memory, epochs=result.epochs, metrics=result.metrics,
                           predictions=path.relative_to(shared.run_dir).as_posix(), model=model)
    worker = WorkerRecord(
        node=ray.util.get_node_ip_address(), hostname=socket.gethostname(), pid=os.getpid(),
        gpu_ids=[str(gpu) for gpu in ray.get_gpu_ids()], gpu_share=spec.gpu_share, gpu_memory_bytes=card_bytes,
        memory_bytes=usable_bytes, started_unix=started, ended_unix=time.time(), import_seconds=import_seconds,
    )
    return TaskResult(outcome=outcome, device=device, accum=accum, micro_batch=job.micro_batch,
                      seconds=time.perf_counter() - clock, worker=worker)


def _task_device(requested: str, gpu_share: float) -> str:
    """``auto``: cuda when the task got a GPU (Ray sets CUDA_VISIBLE_DEVICES to it) and sees it. A task
    without GPUs trains on the CPU: Ray leaves CUDA_VISIBLE_DEVICES alone then, so the node's cards
    would be visible but not reserved."""
    import torch

    available = gpu_share > 0 and torch.cuda.is_available()
    if requested == "cuda" and not available:
        raise UserError(f"--device cuda: the worker on {socket.gethostname()} sees no CUDA device")
    return "cuda" if requested == "cuda" or (requested == "auto" and available) else "cpu"


def _claim_gpu(share: float) -> tuple[int, int]:
    """The card's memory and what this task may use of it; with a fraction of a GPU, cap the process.

    The cap keeps torch's allocator within ``share × card`` minus the process's CUDA context (NVML's
    figure for this process, else 640 MiB), so that tasks sharing the card stay
    in their shares (``trainer.placement``).
    """
    import torch

    from planner.meters import gpu
    from planner.meters.gpu import FALLBACK_CONTEXT_BYTES

    card = gpu.gpu_total_bytes(0)
    if share >= 1:
        return card, card
    torch.zeros(1, device="cuda")  # create the context, so that NVML lists this process
    share_bytes = int(share * card)
    process = gpu._nvml_process_bytes(0)
    context = process - torch.cuda.memory_reserved(0) if process is not None else FALLBACK_CONTEXT_BYTES
    torch.cuda.set_per_process_memory_fraction(share_cap_fraction(share_bytes, context, card), 0)
    return card, share_bytes


def _crash_once(run_dir: Path, name: str) -> None:
    """Testing aid: exit this worker process without a word, once per entry and run folder."""
    marker = run_dir / CRASH_MARKER.format(name=name)
    if not marker.exists():
        marker.touch()
        os._exit(1)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return ray


@contextmanager
def _connected(ray: Any, address: str | None) -> Iterator[None]:
    """This process's Ray connection, or a new one (local instance or ``address``) closed afterwards."""
    if ray.is_initialized():
        yield
        return
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise UserError(f"cannot reach {where}: {_named_first_line(error)}") from None
    try:
        yield
    finally:
        ray.shutdown()


def _gpu_shares(ray: Any, plan: Plan, entries: Sequence[PlanEntry], options: RayOptions) -> dict[str, float]:
    """Each entry's ``num_gpus``: ``--gpus-per-entry``, or with ``--pack`` the share its peak needs of
    the cluster's smallest card (NVML on every GPU node; the plan's budget when no node can tell, e.g.
    Ray's logical GPUs)."""
    if not options.pack:
        return {entry.name: options.gpus_per_entry for entry in entries}
    card = _smallest_card(ray) or plan.budget_bytes
    return {
        entry.name: 1.0 if entry.predicted_peak_bytes is None else pack_fraction(
            entry.predicted_peak_bytes, plan.margin, card)
        for entry in entries
    }


def _smallest_card(ray: Any) -> int | None:
    """The smallest GPU memory in the cluster, read by a tiny task on every node with GPUs."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, num_gpus=0)(node_card_bytes)
    refs = [
        probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote()
        for node in ray.nodes() if node["Alive"] and node["Resources"].get("GPU", 0) > 0
    ]
    sizes = [size for size in ray.get(refs) if size]
    return min(sizes, default=None)


def _check_gpus(ray: Any, largest_share: float) -> None:
    """Refuse tasks no node can run (Ray would queue them forever)."""
    if largest_share == 0:
        return
    per_node = [node["Resources"].get("GPU", 0) for node in ray.nodes() if node["Alive"]]
    if max(per_node, default=0) < largest_share:
        shown = ", ".join(f"{gpus:g}" for gpus in per_node)
        raise UserError(
            f"a task asks for {largest_share:g} GPU but the Ray cluster's nodes have {shown} GPUs: start Ray "
            "on GPU machines, lower --gpus-per-entry, or use --gpus-per-entry 0 to train on CPU workers"
        )


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, timezone.utc).isoformat(timespec="seconds")


def _named_first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {first_line(error)}" if str(error).strip() else type(error).__name__
