"""`planner run --backend ray` on a real local Ray instance with two logical GPUs.

Ray counts logical GPUs without hardware (it sets ``CUDA_VISIBLE_DEVICES`` per task all the same);
the trainings are the run tests' tiny real ones on the CPU (1 epoch, 32–64 px, random weights). Every
GPU task runs in a fresh worker process, which imports torch and fastai first: that, not the training,
is most of this module's time.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from planner_process import REPO
from run_data import plan_entry, small_plan, write_plan

from planner.base.errors import UserError

ray = pytest.importorskip("ray")

from planner.base.runfile import EntryRecord, OomMiss  # noqa: E402
from planner_trainer.options import RayOptions, RunOptions  # noqa: E402
from planner_trainer.progress import Reporter  # noqa: E402
from planner_trainer.ray_backend import CRASH_MARKER, RayBackend  # noqa: E402
from planner_trainer.run import RunResult, run_plan  # noqa: E402

FIRST, SECOND = "resnet18-crop40-32", "convnext_atto-crop40-32"
CPU = RunOptions(epochs=1, pretrained=False, device="cpu")
GIB = 2**30


@pytest.fixture(scope="session")
def ray_address() -> str:
    """One local Ray instance for the session: 2 CPUs, 2 logical GPUs; its workers import this checkout."""
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@dataclass
class Events(Reporter):
    """The driver's reporter events, as (event, entry name) pairs."""

    seen: list[tuple[str, str]] = field(default_factory=list)
    misses: list[tuple[OomMiss, int | None]] = field(default_factory=list)

    def entry_skipped(self, name: str, reason: str) -> None:
        self.seen.append(("skip", name))

    def entry_oom(self, name: str, miss: OomMiss, next_accum: int | None) -> None:
        self.seen.append(("oom", name))
        self.misses.append((miss, next_accum))

    def entry_done(self, record: EntryRecord) -> None:
        self.seen.append((record.status, record.name))


@dataclass
class Ran:
    plan: Path
    run_dir: Path
    result: RunResult
    events: Events


def ran(plan: Path, data: Path, run_dir: Path, options: RunOptions = CPU, **ray_options) -> Ran:
    events = Events()
    result = run_plan(plan, data, run_dir, options, events, RayBackend(RayOptions(**ray_options)))
    return Ran(plan, run_dir, result, events)


def overlap(a: EntryRecord, b: EntryRecord) -> bool:
    """Whether two entries' tries were training at the same time."""
    return a.worker.started_unix < b.worker.ended_unix and b.worker.started_unix < a.worker.ended_unix


