"""`planner run --backend ray`: the plan's entries as Ray tasks, spread over every GPU of a cluster.

The run driver (``planner_trainer.run.run_plan``, in the process that runs ``planner run``) checks the plan,
the data and the run folder, draws the held-out split once and records every try, as for the local
backend; this backend is only where the tries run: one Ray task per try, their results read back as
they arrive (a ``ray.wait`` loop). Only the driver writes run.json, so a restarted driver skips
finished entries exactly as with the local backend (run.json says ``finished`` and
``preds/<entry>.npz`` exists).

Task (a Ray worker, one try of one entry): sets the driver's CUDA allocator configuration before CUDA
starts in its process (``planner.base.allocator``: the same as the probe's and a local run's), picks
the (micro-batch, accumulation) pair planned for the GPU it got (``planner_trainer.placement.pair_for_memory``),
caps its process to its share of the card when it got a fraction of one, and trains with the local
backend's one-try code (``planner_trainer.one_try.run_try``). It writes ``preds/<entry>.npz`` atomically and
returns the rest of the entry's record. Out of memory is caught inside the task and returned; the
driver then resubmits the entry at the next larger accumulation (same effective batch), because Ray
does not change a task's arguments or resources when it retries it. A worker or node that dies is
Ray's to retry (``max_retries``); any other exception fails that entry (``retry_exceptions=False``)
and the others go on. Each GPU task runs in a fresh worker process (``max_calls=1``, Ray's default
for GPU tasks): a reused process keeps the CUDA device and context of its first task.

Where things must be: the run folder and the data folder on a filesystem every worker sees at the same
path (NFS or a shared volume; on one machine it trivially is), and planner installed on every node.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from planner.base.allocator import use_allocator
from planner.base.compat import quiet_ray_notes
from planner.base.errors import UserError, first_line
from planner.base.plan import Plan, PlanEntry, micro_batch_for
from planner.base.runfile import WorkerRecord, now
from planner_trainer.backend import Backend, TryStarted, resolve_device
from planner_trainer.one_try import EntryError, TryResult, describe_entry_error, run_try
from planner_trainer.options import RayOptions
from planner_trainer.placement import node_card_bytes, pack_fraction, pair_for_memory, share_cap_fraction
from planner_trainer.progress import LineReporter, LogFile, Reporter, Reporters
from planner_trainer.run import LOG_FILE
from planner_trainer.try_spec import RunInputs, TrySpec

INSTALL_HINT = "--backend ray needs Ray: pip install 'fit-planner[ray]' (or pip install 'ray>=2.24')"
CRASH_MARKER = ".crash-once-{name}"


@dataclass(frozen=True)
class SharedInputs:
    """What every task of a run needs; put in Ray's object store once. ``requested_device`` is the
    ``--device`` asked for: each worker resolves it for itself (``auto``: cuda when the task got a GPU
    its process sees), as the driver cannot see the workers' devices."""

    run_dir: Path
    inputs: RunInputs
    requested_device: str


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


class RayBackend(Backend):
    """Tries as Ray tasks: submitted at once, read back as they finish (see the module docstring).

    Raises:
        UserError: Ray is not installed (when the backend is made, so before anything is written).
    """

    def __init__(self, options: RayOptions = RayOptions()) -> None:
        self.ray = _import_ray()
        self.options = options
        self.pending_refs: dict[Any, tuple[PlanEntry, int | None]] = {}
        self.requested_device = "auto"

    def device(self, requested: str, cpu_memory_limit: int | None) -> str:
        self.requested_device = requested  # for the shares (_gpu_shares) and for each worker to resolve
        if cpu_memory_limit is not None and requested != "cpu":
            raise UserError("a CPU memory limit applies to CPU training only (--device cpu)")
        if requested == "cuda" and self.options.gpus_per_entry == 0:
            raise UserError("--gpus-per-entry 0 trains on CPU workers: use --device cpu or auto, or give each "
                            "entry a GPU")
        return "cpu" if requested == "cpu" or self.options.gpus_per_entry == 0 else "cuda"

    @contextmanager
    def opened(self, plan: Plan, entries: Sequence[PlanEntry], inputs: RunInputs, run_dir: Path,
               reporter: Reporter, started: TryStarted) -> Iterator[None]:
        ray = self.ray
        if not sys.stdout.isatty():  # Ray's prefixes of forwarded worker lines: no colour codes in a log
            os.environ.setdefault("RAY_COLOR_PREFIX", "0")
        self.inputs = inputs
        with _connected(ray, self.options.address):
            self.shares = _gpu_shares(ray, plan, entries, self.options, self.requested_device)
            _check_gpus(ray, max(self.shares.values()))
            self.shared_ref = ray.put(SharedInputs(run_dir=run_dir, inputs=inputs,
                                                   requested_device=self.requested_device))
            max_calls = 1 if any(share > 0 for share in self.shares.values()) else 0  # fresh process per GPU task
            self.task = ray.remote(max_calls=max_calls)(train_task)
            try:
                yield
            finally:
                for ref in self.pending_refs:  # interrupted: stop what is still queued or training
                    ray.cancel(ref, force=True)
                self.pending_refs.clear()

    def submit(self, entry: PlanEntry, accum: int | None) -> None:
        share = self.shares[entry.name]
        spec = TaskSpec(entry=entry, accum=accum, gpu_share=share, crash_once=entry.name in self.options.crash_once)
        ref = self.task.options(num_gpus=share, max_retries=self.options.max_retries, retry_exceptions=False,
                                name=f"train {entry.name}").remote(spec, self.shared_ref)
        self.pending_refs[ref] = (entry, accum)

    @property
    def pending(self) -> bool:
        return bool(self.pending_refs)

    def next_result(self) -> TryResult:
        (ref,), _ = self.ray.wait(list(self.pending_refs), num_returns=1)
        entry, accum = self.pending_refs.pop(ref)
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as error:  # the task raised, or its worker died too often
            cause = getattr(error, "cause", None)  # the task's own exception, if it raised
            message = describe_entry_error(cause) if cause else _named_first_line(error)
            device = "cpu" if self.inputs.device == "cpu" or self.shares[entry.name] == 0 else "cuda"
            accum = accum or entry.accum
            return TryResult(entry=entry, outcome=EntryError(message), device=device, accum=accum,
                             micro_batch=micro_batch_for(self.inputs.effective_batch_size, accum), seconds=0.0,
                             started=now())


