"""Learning the device model from every GPU measurement: pairs on disk, a guarded refit per stack.

On a GPU machine, every peak planner measures (each cuda-meter probe point, each entry of a local
`planner run`) is appended to a pairs file together with the estimate meter's replay of the same
configuration and the stack it ran on (card, driver, torch, cuDNN, allocator configuration). A pair
keeps the replay's peaks (allocated, active, reserved), not the estimate's card bytes, so that any
device model's constants can be fitted on it.

`planner calibrate` refits a stack's constants from its pairs (:func:`fit_constants`) and keeps them
beside the estimate store; later estimates for that card, torch and allocator configuration use them
and the plan says so. The refit must never make the estimate less safe (:func:`guarded_fit`): it only
raises the constants in use (so no model's estimate goes down), and :func:`guard` checks that no more
of the published brackets are left unsafe. A measurement that shows the estimate too high therefore
changes nothing; one that shows it too low raises it.

Files, beside the estimate store (``$XDG_CACHE_HOME/planner/calibration``): ``pairs.jsonl`` (one pair
per line, appended) and ``devices.json`` (the calibrated constants, by stack).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal, get_args

from planner.base.atomic import append_json_lines, atomic_write_json
from planner.base.errors import UserError
from planner.base.jsonfile import read_text
from planner.base.locations import cache_folder
from planner.base.plan import DeviceModelRecord
from planner.probe.meters.device_model import DeviceModel
from planner.probe.meters.stacks import Stack, StackModel, allocator_options, built_in_model, torch_minor

MIB = 2**20
PAIRS_FILE = "pairs.jsonl"
DEVICES_FILE = "devices.json"
Replay = Literal["caching", "reserved", "flat"]
FACTORS = tuple(1.0 + step / 100 for step in range(31))
"""The reserved factors a refit tries (1.00 to 1.30)."""
UNDER_TOLERANCE = 0.03
"""A refit leaves no pair's card bytes under its measurement by more than this."""
NO_PAIRS = ("no measured pairs to calibrate on: measure on a GPU first (`planner probe --device cuda` or "
            "`planner run`), then run planner calibrate")


def calibration_folder() -> Path:
    """Where pairs and calibrated constants live: beside the estimate store."""
    return cache_folder("calibration")


@dataclass(frozen=True)
class Pair:
    """One measured peak and the estimate's replay of the same configuration.

    Attributes:
        stack: where it was measured.
        arch, size, grad_checkpointing, micro_batch: the configuration.
        replay: the estimate's replay peaks in bytes: ``allocated``, ``active``, ``reserved``.
        measured_bytes: the card's bytes (reserved peak + the process's non-torch bytes).
        source: what measured it (``cuda probe``, ``planner run``, ``published recipe``).
    """

    stack: Stack
    arch: str
    size: tuple[int, int]
    grad_checkpointing: bool
    micro_batch: int
    replay: dict[str, int]
    measured_bytes: int
    source: str

    def to_dict(self) -> dict:
        return {**asdict(self), "size": list(self.size)}

    def key(self) -> tuple:
        """Everything the pair says, hashable (the same measurement handed in twice has the same key)."""
        return (self.stack, self.arch, self.size, self.grad_checkpointing, self.micro_batch,
                tuple(sorted(self.replay.items())), self.measured_bytes, self.source)

    @classmethod
    def from_dict(cls, data: dict) -> Pair:
        replay = {name: int(data["replay"][name]) for name in ("allocated", "active", "reserved")}
        size = tuple(int(side) for side in data["size"])
        if len(size) != 2 or int(data["measured_bytes"]) <= 0 or int(data["micro_batch"]) <= 0:
            raise ValueError("size, measured_bytes or micro_batch out of range")
        stack = Stack(**data["stack"])  # a card recorded before the GPU table knew it is named as the table names it
        return cls(replace(stack, gpu=_table_name(stack.gpu)), str(data["arch"]), (size[0], size[1]),
                   bool(data["grad_checkpointing"]), int(data["micro_batch"]), replay, int(data["measured_bytes"]),
                   str(data["source"]))


