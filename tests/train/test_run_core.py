"""`planner run`'s core in-process: OOM fallback, memory released between entries, the split, refusals,
progress lines. Training is real (fastai on the CPU, timm's tiny ``test_resnet``)."""

from __future__ import annotations

import io
import json
import shutil
import weakref
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastai.callback.core import Callback
from rich.console import Console
from run_data import make_image_folder, plan_entry, write_plan

from planner.base.errors import UserError
from planner.base.plan import EntryTime, LoaderTime
from planner.base.runfile import EpochRecord, OomMiss
from planner_trainer.backend import LocalBackend
from planner_trainer.data import scan_data
from planner_trainer.options import RunOptions
from planner_trainer.progress import SUMMARY_COLUMNS, LineReporter, RichReporter, summary_rows
from planner_trainer.run import RunResult, accumulation_ladder, run_plan
from planner_trainer.split import draw_split, shared_split

CPU = RunOptions(epochs=1, pretrained=False, device="cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class RememberModels(Callback):
    """Keeps a weak reference to each model it sees, and which earlier ones were alive when it appeared."""

    def __init__(self) -> None:
        self.models: list[weakref.ref] = []
        self.alive_at_start: list[list[bool]] = []

    def before_fit(self) -> None:
        if any(ref() is self.learn.model for ref in self.models):
            return  # fine_tune's second fit: same model
        self.alive_at_start.append([ref() is not None for ref in self.models])
        self.models.append(weakref.ref(self.learn.model))


OOM_ENTRY = {"arch": "test_resnet", "size": 64, "resize": 72}  # name test_resnet-crop72-64
PREDICTED = EntryTime(source="estimate", gpu="T4", train_seconds_per_epoch=1.0, valid_seconds_per_epoch=0.5,
                      epoch_seconds=1.5, frozen_epoch_seconds=0.7, epochs=1, tta_seconds=0.2, total_seconds=2.4,
                      time_bound="device", bound_seconds={"device": 2.4})
LOADING = LoaderTime(workers=0, seconds_per_image=0.001, images_timed=4, train_seconds=0.02, valid_seconds=0.01,
                     epoch_seconds=0.03, tta_seconds=0.01)


@dataclass
class TwoEntries:
    """A run of two entries in one process, the callback that watched it, and its inputs."""

    plan: Path
    run_dir: Path
    result: RunResult
    remember: RememberModels


@pytest.fixture(scope="module")
def two_entries(image_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> TwoEntries:
    root = tmp_path_factory.mktemp("two")
    timed = plan_entry("test_resnet", size=32).model_copy(update={"predicted_time": PREDICTED,
                                                                   "loader_time": LOADING})
    plan = write_plan(root / "plan.json", [plan_entry(**OOM_ENTRY, micro_batch=2, accum=4), timed])
    remember = RememberModels()
    result = run_plan(plan, image_folder, root / "run", CPU, backend=LocalBackend(cbs=[remember]))
    return TwoEntries(plan, root / "run", result, remember)


def test_entries_release_their_memory_before_the_next_starts(two_entries: TwoEntries) -> None:
    remember = two_entries.remember
    assert remember.alive_at_start == [[], [False]]  # the first model was gone when the second started
    assert all(ref() is None for ref in remember.models)
    first, second = (two_entries.result.run.entries[name].memory for name in two_entries.result.names)
    assert first is not None and second is not None
    assert second.start_bytes <= first.start_bytes + 2**20  # the same baseline, not the first model's bytes


def test_run_json_records_measured_epoch_seconds_beside_the_prediction(two_entries: TwoEntries) -> None:
    untimed, timed = (two_entries.result.run.entries[name] for name in two_entries.result.names)
    for record in (untimed, timed):
        unfrozen = [epoch.seconds for epoch in record.epochs if epoch.phase == "unfrozen"]
        assert record.time is not None and record.time.measured_device == "cpu"
        assert record.time.measured_epoch_seconds == pytest.approx(sum(unfrozen) / len(unfrozen), abs=0.01)
        assert record.time.measured_frozen_epoch_seconds == pytest.approx(record.epochs[0].seconds, abs=0.01)
    assert untimed.time.predicted_epoch_seconds is None
    assert (timed.time.predicted_gpu, timed.time.predicted_epoch_seconds) == ("T4", 1.5)
    assert (timed.time.predicted_time_bound, timed.time.predicted_loader_epoch_seconds) == ("device", 0.03)
    row = summary_rows(two_entries.result.run, two_entries.result.names)[1]
    assert row[SUMMARY_COLUMNS.index("time predicted")] == "1.5 s (T4)"
    assert row[SUMMARY_COLUMNS.index("time measured")].endswith("s (cpu)")


def test_the_peak_ratio_is_shown_only_for_peaks_in_the_same_units(two_entries: TwoEntries) -> None:
    """A cpu plan trained on the CPU compares fp32 tensor bytes with fp32 tensor bytes; a GPU plan (estimate
    meter) trained on the CPU would set card bytes in fp16 against them, which says nothing."""
    run, name = two_entries.result.run, two_entries.result.names[1]
    record = run.entries[name]
    ratio = SUMMARY_COLUMNS.index("ratio")
    assert summary_rows(run, [name])[0][ratio] == f"{record.memory.peak_bytes / record.predicted_peak_bytes:.2f}"
    estimated = run.model_copy(update={"entries": {name: record.model_copy(update={"predicted_on": "estimate"})}})
    assert summary_rows(estimated, [name])[0][ratio] == "-"


def test_run_json_records_each_epochs_wait_for_batches(two_entries: TwoEntries) -> None:
    """Without workers (the CPU run) the loop decodes every image itself while it waits: each epoch's
    wait is positive and shorter than the epoch; run.json parses strictly (no NaN) and says the same."""
    text = (two_entries.run_dir / "run.json").read_text()
    on_disk = json.loads(text, parse_constant=lambda name: pytest.fail(f"run.json holds {name}"))
    for name in two_entries.result.names:
        record = two_entries.result.run.entries[name]
        waits = [epoch.loader_wait_seconds for epoch in record.epochs]
        assert all(0 < wait < epoch.seconds for wait, epoch in zip(waits, record.epochs, strict=True)), waits
        assert [epoch["loader_wait_seconds"] for epoch in on_disk["entries"][name]["epochs"]] == waits
        unfrozen = [epoch.loader_wait_seconds for epoch in record.epochs if epoch.phase == "unfrozen"]
        assert record.time.measured_loader_wait_seconds == pytest.approx(sum(unfrozen) / len(unfrozen), abs=1e-3)


def test_a_rerun_with_other_settings_or_data_is_refused(two_entries: TwoEntries, tmp_path: Path) -> None:
    plan, run_dir, data = two_entries.plan, two_entries.run_dir, two_entries.result.run.data
    with pytest.raises(UserError, match="--epochs 1"):
        run_plan(plan, data, run_dir, RunOptions(epochs=2, pretrained=False, device="cpu"))
    shutil.copytree(data, tmp_path / "data")
    with pytest.raises(UserError, match="was started on the data folder"):
        run_plan(plan, tmp_path / "data", run_dir, CPU)


def test_out_of_memory_retries_with_more_accumulation(
    two_entries: TwoEntries, image_folder: Path, tmp_path: Path
) -> None:
    peak_at_2 = two_entries.result.run.entries["test_resnet-crop72-64"].memory.peak_bytes  # micro-batch 2
    limit = int(peak_at_2 * 1.05)  # micro-batch 2 fits; 8 and 4 (about +20 % each) do not

    big = write_plan(tmp_path / "big.json", [plan_entry(**OOM_ENTRY, micro_batch=8, accum=1)])
    options = RunOptions(epochs=1, pretrained=False, device="cpu", cpu_memory_limit=limit)
    record = run_plan(big, image_folder, tmp_path / "run", options).run.entries["test_resnet-crop72-64"]

    assert record.status == "finished"
    assert (record.planned_accum, record.planned_micro_batch) == (1, 8)
    assert [(miss.accum, miss.micro_batch) for miss in record.oom_misses] == [(1, 8), (2, 4)]
    assert "exceeds the limit" in record.oom_misses[0].message
    assert (record.accum, record.micro_batch) == (4, 2)
    assert record.memory is not None and record.memory.peak_bytes <= limit == record.memory.limit_bytes
    assert (tmp_path / "run" / "preds" / "test_resnet-crop72-64.npz").exists()


def test_accumulation_ladder_keeps_the_effective_batch() -> None:
    assert accumulation_ladder(64, 1) == [1, 2, 4, 8, 16, 32, 64]
    assert accumulation_ladder(64, 8) == [8, 16, 32, 64]
    assert accumulation_ladder(24, 2) == [2, 3, 4, 6, 8, 12, 24]


def test_split_is_stratified_seeded_and_kept(image_folder: Path, tmp_path: Path) -> None:
    layout = scan_data(image_folder)
    split = draw_split(layout.train, 0.25, seed=1)
    assert [name.split("/")[1] for name in split.valid] == ["c0"] * 3 + ["c1"] * 3 + ["c2"] * 3
    assert split == draw_split(layout.train, 0.25, seed=1) != draw_split(layout.train, 0.25, seed=2)

    assert shared_split(tmp_path, layout, 0.25, 1) == split
    assert shared_split(tmp_path, layout, 0.25, 1) == split  # read back, not drawn again
    with pytest.raises(UserError, match=r"--valid-pct 0\.25 --seed 1"):
        shared_split(tmp_path, layout, 0.25, 2)


def test_loose_image_outside_class_folders_is_refused(image_folder: Path, tmp_path: Path) -> None:
    (tmp_path / "train_images" / "a").mkdir(parents=True)
    (tmp_path / "train_images" / "b").mkdir()
    for name in ("a/x.png", "b/y.png", "z.png"):
        shutil.copy(image_folder / "test_images" / "img_0.png", tmp_path / "train_images" / name)
    with pytest.raises(UserError, match=r"train_images/z.png is not inside a class folder"):
        scan_data(tmp_path)


def test_progress_in_a_ci_log_is_one_plain_line_per_event(tmp_path: Path) -> None:
    out = io.StringIO()
    reporter = RichReporter(Console(file=out, force_terminal=False, width=200))
    reporter.run_started(tmp_path, ["a", "b"])
    reporter.entry_skipped("a", "finished earlier")
    reporter.entry_started("b", 1, 8, 2)
    reporter.epoch_done("b", EpochRecord(epoch=0, phase="frozen", train_loss=1.0, valid_loss=None,
                                         error_rate=0.5, seconds=1.0), 2)
    reporter.entry_oom("b", OomMiss(accum=1, micro_batch=8, message="out of memory"), 2)
    reporter.run_finished()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert lines == [
        f"run {tmp_path}: 2 entries",
        "skip a: finished earlier",
        "train b: accum 1 × micro-batch 8, 2 epochs",
        "b epoch 1/2 (frozen): train_loss 1.0000 valid_loss - error_rate 0.5000 1.0s",
        "out of memory: b at accum 1 × micro-batch 8; retrying with accum 2",
    ]
    written: list[str] = []
    LineReporter(written.append).entry_skipped("a", "finished earlier")
    assert written == ["skip a: finished earlier"]


def test_an_entry_changed_in_the_plan_is_kept_refused_or_retrained_saying_why(image_folder: Path,
                                                                              tmp_path: Path) -> None:
    run_plan(write_plan(tmp_path / "plan.json", [plan_entry("test_resnet", size=32)]), image_folder, tmp_path / "run",
             CPU)
    replanned = plan_entry("test_resnet", size=32, micro_batch=8, accum=1).model_copy(
        update={"grad_checkpointing": True})
    written: list[str] = []
    run_plan(write_plan(tmp_path / "replanned.json", [replanned]), image_folder, tmp_path / "run", CPU,
             reporter=LineReporter(written.append))
    assert ("skip test_resnet-crop40-32: finished earlier (preds/test_resnet-crop40-32.npz); planned at accum 2 × "
            "micro-batch 4, the plan now says 1 × 8, the plan now uses checkpointing: kept, only how it fits in "
            "memory changed (--retrain trains it as planned now)") in written
    changed = plan_entry("test_resnet", size=40).model_copy(update={"name": "test_resnet-crop40-32"})
    plan = write_plan(tmp_path / "changed.json", [changed])
    with pytest.raises(UserError, match=r"now says test_resnet crop40 \(40, 40\): use another --out folder, or "
                                        "--retrain to train every entry of the plan again in this one"):
        run_plan(plan, image_folder, tmp_path / "run", CPU)
    result = run_plan(plan, image_folder, tmp_path / "run", RunOptions(epochs=1, pretrained=False, device="cpu",
                                                                      retrain=True))
    record = result.run.entries["test_resnet-crop40-32"]
    assert (record.status, tuple(record.size)) == ("finished", (40, 40))


def test_classes_of_one_image_are_refused_before_a_run_folder_exists(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", classes=3, per_class=1, test=1)
    with pytest.raises(UserError, match=r"^no held-out split can be drawn: every class in train_images has a single "
                                        r"image \(c0, c1, c2\), .*add a second image to the classes$"):
        run_plan(write_plan(tmp_path / "plan.json", [plan_entry("test_resnet")]), data, tmp_path / "run", CPU)
    assert not (tmp_path / "run").exists()


def test_a_folder_where_nothing_finished_takes_other_settings(image_folder: Path, tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "plan.json", [plan_entry("test_resnet", size=32)])
    diverged = run_plan(plan, image_folder, tmp_path / "run", RunOptions(epochs=1, lr=1e30, pretrained=False,
                                                                         device="cpu", seed=1))
    assert diverged.failed == ["test_resnet-crop40-32"]
    written: list[str] = []
    result = run_plan(plan, image_folder, tmp_path / "run", CPU, reporter=LineReporter(written.append))
    assert f"{tmp_path / 'run'} was started with other settings, but no entry finished there: it starts afresh with " \
           "this run's (--epochs 1 --lr 0.01 --no-pretrained --valid-pct 0.2 --seed 42, effective batch 8)" in written
    assert result.run.entries["test_resnet-crop40-32"].status == "finished"
    assert (result.run.settings.lr, shared_split(tmp_path / "run", scan_data(image_folder), 0.2, 42).seed) == (0.01, 42)
    with pytest.raises(UserError, match=r"was started with --epochs 1 --lr 0\.01"):  # now something was learned
        run_plan(plan, image_folder, tmp_path / "run", RunOptions(epochs=1, lr=0.1, pretrained=False, device="cpu"))