@pytest.fixture(scope="module")
def spread(ray_address: str, image_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Ran:
    root = tmp_path_factory.mktemp("ray-spread")
    return ran(small_plan(root / "plan.json"), image_folder, root / "run")


def test_entries_spread_over_the_gpus_and_are_recorded_by_the_driver(spread: Ran) -> None:
    first, second = (spread.result.run.entries[name] for name in (FIRST, SECOND))
    assert first.status == second.status == "finished"
    assert {tuple(first.worker.gpu_ids), tuple(second.worker.gpu_ids)} == {("0",), ("1",)}
    assert overlap(first, second) and first.worker.pid != second.worker.pid
    assert first.worker.gpu_share == 1.0 and first.worker.gpu_memory_bytes is None  # logical GPUs: no CUDA
    on_disk = json.loads((spread.run_dir / "run.json").read_text())["entries"]
    for record in (first, second):
        assert (spread.run_dir / record.predictions).exists()
        assert on_disk[record.name]["status"] == "finished" and on_disk[record.name]["worker"]["gpu_ids"]
        assert (record.accum, record.micro_batch, record.device) == (2, 4, "cpu")
        assert [epoch.phase for epoch in record.epochs] == ["frozen", "unfrozen"] and record.memory.peak_bytes > 0
    assert sorted(spread.events.seen) == [("finished", SECOND), ("finished", FIRST)]
    log = (spread.run_dir / "run.log").read_text()  # the workers' lines and the driver's, in one log
    assert f"train {FIRST}: accum 2 × micro-batch 4" in log and f"{SECOND} epoch 2/2 (unfrozen)" in log
    assert f"done {FIRST}" in log and f"done {SECOND}" in log


def test_restarted_driver_skips_finished_entries(spread: Ran, image_folder: Path) -> None:
    npz = {name: (spread.run_dir / "preds" / f"{name}.npz").read_bytes() for name in (FIRST, SECOND)}
    again = ran(spread.plan, image_folder, spread.run_dir)
    assert again.events.seen == [("skip", FIRST), ("skip", SECOND)]
    assert again.result.run.entries == spread.result.run.entries
    assert npz == {name: (spread.run_dir / "preds" / f"{name}.npz").read_bytes() for name in (FIRST, SECOND)}


MEASURED = "test_resnet-crop72-64"


@pytest.fixture(scope="module")
def packed(ray_address: str, image_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Ran:
    """Two entries predicted at 0.45 GiB on the plan's 1 GiB card with a 10 % margin: half a GPU each."""
    root = tmp_path_factory.mktemp("ray-pack")
    half = int(0.45 * GIB)
    plan = write_plan(root / "plan.json", [
        plan_entry("test_resnet", size=64, resize=72, micro_batch=4, accum=2, predicted_peak_bytes=half),
        plan_entry("test_resnet", size=48, resize=56, micro_batch=4, accum=2, predicted_peak_bytes=half),
    ])
    return ran(plan, image_folder, root / "run", pack=True)


def test_pack_runs_entries_whose_shares_fit_on_one_gpu_together(packed: Ran) -> None:
    first, second = packed.result.run.entries.values()
    assert first.status == second.status == "finished"
    assert first.worker.gpu_share == second.worker.gpu_share == 0.5
    assert first.worker.gpu_ids == second.worker.gpu_ids  # one card, shared
    assert overlap(first, second)


def test_out_of_memory_is_resubmitted_with_more_accumulation(packed: Ran, image_folder: Path,
                                                             tmp_path: Path) -> None:
    limit = int(packed.result.run.entries[MEASURED].memory.peak_bytes * 1.05)  # micro-batch 4 fits, 8 does not
    plan = write_plan(tmp_path / "plan.json", [plan_entry("test_resnet", size=64, resize=72, micro_batch=8,
                                                          accum=1)])
    options = RunOptions(epochs=1, pretrained=False, device="cpu", cpu_memory_limit=limit)
    run = ran(plan, image_folder, tmp_path / "run", options)
    record = run.result.run.entries[MEASURED]

    assert record.status == "finished" and (record.planned_accum, record.planned_micro_batch) == (1, 8)
    assert [(miss.accum, miss.micro_batch) for miss in record.oom_misses] == [(1, 8)]
    assert "exceeds the limit" in record.oom_misses[0].message
    assert (record.accum, record.micro_batch) == (2, 4) and record.memory.peak_bytes <= limit
    assert run.events.seen == [("oom", MEASURED), ("finished", MEASURED)] and run.events.misses[0][1] == 2
    assert (tmp_path / "run" / "preds" / f"{MEASURED}.npz").exists()


def test_a_dead_worker_is_retried_by_ray(ray_address: str, image_folder: Path, tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "plan.json", [plan_entry("test_resnet")])
    name = "test_resnet-crop40-32"
    run = ran(plan, image_folder, tmp_path / "run", address=ray_address, max_retries=1, crash_once=(name,))
    assert (run.run_dir / CRASH_MARKER.format(name=name)).exists()  # the first try died before training
    record = run.result.run.entries[name]
    assert record.status == "finished" and record.worker.gpu_ids
    assert run.events.seen == [("finished", name)]
    assert f"train {name}: accum 2 × micro-batch 4" in (run.run_dir / "run.log").read_text()  # the task's line


def test_cuda_on_cpu_workers_is_refused_before_any_task(image_folder: Path, tmp_path: Path) -> None:
    plan = small_plan(tmp_path / "plan.json")
    with pytest.raises(UserError, match="--gpus-per-entry 0 trains on CPU workers"):
        run_plan(plan, image_folder, tmp_path / "run", RunOptions(device="cuda"),
                 backend=RayBackend(RayOptions(gpus_per_entry=0)))
