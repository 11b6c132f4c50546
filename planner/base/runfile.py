"""run.json: what `planner run` trained, how, with what result, and the memory it really used.

Records are frozen pydantic models like plan.json's (``planner.base.plan.Record``): loading validates every
field and names the bad one. The file is rewritten atomically after every change of an entry's
state, so an interrupted run leaves a readable file whose finished entries are exactly those with a
prediction file.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import Field

from planner.base.atomic import atomic_write_json
from planner.base.jsonfile import load_record
from planner.base.plan import AllocatorConfig, ItemTransform, Record, Size

RUN_VERSION = 1
RUN_FILE = "run.json"
Device = Literal["cuda", "cpu"]


def now() -> str:
    """The current UTC time as ISO 8601 text, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunSettings(Record):
    """Training settings shared by every entry of a run folder (a rerun must use the same)."""

    epochs: int = Field(gt=0)
    lr: float = Field(gt=0)
    pretrained: bool
    tta_n: int = 4
    tta_beta: float = 0.25


class OomMiss(Record):
    """One try of an entry that ran out of memory, before a retry with more accumulation."""

    accum: int = Field(gt=0)
    micro_batch: int = Field(gt=0)
    message: str


class MemoryRecord(Record):
    """The peak measured while training (``fine_tune``), by the same meter family as the probe.

    ``cuda``: reserved peak + the process's non-torch device bytes (``planner.base.cuda_device.peak_bytes``),
    reset at entry start. ``cpu``: live tensor bytes counted by ``StorageTracker`` (model parameters
    and buffers, then every op's outputs) over the first ``sampled_batches`` training batches of each
    fit and the first validation batches, where steady-state shapes and the optimizer state appear;
    CPU training is fp32 (fastai's ``to_fp16`` is CUDA-only). ``start_bytes`` is what was already held
    when the entry started (CUDA allocated bytes; on the CPU, bytes of tensors still alive), the
    evidence that the previous entry released its memory. ``allocator`` (``cuda`` only; None on the
    CPU and in older files): the CUDA allocator configuration in force in the process that trained
    (``planner.base.allocator``), to compare with the plan's ``measured_on.allocator``.
    """

    meter: Device
    peak_bytes: int = Field(ge=0)
    phase_peaks: dict[str, int] = Field(default_factory=dict)
    start_bytes: int = Field(ge=0)
    sampled_batches: int | None = None
    limit_bytes: int | None = None
    allocator: AllocatorConfig | None = None


class EpochRecord(Record):
    """One epoch of ``fine_tune``: the frozen first epoch, then the unfrozen ones; ``threads``: the CPU
    threads it trained with (``planner.base.threads``; None on a GPU); ``optimizer_steps``: the weight
    updates it made (``GradientAccumulation`` steps once per effective batch; None in older files);
    ``loader_wait_seconds``: how long its training and validation loops waited for batches from the
    DataLoader (``planner_trainer.callbacks.LoaderWait``; None in older files). A loss fastai could not compute
    (no batch) is None."""

    epoch: int = Field(ge=0)
    phase: Literal["frozen", "unfrozen"]
    train_loss: float | None
    valid_loss: float | None
    error_rate: float | None
    seconds: float = Field(ge=0)
    threads: int | None = Field(default=None, gt=0)
    optimizer_steps: int | None = Field(default=None, ge=0)
    loader_wait_seconds: float | None = Field(default=None, ge=0)


class FileSet(Record):
    """A set of files as a run saw them, cheaply: how many, their bytes, and a SHA-256 over each one's
    name, size and modification time (``planner_trainer.fingerprint``): a file added, removed, replaced or
    edited changes it, and so does a copy of the folder (new times), which the listing's hashes of the
    files' bytes then judge."""

    count: int = Field(ge=0)
    bytes: int = Field(ge=0)
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")


class DataRecord(Record):
    """What a run folder trains and predicts on: the classes, the training files (held-out split
    included, ``split.json`` names it) and the test files."""

    classes: list[str]
    train: FileSet
    test: FileSet


