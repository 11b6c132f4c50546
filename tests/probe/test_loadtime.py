"""Data loading time: the run's item pipeline timed on real JPEG files, scaled to the workers, and the
slower of device and loader bounding each epoch (real fastai DataLoaders, a real estimate probe)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from planner.base.entries import single_entry
from planner.base.plan import EntryTime, ItemTransform
from planner.probe.command import make_plan
from planner.probe.epochtime import DataSizes, with_loading
from planner.probe.loadtime import loader_time, sample_files, seconds_per_image, worker_seconds
from planner.probe.options import ProbeOptions

SIZES = DataSizes(n_train=80, n_valid=20, n_test=10, source="test")
CROP = ItemTransform(resize=(64, 48), method="crop")


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train_images/<a|b>/ with 150 noisy 64 × 48 JPEGs each, test_images/ with 2."""
    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    for index in range(302):
        folder = root / "test_images" if index >= 300 else root / "train_images" / "ab"[index % 2]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{index}.jpg", quality=90)
    return root


def train_files(folder: Path) -> list[Path]:
    return sorted((folder / "train_images").rglob("*.jpg"))


def test_the_run_loader_on_real_jpegs_takes_positive_time_here_and_in_a_worker(jpeg_folder: Path) -> None:
    files = sample_files(train_files(jpeg_folder), count=16)
    assert len(files) == 16 and {path.parent.name for path in files} == {"a", "b"}  # spread over the classes
    here = seconds_per_image(files, CROP)
    per_image, start = worker_seconds(files, CROP, here, micro_batch=8)
    assert 0 < here < 1 and 0 < start < 10
    assert here <= per_image < 1  # a worker does what this thread does, and hands its batches over


def test_loading_time_scales_with_the_workers() -> None:
    one = loader_time(0.01, 0.0, 32, workers=1, micro_batch=8, sizes=SIZES)
    four = loader_time(0.01, 0.0, 32, workers=4, micro_batch=8, sizes=SIZES)
    alone = loader_time(0.01, 0.0, 32, workers=0, micro_batch=8, sizes=SIZES)
    assert one.epoch_seconds == pytest.approx((80 + 20) * 0.01)  # 80 training images: ten whole batches of 8
    assert four.epoch_seconds == pytest.approx(one.epoch_seconds / 4, abs=0.01)
    assert alone.epoch_seconds == one.epoch_seconds  # the training process decodes as one worker would
    assert one.tta_seconds == pytest.approx(5 * (20 + 10) * 0.01)  # five TTA passes over held-out and test
    assert loader_time(0.01, 0.0, 32, workers=1, micro_batch=32, sizes=SIZES).epoch_seconds == pytest.approx(
        (64 + 20) * 0.01)  # fastai drops the last partial batch


def test_workers_start_again_at_every_pass_over_the_data() -> None:
    started = loader_time(0.01, 0.5, 32, workers=4, micro_batch=8, sizes=SIZES)
    assert started.epoch_seconds == pytest.approx(2 * 0.5 + (80 + 20) * 0.01 / 4)  # training and held-out passes
    assert started.tta_seconds == pytest.approx(5 * 2 * 0.5 + 5 * (20 + 10) * 0.01 / 4)  # held-out and test, 5 each
    alone = loader_time(0.01, 0.5, 32, workers=0, micro_batch=8, sizes=SIZES)
    assert alone.start_seconds == 0 and alone.epoch_seconds == pytest.approx((80 + 20) * 0.01)  # nothing to start


def test_the_loader_joins_the_bounds_and_each_pass_takes_the_slowest() -> None:
    device = EntryTime(source="estimate", gpu="T4", train_seconds_per_epoch=0.8, valid_seconds_per_epoch=0.2,
                       epoch_seconds=1.0, frozen_epoch_seconds=0.5, epochs=2, tta_seconds=0.5, total_seconds=3.0,
                       time_bound="device", bound_seconds={"device": 3.0})
    slow = with_loading(device, loader_time(0.012, 0.0, 32, workers=1, micro_batch=8, sizes=SIZES))
    # loader passes: training 80 × 0.012 = 0.96, held-out 0.24, TTA 5 × 30 × 0.012 = 1.8
    assert (slow.train_seconds_per_epoch, slow.valid_seconds_per_epoch, slow.epoch_seconds) == (0.96, 0.24, 1.2)
    assert slow.frozen_epoch_seconds == 1.2 and slow.tta_seconds == 1.8
    assert slow.total_seconds == pytest.approx(1.2 + 2 * 1.2 + 1.8)
    assert slow.time_bound == "loader" and slow.bound_seconds == {"device": 3.0, "loader": 5.4}
    fast = with_loading(device, loader_time(0.01, 0.0, 32, workers=4, micro_batch=8, sizes=SIZES))
    assert (fast.time_bound, fast.epoch_seconds, fast.total_seconds) == ("device", 1.0, 3.0)
    in_process = with_loading(device, loader_time(0.01, 0.0, 32, workers=0, micro_batch=8, sizes=SIZES))
    assert (in_process.time_bound, in_process.epoch_seconds) == ("device+loader", 2.0)
    measured = device.model_copy(update={"source": "measured", "time_bound": None, "bound_seconds": {}})
    paced = with_loading(measured, loader_time(0.012, 0.0, 32, workers=1, micro_batch=8, sizes=SIZES))
    assert paced.epoch_seconds == 1.2 and paced.time_bound is None  # a measurement keeps no bounds


def test_a_probe_with_a_data_folder_bounds_its_time_by_the_loader_when_it_is_slower(
        jpeg_folder: Path, tmp_path: Path) -> None:
    """resnet18 at 32 px on a T4 computes far faster than one worker decodes and resizes to 1280 × 960;
    with ten thousand workers only their start is left, shorter than the card's training pass."""
    entries = single_entry("resnet18", 32, item=ItemTransform(resize=(1280, 960), method="squish"))
    plans = {workers: make_plan(ProbeOptions(gpus=("T4",), data=jpeg_folder, device="estimate", effective_batch_size=32,
                                             output=tmp_path / f"plan{workers}.json", jobs=1, loader_workers=workers),
                                entries=entries)
             for workers in (1, 10_000)}
    slow, fast = (plans[workers].entries[0] for workers in (1, 10_000))
    assert slow.loader_time.workers == 1 and slow.loader_time.images_timed == 32
    assert slow.loader_time.seconds_per_image > 0
    assert slow.predicted_time.time_bound == "loader"
    assert slow.predicted_time.epoch_seconds == pytest.approx(slow.loader_time.epoch_seconds, abs=0.01)
    # ten thousand workers load an epoch's training images in a worker's start: the card and host set that pass
    assert fast.loader_time.train_seconds < fast.predicted_time.train_seconds_per_epoch
    assert fast.loader_time.train_seconds == pytest.approx(fast.loader_time.start_seconds, abs=0.002)
    assert "DataLoader workers: 1;" in plans[1].timing.data_loading
    assert slow.predicted_time.bound_seconds["loader"] > slow.predicted_time.bound_seconds["device"]