def _table_name(gpu: str | None) -> str | None:
    """A card as the GPU table names it (``NVIDIA L4`` → ``L4``), or as given when the table has no such card."""
    from planner.base.gpus import find_gpu

    card = find_gpu(gpu) if gpu else None
    return card.name if card else gpu


def stack_of(gpu: str | None, torch_version: str, allocator_conf: str, driver: str | None = None,
             cudnn: int | None = None) -> Stack:
    """The :class:`Stack` of a card (named as CUDA or the GPU table names it) and its software."""
    return Stack(torch=torch_minor(torch_version), allocator=allocator_options(allocator_conf),
                 gpu=_table_name(gpu), driver=driver, cudnn=cudnn)


def append_pairs(pairs: Iterable[Pair], folder: Path | None = None) -> Path | None:
    """Append ``pairs`` to the pairs file; a folder that cannot be written only costs the record.

    Returns:
        The pairs file, or None when nothing was written.
    """
    records = [pair.to_dict() for pair in pairs]
    path = (folder or calibration_folder()) / PAIRS_FILE
    if not records:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        append_json_lines(path, records)
    except OSError:
        return None
    return path


def load_pairs(path: Path) -> list[Pair]:
    """Every pair of a pairs file.

    Raises:
        UserError: the file is missing, a folder, empty, not UTF-8 text, or a line is not a pair (named by
            its number). A line that ends inside its JSON (an append cut short by a full disk or a power
            cut) is skipped.
    """
    text = read_text(path, "pairs file", "measure on a GPU first (`planner probe --device cuda` or `planner run`) "
                     "or name another pairs file")
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if error.pos >= len(line.rstrip()):  # the line ends inside its JSON: an append cut short (a full disk,
                continue  # a power cut), skipped
            record = None
        try:
            pairs.append(Pair.from_dict(record))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UserError(f"{path} line {number} is not a measured pair; remove that line (or the file, to "
                            "start afresh) and run planner calibrate again") from None
    return pairs


@dataclass(frozen=True)
class Errors:
    """Relative errors of card bytes (estimate / measured − 1) over some pairs."""

    count: int
    median: float
    worst_under: float
    worst_over: float
    within_5: float
    under_3: float

    @classmethod
    def of(cls, device: DeviceModel, pairs: Sequence[Pair]) -> Errors:
        errors = [estimate_bytes(device, pair) / pair.measured_bytes - 1 for pair in pairs]
        if not errors:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        return cls(len(errors), statistics.median(abs(e) for e in errors), min(errors), max(errors),
                   sum(abs(e) <= 0.05 for e in errors) / len(errors), sum(e < -0.03 for e in errors) / len(errors))


def estimate_bytes(device: DeviceModel, pair: Pair) -> int:
    """The card bytes ``device`` gives the pair's replay."""
    base = {"caching": "active", "reserved": "reserved", "flat": "allocated"}[device.allocator]
    return device.card_bytes(pair.replay[base])