class Metrics(Record):
    """Held-out scores of the saved predictions (TTA) and of plain predictions (no TTA)."""

    n_valid: int = Field(ge=1)
    error_rate: float
    log_loss: float
    error_rate_no_tta: float
    log_loss_no_tta: float


class SavedModelRecord(Record):
    """An entry's saved model: weights (safetensors) and recipe (JSON), relative to the run folder;
    ``bytes`` and ``sha256`` of the weights file, checked before it is loaded."""

    weights: str
    recipe: str
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class WorkerRecord(Record):
    """Where the try that finished an entry ran, with ``planner run --backend ray``.

    ``gpu_ids`` are Ray's ids on that node (``ray.get_gpu_ids()``); ``gpu_share`` is the GPU count or
    fraction the task asked for; ``gpu_memory_bytes`` the card's memory (None without CUDA, e.g. Ray's
    logical GPUs) and ``memory_bytes`` what the task could use of it (its share, with ``--pack``);
    ``started_unix``/``ended_unix`` the try's wall-clock bounds on that node (seconds since the epoch);
    ``import_seconds`` the time the worker took to import fastai for it (fresh worker per GPU task).
    """

    node: str
    hostname: str
    pid: int
    gpu_ids: list[str] = Field(default_factory=list)
    gpu_share: float = Field(ge=0)
    gpu_memory_bytes: int | None = None
    memory_bytes: int | None = None
    started_unix: float
    ended_unix: float
    import_seconds: float = Field(default=0.0, ge=0)


class TimeRecord(Record):
    """Seconds per epoch: the plan's prediction (on its card) beside what training measured here.

    ``measured_epoch_seconds`` is the mean of the unfrozen epochs (training and validation, data
    loading included, as fastai's epoch clock runs); ``measured_frozen_epoch_seconds`` the first,
    body-frozen epoch. The prediction is for the planned micro-batch; ``predicted_time_bound`` says which
    part of the machine sets it (``planner.base.plan.EntryTime``). ``predicted_loader_epoch_seconds``:
    the plan's data loading per epoch (None when the probe had no data folder);
    ``measured_loader_wait_seconds``: the unfrozen epochs' mean wait for batches
    (``EpochRecord.loader_wait_seconds``).
    """

    predicted_gpu: str | None = None
    predicted_epoch_seconds: float | None = Field(default=None, ge=0)
    predicted_frozen_epoch_seconds: float | None = Field(default=None, ge=0)
    predicted_total_seconds: float | None = Field(default=None, ge=0)
    predicted_time_bound: str | None = None
    predicted_loader_epoch_seconds: float | None = Field(default=None, ge=0)
    measured_device: Device
    measured_epoch_seconds: float | None = Field(default=None, ge=0)
    measured_frozen_epoch_seconds: float | None = Field(default=None, ge=0)
    measured_loader_wait_seconds: float | None = Field(default=None, ge=0)


def measured_time(record: TimeRecord, epochs: list[EpochRecord]) -> TimeRecord:
    """``record`` with the measured side filled from the epochs' clocks."""
    unfrozen = [epoch.seconds for epoch in epochs if epoch.phase == "unfrozen"]
    frozen = [epoch.seconds for epoch in epochs if epoch.phase == "frozen"]
    waits = [epoch.loader_wait_seconds for epoch in epochs
             if epoch.phase == "unfrozen" and epoch.loader_wait_seconds is not None]
    return record.model_copy(update={
        "measured_epoch_seconds": round(sum(unfrozen) / len(unfrozen), 2) if unfrozen else None,
        "measured_frozen_epoch_seconds": round(frozen[0], 2) if frozen else None,
        "measured_loader_wait_seconds": round(sum(waits) / len(waits), 3) if waits else None,
    })


