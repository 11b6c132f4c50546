"""Out of memory leaves nothing behind (issue 22): a try of `planner run`, or a probe, that runs out of
memory releases everything it held, so that the next one in the same process starts where the first
did and measures what it measured.

Real fastai training on the CPU; the error is the one a full card raises (``torch.OutOfMemoryError``),
raised by the storage tracker's limit (``cpu_memory_limit``, the cpu meter's ``emulate_cap``). What
survives is looked for in two ways: weak references to what the try made (dead once nothing holds
it), and an outer ``StorageTracker`` that sees every storage made inside it, also those only C++ holds
(autograd's saved activations, autocast's cast weights), which the garbage collector cannot see.
The same check on a GPU: ``benchmarks/gpu/oom_hygiene.py``.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from fastai.callback.core import Callback
from fastai.callback.fp16 import MixedPrecision
from run_data import plan_entry

from planner.base.entries import single_entry
from planner.base.plan import ItemTransform
from planner.base.recipe import build_learner, synthetic_dataloaders
from planner.base.runfile import OomMiss, RunSettings
from planner.base.tracker import StorageTracker
from planner.probe.meters import DoesNotFit, get_meter
from planner_trainer.callbacks import MemoryPhases
from planner_trainer.data import scan_data
from planner_trainer.memory import live_tensor_bytes, release_memory
from planner_trainer.one_try import TryDone, run_try
from planner_trainer.progress import Reporter
from planner_trainer.split import draw_split
from planner_trainer.try_spec import RunInputs, TrySpec

REPO = Path(__file__).resolve().parents[2]
ENTRY = plan_entry("test_resnet", size=64, resize=72, micro_batch=8, accum=1)  # effective batch 8
FASTAI_SCALARS = 16 * 2**10
"""What fastai may keep of a finished or failed fit that no cleanup reaches, and that this file does not
count as a leak: a cached learner's recorder keeps the last fit's losses and metrics (4 bytes each);
fastai 2.7's batch augmentations (``_WarpCoord``, ``_BrightnessLogit``, ``_ContrastLogit``) keep the last
batch's random parameters (640 bytes at batch 8; fastai 2.8 keeps none). The leaks this file looks for
are megabytes: a model, its optimizer state, a batch's activations."""

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class RememberTheTry(Callback):
    """Weak references to what a try made, and the bytes its meter found alive when it started: taken
    from inside the try through ``run_try``'s ``cbs``, the first time each appears."""

    def __init__(self) -> None:
        self.refs: dict[str, weakref.ref] = {}
        self.start_bytes: int | None = None

    def before_fit(self) -> None:
        if self.refs:  # fine_tune's second fit: the same learner
            return
        learn = self.learn
        meter = next(cb.meter for cb in learn.cbs if isinstance(cb, MemoryPhases))
        self.start_bytes = meter.start_bytes
        made = {"learner": learn, "model": learn.model, "parameter": next(learn.model.parameters()),
                "optimizer": learn.opt, "data loaders": learn.dls, "training loader": learn.dls.train,
                "meter": meter}
        self.refs = {name: weakref.ref(thing) for name, thing in made.items()}

    def before_batch(self) -> None:
        self.refs.setdefault("batch", weakref.ref(self.learn.xb[0]))


@pytest.fixture(scope="module")
def inputs(image_folder: Path) -> RunInputs:
    layout = scan_data(image_folder)
    return RunInputs(effective_batch_size=8, layout=layout, split=draw_split(layout.train, 0.2, 0),
                     settings=RunSettings(epochs=1, lr=1e-3, pretrained=False), device="cpu", seed=0,
                     save_models=False)


