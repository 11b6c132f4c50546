"""Every GPU measurement as evidence about the estimate: record pairs here, refit with `planner calibrate`.

A cuda-meter plan and a local `planner run` on a GPU measure peaks; each is paired with the estimate
meter's replay of the same configuration (cheap: the fake step, remembered by the estimate store) and
the stack it ran on, and appended to the pairs file (:mod:`planner.probe.meters.calibration`).

Why a separate command refits, not the probe itself: a refit changes every later plan for that card,
so it is a step the user takes and sees (pairs in, constants out, the error before and after, and
the guard's verdict), and a plan stays reproducible until then. Pairs measured on another machine
(a Kaggle session, a rented card) are handed to it as files, so that planning on a laptop for a
card one ran on before gets that card's calibration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from planner.base.entries import EntrySpec
from planner.base.plan import Plan, PlanEntry
from planner.base.runfile import EntryRecord, RunFile
from planner.probe.meters.calibration import (
    Calibration,
    Pair,
    append_pairs,
    calibrate,
    calibration_folder,
    calibration_key,
    load_calibrated,
    load_pairs,
    save_calibrated,
    stack_of,
)
from planner.probe.meters.estimate import EstimateMeter
from planner.probe.meters.stacks import Stack


def machine_stack(allocator_conf: str) -> Stack:
    """The stack of this machine's first GPU: card, driver, torch, cuDNN, and ``allocator_conf``."""
    import torch

    from planner.base.cuda_device import gpu_name

    driver = None
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            driver = str(pynvml.nvmlSystemGetDriverVersion())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVML missing or not permitted: the driver stays unknown
        driver = None
    return stack_of(gpu_name(), torch.__version__, allocator_conf, driver=driver,
                    cudnn=torch.backends.cudnn.version())


def _pair(stack: Stack, estimate: EstimateMeter, entry: PlanEntry | EntryRecord, grad_checkpointing: bool,
          micro_batch: int, measured_bytes: int, source: str) -> Pair:
    """One measured peak of ``entry`` beside the estimate's replay of the same configuration."""
    spec = EntrySpec(name=entry.name, arch=entry.arch, item=entry.item, size=entry.size,
                     grad_checkpointing=grad_checkpointing)
    return Pair(stack, entry.arch, entry.size, grad_checkpointing, micro_batch,
                estimate.replay_peaks(spec, micro_batch), measured_bytes, source)


def probe_pairs(plan: Plan, estimate: EstimateMeter, stack: Stack) -> list[Pair]:
    """Pairs of a cuda-meter plan: each measured probe point (not an out-of-memory, not reused) with the
    estimate's replay of the same configuration."""
    return [
        _pair(stack, estimate, entry, point.grad_checkpointing, point.micro_batch, point.peak_bytes, "cuda probe")
        for entry in plan.entries
        for point in entry.probes
        if point.peak_bytes is not None and not point.oom and not point.reused
    ]


def run_pairs(run: RunFile, estimate: EstimateMeter, stack: Stack) -> list[Pair]:
    """Pairs of a run: each entry that finished on the GPU, its measured peak with the estimate's replay
    of the micro-batch it trained at."""
    return [
        _pair(stack, estimate, entry, entry.grad_checkpointing, entry.micro_batch, entry.memory.peak_bytes,
              "planner run")
        for entry in run.entries.values()
        if entry.status == "finished" and entry.device == "cuda"
        and entry.memory is not None and entry.memory.meter == "cuda"
    ]


def record_run(run: RunFile, folder: Path | None = None) -> Path | None:
    """Pair a local run's measured GPU peaks with the estimate and append them (None: nothing measured)."""
    allocators = [entry.memory.allocator for entry in run.entries.values()
                  if entry.memory is not None and entry.memory.allocator is not None]
    if not allocators:
        return None
    estimate = EstimateMeter()
    try:
        return append_pairs(run_pairs(run, estimate, machine_stack(allocators[0].conf)), folder)
    finally:
        estimate.close()


@dataclass(frozen=True)
class CalibrationReport:
    """What `planner calibrate` did: the pairs it read, one refit per stack, and where it kept them."""

    pairs: int
    sources: list[Path]
    calibrations: list[Calibration]
    saved: Path


def calibrate_stacks(sources: Sequence[Path] = (), folder: Path | None = None) -> CalibrationReport:
    """Refit the device model of every stack with pairs (guarded: constants only go up) and keep them.

    Args:
        sources: pairs files from other machines, read besides this machine's own (their new pairs are
            appended to it, so that later refits keep them).
        folder: where the pairs and the calibrated constants live (None: beside the estimate store).

    Raises:
        UserError: a pairs file is missing or corrupt (one line naming it), or there are no pairs.
    """
    from planner.probe.meters.brackets import load_brackets

    folder = folder or calibration_folder()
    own = folder / "pairs.jsonl"
    existing = load_pairs(own) if own.exists() or not sources else []
    known = {pair.key() for pair in existing}
    imported = []
    for pair in (pair for source in sources for pair in load_pairs(source)):
        if pair.key() not in known:  # a measurement handed in twice counts once
            known.add(pair.key())
            imported.append(pair)
    append_pairs(imported, folder)
    brackets, card = load_brackets()
    stored = load_calibrated(folder)
    results = calibrate([*existing, *imported], brackets, card, stored)
    refitted = {calibration_key(result.stack): result.stack_model() for result in results}
    saved = save_calibrated({**stored, **refitted}, folder)
    return CalibrationReport(len(existing) + len(imported), [own, *sources], results, saved)