class EntryRecord(Record):
    """One plan entry in a run: its settings as planned and as trained, and the evidence.

    ``status`` is ``running`` from the start of training until the prediction file is written, then
    ``finished``; ``failed`` when it ran out of memory at every accumulation or another error ended it
    (``error`` says which); ``skipped`` when the plan says it does not fit the card (``error`` says
    why); ``interrupted`` when the run was stopped (Ctrl-C) while it trained. An entry is done only when
    it is ``finished`` and its prediction file exists; ``test_files`` is the test set its predictions
    cover (None in older files).
    """

    name: str
    arch: str
    item: ItemTransform
    size: Size
    status: Literal["running", "finished", "failed", "skipped", "interrupted"]
    device: Device
    precision: Literal["fp16", "fp32"]
    planned_accum: int = Field(gt=0)
    planned_micro_batch: int = Field(gt=0)
    accum: int = Field(gt=0)
    micro_batch: int = Field(gt=0)
    predicted_peak_bytes: int | None = Field(ge=0)
    predicted_on: Literal["cuda", "cpu", "estimate"]
    grad_checkpointing: bool = False
    memory: MemoryRecord | None = None
    oom_misses: list[OomMiss] = Field(default_factory=list)
    epochs: list[EpochRecord] = Field(default_factory=list)
    metrics: Metrics | None = None
    predictions: str | None = None
    model: SavedModelRecord | None = None
    seconds: float = Field(default=0.0, ge=0)
    started: str
    finished: str | None = None
    error: str | None = None
    worker: WorkerRecord | None = None
    time: TimeRecord | None = None
    test_files: FileSet | None = None


SAME_UNITS = {("cuda", "cuda"), ("estimate", "cuda"), ("cpu", "cpu")}
"""(plan's meter, run's meter) pairs whose peaks are in the same units: card bytes, or live fp32 bytes."""


def peaks_comparable(record: EntryRecord) -> bool:
    """Whether the entry's measured peak can be set against the plan's prediction: both exist and are in
    the same units (a GPU plan's card bytes against a CPU run's fp32 tensor bytes compare nothing)."""
    return (record.memory is not None and bool(record.predicted_peak_bytes)
            and (record.predicted_on, record.memory.meter) in SAME_UNITS)


class RunFile(Record):
    """The whole run folder's record; ``inputs``: the data it trains and predicts on (None in older
    files, recorded at their next run)."""

    version: Literal[1] = RUN_VERSION
    data: str
    plan: str
    effective_batch_size: int = Field(gt=0)
    budget_bytes: int = Field(gt=0)
    settings: RunSettings
    entries: dict[str, EntryRecord] = Field(default_factory=dict)
    created: str
    updated: str
    inputs: DataRecord | None = None

    def with_entry(self, entry: EntryRecord) -> RunFile:
        """A copy with ``entry`` added or replaced, and a new ``updated`` time."""
        return self.model_copy(update={"entries": {**self.entries, entry.name: entry}, "updated": now()})


def save_run(run: RunFile, run_dir: Path) -> Path:
    """Write ``RUN_DIR/run.json`` atomically."""
    return atomic_write_json(run_dir / RUN_FILE, run.to_dict())


def load_run(run_dir: str | Path,
             fix: str = "use another --out folder (or remove the damaged run.json to start this one afresh)",
             ) -> RunFile | None:
    """Read ``RUN_DIR/run.json``, or None when the folder has none yet; ``fix`` ends the error message.

    Raises:
        UserError: the file is unreadable, not JSON, of another version, or a field is wrong (named).
    """
    path = Path(run_dir).expanduser() / RUN_FILE
    if not path.exists():
        return None
    return load_record(path, RunFile, what="run record", version=RUN_VERSION, fix=fix)


class RunBook:
    """The run folder's current record, rewritten atomically at every change.

    Args:
        run_dir: the run folder.
        run: its record as loaded or created.
    """

    def __init__(self, run_dir: Path, run: RunFile) -> None:
        self.run_dir = run_dir
        self.run = run

    def put(self, entry: EntryRecord) -> None:
        """Add or replace an entry's record and save run.json."""
        self.run = self.run.with_entry(entry)
        save_run(self.run, self.run_dir)
