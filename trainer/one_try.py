"""One try of one entry, as both backends run it: train, keep what it produced, name what went wrong.

An out-of-memory error becomes an :class:`~planner.base.runfile.OomMiss` (the driver retries at the
next accumulation), any other error an :class:`EntryError` (the entry is given up, the run goes on);
a try that trained leaves its model and predictions in the run folder and returns a :class:`TryDone`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from planner.base.atomic import write_fault
from planner.base.errors import first_line
from planner.base.plan import PlanEntry
from planner.base.predfile import predictions_path, save_predictions
from planner.base.runfile import EpochRecord, MemoryRecord, Metrics, OomMiss, SavedModelRecord, WorkerRecord, now
from planner_trainer.memory import release_memory
from planner_trainer.progress import Reporter
from planner_trainer.saved_model import save_model
from planner_trainer.training import NotTrained, TrainOutcome, train_entry
from planner_trainer.try_spec import TrySpec


@dataclass(frozen=True)
class EntryError:
    """A try that failed for a reason other than memory: the entry is given up, the run goes on."""

    message: str


@dataclass(frozen=True)
class TryDone:
    """A try that trained; its predictions (and model, unless not kept) are in the run folder."""

    memory: MemoryRecord
    epochs: list[EpochRecord]
    metrics: Metrics
    predictions: str
    model: SavedModelRecord | None = None


@dataclass(frozen=True)
class TryResult:
    """What the driver hears of one try: the outcome, the device and pair it trained with, its seconds
    (after any imports), when it started, and where it ran (Ray only)."""

    entry: PlanEntry
    outcome: TryDone | OomMiss | EntryError
    device: str
    accum: int
    micro_batch: int
    seconds: float
    started: str
    worker: WorkerRecord | None = None


def run_try(spec: TrySpec, run_dir: Path, reporter: Reporter, cbs: Sequence[Any] = ()) -> TryResult:
    """Train ``spec`` once and keep its outputs in ``run_dir``; any failure becomes the outcome."""
    started, clock = now(), time.perf_counter()
    outcome = try_outcome(spec, reporter, cbs)
    release_memory(spec.inputs.device)  # outside try_outcome's except block: the traceback no longer holds tensors
    if not isinstance(outcome, OomMiss | EntryError):
        model = save_model(run_dir, outcome.model) if outcome.model else None  # before the npz: finished
        path = save_predictions(predictions_path(run_dir, spec.entry.name), outcome.predictions)  # means kept
        outcome = TryDone(memory=outcome.memory, epochs=outcome.epochs, metrics=outcome.metrics,
                          predictions=path.relative_to(run_dir).as_posix(), model=model)
    return TryResult(entry=spec.entry, outcome=outcome, device=spec.inputs.device, accum=spec.accum,
                     micro_batch=spec.micro_batch, seconds=time.perf_counter() - clock, started=started)


def try_outcome(spec: TrySpec, reporter: Reporter, cbs: Sequence[Any]) -> TrainOutcome | OomMiss | EntryError:
    """One try: the trained outcome, an :class:`OomMiss`, or an :class:`EntryError` naming the error and
    the fix (their tracebacks are dropped)."""
    try:
        return train_entry(spec, reporter, cbs)
    except torch.OutOfMemoryError as error:
        return OomMiss(accum=spec.accum, micro_batch=spec.micro_batch, message=first_line(error, "out of memory"))
    except NotTrained as error:  # its message holds the fix; the same rerun would end the same way
        return EntryError(str(error))
    except OSError as error:
        if write_fault(error) is not None:  # the disk is full (or read-only): every entry would fail; stop the run
            raise
        return EntryError(describe_entry_error(error))
    except Exception as error:  # any other failure of this entry: recorded, the next entries still train
        return EntryError(describe_entry_error(error))


def describe_entry_error(error: BaseException) -> str:
    """One line for an entry that failed: what happened and a fix that works. "Rerun" is advised only
    where a rerun can end otherwise: after the named cause is fixed, or for a network that may be back;
    any other error names run.log, where its traceback is."""
    from PIL import UnidentifiedImageError

    text = f"{type(error).__name__}: {first_line(error)}"
    lines = str(error).strip().splitlines()
    if len(lines) > 1 and lines[0].startswith("Exception occured in"):  # fastai's wrapper: the cause is below
        where = lines[0].removeprefix("Exception occured in ").rstrip(":")
        text = f"{type(error).__name__}: {lines[1].strip()} ({where})"
    said = f"{type(error).__name__} {text}".lower()
    network = isinstance(error, ConnectionError) or any(
        word in said for word in ("http", "url", "connection", "hub", "entrynotfound"))
    if network:  # before images: huggingface_hub's "not in the local cache" is an OSError too
        hint = ("pretrained weights could not be downloaded: connect (or fill timm's cache) and rerun the same "
                "command, or train from random weights with --no-pretrained into another --out folder")
    elif isinstance(error, UnidentifiedImageError | OSError):
        hint = "an image could not be read: replace or remove it, then rerun with --retrain (the data changed)"
    elif "Unknown model" in text or "Invalid pretrained tag" in text:
        hint = ("the plan names an architecture this timm does not have: fix the entry's arch (or probe again), "
                "then rerun the same command")
    else:
        hint = "see run.log for where it happened"
    return f"{text} ({hint})"