def train_task(spec: TaskSpec, shared: SharedInputs) -> TryResult:
    """The Ray task: one try of one entry on the GPU (or share of one) Ray gave this worker.

    Args:
        spec: the entry, the accumulation of a retry (None on the first try) and the share asked for.
        shared: the run's common inputs.

    Returns:
        The try's result (its prediction file written when it trained), with a :class:`WorkerRecord`.

    Raises:
        UserError: ``--device cuda`` on a worker that sees no CUDA device.
    """
    import ray

    from planner.base.recipe import prepare_device

    started = time.time()
    if spec.crash_once:
        _crash_once(shared.run_dir, spec.entry.name)
    # fastai imports torch.jit.script, deprecated in recent torch (the CLI hides the same warning).
    warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.script.*")
    clock = time.perf_counter()
    import fastai.vision.all  # noqa: F401  (timed: every fresh worker pays it before its first epoch)

    import_seconds = time.perf_counter() - clock
    import torch

    # A task without GPUs trains on the CPU: Ray leaves CUDA_VISIBLE_DEVICES alone then, so the node's
    # cards would be visible but not reserved.
    device = resolve_device(shared.requested_device, spec.gpu_share > 0 and torch.cuda.is_available(),
                            where=f"to the worker on {socket.gethostname()}")
    if device == "cuda":
        use_allocator(shared.inputs.allocator)  # the driver's decision, before _claim_gpu starts CUDA here
    card_bytes, usable_bytes = _claim_gpu(spec.gpu_share) if device == "cuda" else (None, None)
    accum = spec.accum or pair_for_memory(spec.entry, usable_bytes).accum
    try_spec = TrySpec(entry=spec.entry, accum=accum, inputs=replace(shared.inputs, device=device))
    prepare_device(device)
    reporter = Reporters(LineReporter(partial(print, flush=True)), LogFile(shared.run_dir / LOG_FILE))
    reporter.entry_started(spec.entry.name, accum, try_spec.micro_batch, shared.inputs.settings.epochs + 1)
    result = run_try(try_spec, shared.run_dir, reporter)
    worker = WorkerRecord(
        node=ray.util.get_node_ip_address(), hostname=socket.gethostname(), pid=os.getpid(),
        gpu_ids=[str(gpu) for gpu in ray.get_gpu_ids()], gpu_share=spec.gpu_share, gpu_memory_bytes=card_bytes,
        memory_bytes=usable_bytes, started_unix=started, ended_unix=time.time(), import_seconds=import_seconds,
    )
    return replace(result, started=_iso(started), worker=worker)


def _claim_gpu(share: float) -> tuple[int, int]:
    """The card's memory and what this task may use of it; with a fraction of a GPU, cap the process.

    The cap keeps torch's allocator within ``share × card`` minus the process's CUDA context (NVML's
    figure for this process, else 640 MiB), so that tasks sharing the card stay
    in their shares (``planner_trainer.placement``).
    """
    import torch

    from planner.base import cuda_device as gpu
    from planner.base.cuda_device import FALLBACK_CONTEXT_BYTES

    card = gpu.gpu_total_bytes(0)
    if share >= 1:
        return card, card
    torch.zeros(1, device="cuda")  # create the context, so that NVML lists this process
    share_bytes = int(share * card)
    process = gpu.nvml_process_bytes(0)
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
    on_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        quiet_ray_notes()
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise UserError(f"cannot reach {where}: {_named_first_line(error)}") from None
    finally:  # ray.init makes SIGTERM exit at once; this process's own handling (the CLI's: as Ctrl-C) stays
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        ray.shutdown()


def _gpu_shares(ray: Any, plan: Plan, entries: Sequence[PlanEntry], options: RayOptions,
                device: str) -> dict[str, float]:
    """Each entry's ``num_gpus``: ``--gpus-per-entry``, or with ``--pack`` the share its peak needs of
    the cluster's smallest card (NVML on every GPU node; the plan's budget when no node can tell, e.g.
    Ray's logical GPUs). With ``--device auto`` on a cluster without GPUs: 0, CPU workers (as the local
    backend falls back to the CPU)."""
    if device == "auto" and not any(node["Resources"].get("GPU", 0) for node in ray.nodes() if node["Alive"]):
        return {entry.name: 0.0 for entry in entries}
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