@pytest.mark.slow
def test_a_try_that_runs_out_of_memory_leaves_nothing_behind(inputs: RunInputs, tmp_path: Path) -> None:
    clean = run_try(TrySpec(entry=ENTRY, accum=1, inputs=inputs), tmp_path, Reporter()).outcome
    assert isinstance(clean, TryDone)
    limited = replace(inputs, cpu_memory_limit=int(0.97 * clean.memory.peak_bytes))  # micro-batch 8 no longer fits
    remember = RememberTheTry()

    with StorageTracker() as outer:  # counts every storage the try makes, autograd's saved tensors too
        missed = run_try(TrySpec(entry=ENTRY, accum=1, inputs=limited), tmp_path, Reporter(), [remember])
        alive_of_the_try = outer.live_bytes

    assert isinstance(missed.outcome, OomMiss) and "exceeds the limit" in missed.outcome.message
    assert {name: ref() is None for name, ref in remember.refs.items()} == dict.fromkeys(remember.refs, True)
    assert {"learner", "optimizer", "data loaders", "batch"} <= set(remember.refs)
    assert alive_of_the_try <= FASTAI_SCALARS  # 0 with fastai 2.8; fastai 2.7 keeps its augmentations' last draws
    assert abs(live_tensor_bytes() - remember.start_bytes) <= FASTAI_SCALARS
    assert abs(remember.start_bytes - clean.memory.start_bytes) <= FASTAI_SCALARS

    retry = run_try(TrySpec(entry=ENTRY, accum=2, inputs=limited), tmp_path, Reporter()).outcome  # the next rung
    assert isinstance(retry, TryDone)
    assert abs(retry.memory.start_bytes - remember.start_bytes) <= FASTAI_SCALARS  # 0 apart with fastai 2.8
    assert retry.memory.peak_bytes <= limited.cpu_memory_limit


def test_a_probe_that_runs_out_of_memory_leaves_nothing_behind() -> None:
    entry = single_entry("resnet18", 32)[0]
    meter = get_meter("cpu", emulate_cap=True)
    with StorageTracker() as outer:  # from before the learner exists: its weights count, kept by design
        fitted = meter.measure(entry, 32)
        gc.collect()  # what a collection finds is garbage, not a leak; a leak stays reachable
        after_a_fit = outer.live_bytes
        with pytest.raises(DoesNotFit):  # runs out in the backward pass (measured: fastai's loss_grad then
            meter.measure(entry, 32, cap_bytes=int(0.99 * fitted.peak_bytes))  # held 14 MB of activations)
        gc.collect()
        after_a_miss = outer.live_bytes
        again = meter.measure(entry, 32)
    meter.close()
    assert abs(after_a_miss - after_a_fit) < FASTAI_SCALARS
    assert again.peak_bytes == fitted.peak_bytes


def autocast_depth() -> int:
    """How many autocast regions this thread is in (torch's counter is only readable by changing it)."""
    depth = torch.autocast_increment_nesting() - 1
    torch.autocast_decrement_nesting()
    return depth


def test_release_memory_leaves_an_autocast_region_an_error_left_open() -> None:
    with StorageTracker() as tracker:
        layer = torch.nn.Linear(256, 256)  # made inside the tracker: its weights count
        try:  # as fastai's MixedPrecision: entered before the batch, left after the loss, which never came
            torch.autocast("cpu", dtype=torch.bfloat16).__enter__()
            layer(torch.randn(2, 256))
            raise torch.OutOfMemoryError("out of memory in the forward pass")
        except torch.OutOfMemoryError:
            pass
        on = torch.is_autocast_enabled("cpu")
        del layer
        gc.collect()
        kept = tracker.live_bytes
        release_memory("cpu")
        left = tracker.live_bytes
    # The model is gone, yet autocast's cache holds its bfloat16 copy and, through the copy's autograd
    # graph, its float32 weights.
    assert (kept, on) == (257 * 256 * (2 + 4), True)
    assert (left, torch.is_autocast_enabled("cpu"), autocast_depth()) == (0, False, 0)


class RunOutInTheForwardPass(Callback):
    """Runs out of memory on the first op after fastai's MixedPrecision has entered autocast."""

    order = MixedPrecision.order + 1

    def before_batch(self) -> None:
        self.tracker = StorageTracker(limit_bytes=0)
        self.tracker.__enter__()


@pytest.mark.filterwarnings("ignore:.*CUDA is not available")
def test_fastai_leaves_autocast_entered_after_running_out_in_the_forward_pass() -> None:
    dls = synthetic_dataloaders(ItemTransform(resize=40), (32, 32), 4, device="cpu", n_batches=1, n_classes=3)
    learn = build_learner(dls, "test_resnet", effective_batch_size=4, pretrained=False, fp16=True)
    fail = RunOutInTheForwardPass()
    try:
        with pytest.raises(torch.OutOfMemoryError), learn.no_bar(), learn.no_logging():
            learn.fit(1, cbs=[fail])
    finally:
        fail.tracker.__exit__(None, None, None)
    left_open = autocast_depth()
    release_memory("cpu")
    assert (left_open, autocast_depth()) == (1, 0)


def test_the_gpu_check_says_in_one_line_that_cuda_is_missing() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the check would run")
    result = subprocess.run([sys.executable, "-m", "benchmarks.gpu.oom_hygiene"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and "CUDA is missing" in result.stdout