def fit_constants(pairs: Sequence[Pair], replay: Replay = "reserved", tolerance: float = UNDER_TOLERANCE,
                  floor: DeviceModel | None = None) -> DeviceModel:
    """The constants that fit ``pairs`` best while leaving none under by more than ``tolerance``.

    For each factor in :data:`FACTORS` (from ``floor``'s up), the smallest overhead (at least 0, at
    least ``floor``'s) that keeps every pair's estimate at least ``1 - tolerance`` of its measurement;
    of those, the one with the smallest median error (the smaller factor on a tie).

    Args:
        pairs: the measured pairs.
        replay: which replay peak the constants scale.
        tolerance: how far under a measurement an estimate may stay.
        floor: constants the fit may not go below (so that no estimate goes down); None: any.

    Raises:
        UserError: no pairs.
    """
    if not pairs:
        raise UserError(NO_PAIRS)
    base = {"caching": "active", "reserved": "reserved", "flat": "allocated"}[replay]
    lowest_factor, lowest_overhead = (floor.reserved_factor, floor.overhead_bytes) if floor else (0.0, 0)
    best: tuple[float, DeviceModel] | None = None
    for factor in (f for f in FACTORS if f >= lowest_factor - 1e-9):
        need = max((1 - tolerance) * pair.measured_bytes - factor * pair.replay[base] for pair in pairs)
        overhead = max(lowest_overhead, MIB * -(-max(0, int(need)) // MIB))  # whole MiB, rounded up
        device = DeviceModel(allocator=replay, overhead_bytes=overhead, reserved_factor=round(factor, 2))
        score = Errors.of(device, pairs).median
        if best is None or score < best[0] - 1e-12:
            best = (score, device)
    assert best is not None
    return best[1]


@dataclass(frozen=True)
class Bracket:
    """One published bracket's replay peaks (bytes) at the batch that trained and at the next, which did not."""

    model: str
    at_published: dict[str, int]
    at_next: dict[str, int]


def unsafe_count(device: DeviceModel, brackets: Sequence[Bracket], card_bytes: int) -> int:
    """Brackets whose next batch ``device`` says fits the card (a batch the card could not train)."""
    base = {"caching": "active", "reserved": "reserved", "flat": "allocated"}[device.allocator]
    return sum(device.card_bytes(bracket.at_next[base]) <= card_bytes for bracket in brackets)


def guard(refit: DeviceModel, before: DeviceModel, brackets: Sequence[Bracket], card_bytes: int) -> str | None:
    """Why ``refit`` must not replace ``before``, or None: it may not leave more published brackets unsafe."""
    now, then = unsafe_count(refit, brackets, card_bytes), unsafe_count(before, brackets, card_bytes)
    if now > then:
        return f"it would leave {now} published brackets unsafe, {then} before"
    return None


def guarded_fit(pairs: Sequence[Pair], before: DeviceModel, brackets: Sequence[Bracket],
                card_bytes: int) -> tuple[DeviceModel, str | None]:
    """Constants for ``pairs`` that make no estimate less safe, and a note when the pairs asked for less.

    The refit only raises ``before``'s constants (so no estimate of any model goes down), and
    :func:`guard` checks that the published brackets left unsafe do not rise. When the pairs would
    lower the constants, ``before`` stays and the note says what they asked for.
    """
    unguarded = fit_constants(pairs, before.allocator)
    refit = fit_constants(pairs, before.allocator, floor=before)
    refused = guard(refit, before, brackets, card_bytes)
    assert refused is None, refused  # raising the constants never makes a bracket fit
    lowered = unguarded.reserved_factor < before.reserved_factor or unguarded.overhead_bytes < before.overhead_bytes
    note = None
    if lowered:
        note = (f"the pairs alone ask for {unguarded.reserved_factor:.2f} × {unguarded.allocator} + "
                f"{unguarded.overhead_bytes / MIB:,.0f} MiB; a refit only raises the constants")
        verdict = guard(unguarded, before, brackets, card_bytes)
        if verdict:
            note += f" ({verdict})"
    return refit, note


@dataclass(frozen=True)
class Calibration:
    """One stack's refit: its constants, what they replace, the errors before and after, and what the
    pairs asked for that the guard held back (None when nothing)."""

    stack: Stack
    device: DeviceModel
    before: StackModel
    errors_before: Errors
    errors_after: Errors
    held_back: str | None

    def stack_model(self) -> StackModel:
        return StackModel(self.stack, self.device, f"{self.errors_after.count} measured pairs on this card",
                          self.errors_after.count, {"median": round(self.errors_after.median, 4),
                                                    "worst_under": round(self.errors_after.worst_under, 4)},
                          calibrated=True)


def calibration_key(stack: Stack) -> str:
    """The stack's key among calibrated ones: card, torch, allocator (driver and cuDNN are pooled)."""
    return f"{stack.gpu}|torch {stack.torch}|{stack.allocator}"


def calibrate(pairs: Sequence[Pair], brackets: Sequence[Bracket], card_bytes: int,
              stored: dict[str, StackModel] | None = None) -> list[Calibration]:
    """Refit each stack's constants on its pairs, guarded; see :func:`fit_constants` and :func:`guard`.

    Args:
        pairs: the measured pairs, any stacks.
        brackets: the published brackets the guard counts unsafe answers on.
        card_bytes: the card those brackets were measured on.
        stored: the calibrated constants in use now, by :func:`calibration_key`.

    Raises:
        UserError: no pairs.
    """
    if not pairs:
        raise UserError(NO_PAIRS)
    groups: dict[str, list[Pair]] = {}
    for pair in pairs:
        groups.setdefault(calibration_key(pair.stack), []).append(pair)
    results = []
    for key, group in sorted(groups.items()):
        stack = group[-1].stack
        before = (stored or {}).get(key) or built_in_model(stack)[0]
        refit, held_back = guarded_fit(group, before.device, brackets, card_bytes)
        results.append(Calibration(stack, refit, before, Errors.of(before.device, group), Errors.of(refit, group),
                                   held_back))
    return results


def load_calibrated(folder: Path | None = None) -> dict[str, StackModel]:
    """The calibrated constants kept by ``planner calibrate``, by :func:`calibration_key`; {} when none
    (or the file is unreadable: the built-in constants serve then)."""
    try:
        stacks = json.loads(((folder or calibration_folder()) / DEVICES_FILE).read_text(encoding="utf-8"))["stacks"]
        return {key: _calibrated_model(item) for key, item in stacks.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _calibrated_model(item: dict) -> StackModel:
    """One stack of devices.json, checked (constants a person or a damaged file could have made up are refused:
    they would plan with negative or absurd bytes).

    Raises:
        ValueError, KeyError, TypeError: the item is not one :func:`save_calibrated` writes.
    """
    device = DeviceModel(**item["device"])
    if device.allocator not in get_args(Replay) or type(device.overhead_bytes) is not int \
            or device.overhead_bytes < 0 or not isinstance(device.reserved_factor, int | float) \
            or not 1 <= device.reserved_factor <= FACTORS[-1]:
        raise ValueError(f"device constants out of range: {device}")
    return StackModel(Stack(**item["stack"]), device, str(item["fitted_on"]), int(item["points"]),
                      {name: float(item["errors"][name]) for name in ("median", "worst_under")}, calibrated=True)


def save_calibrated(models: dict[str, StackModel], folder: Path | None = None) -> Path:
    """Keep the calibrated constants (atomically), by :func:`calibration_key`."""
    stacks = {key: {"stack": model.stack.to_dict(), "device": asdict(model.device), "fitted_on": model.fitted_on,
                    "points": model.points, "errors": model.errors} for key, model in models.items()}
    return atomic_write_json((folder or calibration_folder()) / DEVICES_FILE, {"version": 1, "stacks": stacks})


def stack_model_for(stack: Stack, folder: Path | None = None) -> tuple[StackModel, str | None]:
    """The device model to plan with on ``stack``: this card's calibration, else the built-in one
    (with a note when that was fitted on another stack)."""
    if stack.gpu is not None:
        calibrated = load_calibrated(folder).get(calibration_key(stack))
        if calibrated is not None:
            return calibrated, None
    return built_in_model(stack)


def describe_device_model(record: DeviceModelRecord) -> str:
    """One line for the plan's reader: the constants, what they were fitted on, their error, the note."""
    fitted = (f"calibrated on {record.points} pairs measured on this card" if record.calibrated
              else f"fitted on {record.fitted_on}")
    errors = ""
    if record.median_error is not None and record.worst_under is not None:
        errors = f" (median error {record.median_error:.1%}, worst under {record.worst_under:+.1%})"
    note = f"; {record.note}" if record.note else ""
    return (f"device model: {record.reserved_factor:.2f} × the allocator replay's {record.replay} peak + "
            f"{record.overhead_bytes / MIB:,.0f} MiB, {fitted}{errors}{note}")

