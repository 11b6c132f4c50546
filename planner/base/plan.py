"""plan.json: the file the probe writes and `planner run` reads.

Records are frozen pydantic models: loading validates every field and a mistake is reported as one
line naming the field (``entries.2.accum: ...``). Writing is atomic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from planner.base.atomic import atomic_write_json
from planner.base.errors import UserError
from planner.base.jsonfile import load_record

PLAN_VERSION = 1
Size = tuple[int, int]
MIN_MICRO_BATCH = 2
"""fastai's head ends in BatchNorm1d over pooled features, which cannot train on one image: the probe
never plans a micro-batch of 1, and a plan that says so is refused at load."""


def batch_divisors(effective_batch_size: int) -> list[int]:
    """The divisors of the effective batch, ascending: the only accumulations and micro-batches that keep
    it exact (fastai's ``GradientAccumulation`` counts samples)."""
    return [n for n in range(1, effective_batch_size + 1) if effective_batch_size % n == 0]


def micro_batch_for(effective_batch_size: int, accum: int) -> int:
    """The micro-batch of ``accum`` steps per optimizer step: ``effective_batch_size // accum``.

    Raises:
        ValueError: ``accum`` does not divide the effective batch.
    """
    return _cofactor(effective_batch_size, accum, "accum")


def accum_for(effective_batch_size: int, micro_batch: int) -> int:
    """The accumulation of a micro-batch: ``effective_batch_size // micro_batch``.

    Raises:
        ValueError: ``micro_batch`` does not divide the effective batch.
    """
    return _cofactor(effective_batch_size, micro_batch, "micro_batch")


def _cofactor(effective_batch_size: int, factor: int, name: str) -> int:
    if factor < 1 or effective_batch_size % factor:
        raise ValueError(f"{name} {factor} does not divide the effective batch {effective_batch_size}")
    return effective_batch_size // factor


class Record(BaseModel):
    """Base of every file record: immutable, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


class ItemTransform(Record):
    """fastai's item transform ``Resize(resize, method=method)``, applied on the CPU to each image."""

    resize: int | tuple[int, int]
    method: Literal["crop", "squish", "pad"] = "crop"

    @field_validator("resize")
    @classmethod
    def _positive_and_one_spelling(cls, resize: int | tuple[int, int]) -> int | tuple[int, int]:
        """Positive sides; a square as one int (``[224, 224]`` is ``224``: one transform, one name)."""
        sides = (resize,) if isinstance(resize, int) else resize
        if any(side <= 0 for side in sides):
            raise ValueError("resize sides must be positive")
        return sides[0] if len(set(sides)) == 1 else resize

    @property
    def label(self) -> str:
        """A short text for names and tables, e.g. ``crop640x480`` or ``squish480``."""
        sides = (self.resize,) if isinstance(self.resize, int) else self.resize
        return self.method + "x".join(str(side) for side in sides)


class StepTimes(Record):
    """Predicted seconds of one micro-batch's parts on a named card, for one bound: the card's own work
    (the fake step's op costs, ``planner.probe.steptime``) or the host's (``planner.probe.hosttime``)."""

    gpu: str
    forward_backward: float = Field(ge=0)
    optimizer_step: float = Field(ge=0)
    eval_forward: float = Field(ge=0)


class HostWork(Record):
    """What the host does for one micro-batch, counted in the fake step (``planner.probe.hosttime``):
    aten ops dispatched in the forward and backward pass and in a no-gradient forward pass (views
    included), and the parameter tensors fastai's optimizer steps one by one."""

    forward_backward_ops: int = Field(ge=0)
    eval_ops: int = Field(ge=0)
    parameter_tensors: int = Field(ge=0)


class ProbePoint(Record):
    """One probe: a few real (or fake) training steps at one micro-batch.

    ``peak_bytes`` is what the budget is compared with (for the cuda meter reserved peak plus what
    torch does not see). ``forward_backward_bytes`` and ``step_bytes`` split it by phase, which is
    what the memory curve is fitted on. All three are None when the probe ran out of memory.
    """

    micro_batch: int = Field(gt=0)
    peak_bytes: int | None
    forward_backward_bytes: int | None = None
    step_bytes: int | None = None
    oom: bool = False
    seconds: float = Field(ge=0)
    step_seconds: float | None = None
    grad_checkpointing: bool = False
    predicted_times: StepTimes | None = None
    host_work: HostWork | None = None
    reused: bool = False
    """The answer of an earlier identical probe (the estimate meter: this run's, or its store's from
    an earlier run), not a new step; ``seconds`` is then 0."""
    phase_peaks: dict[str, int] = Field(default_factory=dict)
    """The peak of each phase of the run the probe rehearsed (``frozen_train``, ``forward_backward``
    and ``step`` of unfrozen training, ``valid``, ``tta``), in the meter's units before what the
    device adds (the estimate: its allocator replay's bytes, before the device model's factor and
    overhead)."""
    peak_phase: str | None = None
    """The phase that set ``peak_bytes``."""
    epoch_growth_bytes: list[int] = Field(default_factory=list)
    """What each unfrozen epoch of the rehearsal added to the peak; it stops at the first epoch that
    adds nothing (under 1 MiB; a larger last value: still growing when the rehearsal's epochs ran out)."""


class MemoryCurve(Record):
    """peak(b) = max(step_bytes + step_per_sample_bytes*b, fixed_bytes + per_sample_bytes*b)."""

    fixed_bytes: float
    per_sample_bytes: float
    step_bytes: float
    step_per_sample_bytes: float = 0.0

    def predict(self, micro_batch: int) -> int:
        backward = self.fixed_bytes + self.per_sample_bytes * micro_batch
        step = self.step_bytes + self.step_per_sample_bytes * micro_batch
        return int(max(backward, step))


class BudgetPair(Record):
    """The micro-batch and accumulation the probe chose for one more card size (same effective batch).

    Written by ``planner probe`` given several ``--gpu-mem``; a task of ``planner run --backend ray``
    trains with the pair of the largest budget its GPU holds (``planner_trainer.placement.pair_for_memory``).
    """

    budget_bytes: int = Field(gt=0)
    micro_batch: int = Field(gt=0)
    accum: int = Field(gt=0)
    predicted_peak_bytes: int | None = Field(ge=0)
    fits: bool


class Alternative(Record):
    """One configuration the probe weighed for an entry: the chosen one and the others."""

    micro_batch: int = Field(gt=0)
    accum: int = Field(gt=0)
    grad_checkpointing: bool
    predicted_peak_bytes: int | None = Field(ge=0)
    fits: bool
    seconds_per_sample: float | None = None
    relative_cost: float = Field(gt=0)


class LoaderTime(Record):
    """Seconds the run's DataLoader takes to decode and resize (the item transform) one epoch's images
    and TTA's, from a sample of the data folder's images timed on this machine (``planner.probe.loadtime``).

    ``seconds_per_image``: one worker's CPU seconds per image; ``workers``: the DataLoader worker
    processes of the training machine, which decode side by side (0: the training process decodes
    between its steps); ``start_seconds``: a worker's start, paid again at every pass over the data
    (0 without workers). ``train_seconds``: the training images of one epoch (whole micro-batches);
    ``valid_seconds``: the held-out images; ``epoch_seconds``: both; ``tta_seconds``: TTA's passes over
    the held-out and test images.
    """

    workers: int = Field(ge=0)
    seconds_per_image: float = Field(gt=0)
    start_seconds: float = Field(default=0.0, ge=0)
    images_timed: int = Field(gt=0)
    train_seconds: float = Field(ge=0)
    valid_seconds: float = Field(ge=0)
    epoch_seconds: float = Field(ge=0)
    tta_seconds: float = Field(ge=0)


class EntryTime(Record):
    """Seconds to train one entry as planned (``planner.probe.epochtime``).

    ``source`` "estimate": the step-time model on ``gpu``; "measured": the cuda meter's timed probe
    steps (training; the no-gradient passes then scaled from them). ``total_seconds`` is fastai's
    ``fine_tune(epochs)``: one epoch with the body frozen, ``epochs`` epochs unfrozen, then TTA on the
    held-out and test images. An estimate takes each pass at the pace of its slowest bound:
    ``bound_seconds`` holds each bound's own total (e.g. "device": the card's work, "host": the
    host's, "loader": the DataLoader's workers decoding the images, ``PlanEntry.loader_time``; without
    workers the training process decodes between its steps and the loading adds to each other bound,
    e.g. "device+loader"), ``time_bound`` names the slowest; both are empty for a measurement, whose
    passes still take the loader's pace when it is slower.
    """

    source: Literal["estimate", "measured"]
    gpu: str
    train_seconds_per_epoch: float = Field(ge=0)
    valid_seconds_per_epoch: float = Field(ge=0)
    epoch_seconds: float = Field(ge=0)
    frozen_epoch_seconds: float = Field(ge=0)
    epochs: int = Field(ge=0)
    tta_seconds: float = Field(ge=0)
    total_seconds: float = Field(ge=0)
    time_bound: str | None = None
    bound_seconds: dict[str, float] = Field(default_factory=dict)


class PlanEntry(Record):
    """Everything `planner run` needs to train one model, plus the evidence behind the choice.

    ``accum``/``micro_batch`` are for the plan's ``budget_bytes``; ``per_budget`` (empty unless the
    probe was given several budgets) holds a pair for each budget, the plan's own included.
    ``grad_checkpointing`` trains with timm's activation checkpointing; ``choice`` says why this
    configuration won and ``alternatives`` lists those weighed (``planner.probe.configuration``);
    ``peak_phase`` is the phase of the run that sets the predicted peak (from the chosen probe);
    ``loader_time`` the data loading's seconds, measured when the probe has a data folder.
    """

    name: str = Field(min_length=1)
    arch: str = Field(min_length=1)
    reference_arch: str | None = None
    item: ItemTransform
    size: Size
    accum: int = Field(gt=0)
    micro_batch: int = Field(gt=0)
    predicted_peak_bytes: int | None = Field(ge=0)
    fits: bool
    headroom_bytes: int | None
    curve: MemoryCurve | None = None
    probes: list[ProbePoint] = Field(default_factory=list)
    ooms: int = Field(default=0, ge=0)
    step_seconds: float | None = None
    probe_seconds: float = Field(default=0.0, ge=0)
    per_budget: list[BudgetPair] = Field(default_factory=list)
    grad_checkpointing: bool = False
    choice: str | None = None
    alternatives: list[Alternative] = Field(default_factory=list)
    predicted_time: EntryTime | None = None
    measured_time: EntryTime | None = None
    peak_phase: str | None = None
    loader_time: LoaderTime | None = None

    @model_validator(mode="after")
    def _consistent(self) -> PlanEntry:
        if min(self.size) <= 0:
            raise ValueError("size sides must be positive")
        if min([self.micro_batch, *(pair.micro_batch for pair in self.per_budget)]) < MIN_MICRO_BATCH:
            raise ValueError(f"micro_batch must be at least {MIN_MICRO_BATCH}: fastai's head has BatchNorm, which "
                             "cannot train on single images")
        if self.fits and self.predicted_peak_bytes is None:
            raise ValueError("an entry that fits needs predicted_peak_bytes")
        return self


class AllocatorConfig(Record):
    """The configuration of torch's CUDA caching allocator (``PYTORCH_CUDA_ALLOC_CONF``) that peaks were
    measured, estimated or trained with; ``planner.base.allocator`` decides, applies and reads it.

    ``conf``: the setting, "" for torch's defaults. ``source``: ``planner`` (planner's default, set by
    this process or the one that started it), ``user`` (the environment's own setting, which planner
    leaves alone), ``torch`` (nothing set: CUDA had started in the process before planner could set its
    default, so torch's defaults were in force).
    """

    conf: str
    source: Literal["planner", "user", "torch"]


class DeviceModelRecord(Record):
    """The constants an estimate plan's card bytes come from: card bytes = ``reserved_factor`` × the
    allocator replay's ``replay`` peak + ``overhead_bytes``. ``fitted_on``: what they were fitted on (a
    measured stack, or this card's own measured pairs when ``calibrated``), ``points`` how many
    measurements, ``median_error`` and ``worst_under`` their relative errors of card bytes there;
    ``note``: why a stack's constants other than this one's serve (None when they are its own)."""

    replay: Literal["caching", "reserved", "flat"]
    reserved_factor: float
    overhead_bytes: int
    fitted_on: str
    points: int
    calibrated: bool = False
    median_error: float | None = None
    worst_under: float | None = None
    note: str | None = None


class MeasuredOn(Record):
    """Where and how the peaks were measured. ``allocator``: the CUDA allocator configuration the peaks
    are for: the one in force when the cuda meter measured, the one planner chose for a CUDA run when
    the estimate predicted (``planner.base.allocator``); None for the cpu meter and in older plans.
    ``device_model``: the estimate's device constants (estimate plans; None otherwise and in older plans)."""

    device: Literal["cuda", "cpu", "estimate"]
    precision: Literal["fp16", "fp32"]
    gpu: str | None = None
    gpu_total_bytes: int | None = None
    context_bytes: int | None = None
    torch: str
    timm: str
    fastai: str
    synthetic_data: bool = True
    allocator: AllocatorConfig | None = None
    device_model: DeviceModelRecord | None = None


NO_LOADER_TIME = ("not included: the times are the GPU's; decoding and resizing images on the CPU can take longer "
                  "on a fast card with few cores (probe with --data to include it)")


class Host(Record):
    """The host whose share of each training step the times include (``planner.probe.hosttime``): the
    costs measured on the CPU that planned (seconds per dispatched op of a forward and backward pass,
    per parameter tensor of fastai's optimizer step), that CPU, and how fast the host that trains is
    per core relative to it (``--host-speed``; 1: the same)."""

    cpu: str
    op_seconds: float = Field(gt=0)
    param_seconds: float = Field(gt=0)
    speed: float = Field(default=1.0, gt=0)


class TimeBasis(Record):
    """What the entries' times assume: the card, the data set's sizes, the epochs and TTA passes."""

    gpu: str | None
    n_train: int = Field(ge=0)
    n_valid: int = Field(ge=0)
    n_test: int = Field(ge=0)
    data: str
    epochs: int = Field(ge=0)
    tta_passes: int = Field(ge=0)
    host: Host | None = None
    data_loading: str = NO_LOADER_TIME


class Plan(Record):
    """The whole plan: one budget, one effective batch, one entry per model to train; ``data`` is
    the data folder it was probed with (absolute), which `planner run` uses when given none.
    ``margin_basis``: where the margin came from (the planning meter's measured error,
    ``planner.probe.margins``, or ``given`` by ``--margin``); None in older plans."""

    version: Literal[1] = PLAN_VERSION
    budget_bytes: int = Field(gt=0)
    margin: float = Field(ge=0, lt=1)
    margin_basis: str | None = None
    effective_batch_size: int = Field(gt=0)
    measured_on: MeasuredOn
    entries: list[PlanEntry]
    created: str
    seconds: float = Field(default=0.0, ge=0)
    data: str | None = None
    timing: TimeBasis | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Plan:
        names = [entry.name for entry in self.entries]
        if len(set(names)) != len(names):
            raise ValueError("entry names must be unique")
        for index, entry in enumerate(self.entries):
            if entry.accum * entry.micro_batch != self.effective_batch_size:
                raise ValueError(
                    f"entries.{index}: accum × micro_batch ({entry.accum} × {entry.micro_batch}) "
                    f"must equal effective_batch_size {self.effective_batch_size}"
                )
            for number, pair in enumerate(entry.per_budget):
                if pair.accum * pair.micro_batch != self.effective_batch_size:
                    raise ValueError(
                        f"entries.{index}.per_budget.{number}: accum × micro_batch ({pair.accum} × "
                        f"{pair.micro_batch}) must equal effective_batch_size {self.effective_batch_size}"
                    )
        return self

    def check_entry_names(self) -> None:
        """Refuse a plan `planner run` cannot train: entry names become file names (``preds/<name>.npz``).

        Raises:
            UserError: a name that cannot be a file name, or no entries at all.
        """
        for index, entry in enumerate(self.entries):
            if "/" in entry.name or "\\" in entry.name or entry.name.startswith("."):
                raise UserError(f"plan entry {index} has the name {entry.name!r}, which cannot be a file name")
        if not self.entries:
            raise UserError("the plan has no entries: nothing to train")

    def with_entry(self, entry: PlanEntry) -> Plan:
        """A copy with the entry of the same name replaced."""
        entries = [entry if old.name == entry.name else old for old in self.entries]
        return self.model_copy(update={"entries": entries})


def save_plan(plan: Plan, path: str | Path) -> Path:
    """Write the plan atomically as indented JSON."""
    return atomic_write_json(path, plan.to_dict())


def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan file (``planner.base.jsonfile.load_record``).

    Raises:
        UserError: the file is missing, a folder, empty, not UTF-8, not JSON, of another version, or a
            field is wrong; the message names the file, the field and the fix.
    """
    path = Path(path).expanduser()
    return load_record(path, Plan, what="plan file", version=PLAN_VERSION,
                       fix=f"make the plan (again) with `planner probe -o {path}`")
