"""Data loading time: how long the run's DataLoader takes to decode and resize the data folder's images.

A DataLoader worker runs, for each batch, what the recipe's item pipeline runs on every image
(``get_x``, fastai's ``PILImage.create`` decoding the file, the entry's ``Resize``, ``ToTensor``) and
then collates them into one batch; the batch transforms run afterwards on the training device. So a
sample of the folder's images goes through the very DataLoader the run builds
(``planner.base.recipe.make_dataloaders``), batch by batch in this thread (``do_item``, ``do_batch``:
what fastai's loader calls in a worker), and its CPU seconds are counted: CPU time, not wall time, so
that other processes on the planning machine do not inflate it. Workers build batches side by side,
each on its own core: an epoch's loading time is its images × the seconds per image / the workers.
Not counted: starting the workers (once per pass over the data) and handing batches to the training
process, small against an epoch of thousands of images.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from planner.base.plan import ItemTransform, LoaderTime, Plan, PlanEntry
from planner.probe.epochtime import TTA_PASSES, DataSizes, bounded_time

SAMPLE_IMAGES = 32
SAMPLE_BATCH = 8


def sample_files(files: Sequence[Path], count: int = SAMPLE_IMAGES) -> list[Path]:
    """``count`` files spread evenly over ``files`` (every class of a sorted folder listing), or all."""
    step = max(1, len(files) // count)
    return list(files[::step][:count])


def seconds_per_image(files: Sequence[Path], item: ItemTransform) -> float:
    """CPU seconds this thread takes per image through the run's DataLoader (decode, ``Resize``,
    ``ToTensor``, collation into batches of :data:`SAMPLE_BATCH`): the median over the batches of
    ``files``, after one untimed batch (imports and first-call costs); the median, because a busy
    neighbour on a shared machine slows some batches (caches, memory bandwidth) even in CPU time.

    Raises:
        ValueError: no files.
    """
    from planner.base.recipe import make_dataloaders

    if not files:
        raise ValueError("seconds_per_image needs at least one image")
    paths = [str(path) for path in files]
    loader = make_dataloaders(paths, get_x=lambda path: Path(path), get_y=lambda path: Path(path).parent.name,
                              is_valid=lambda _: False, item=item, size=(8, 8), micro_batch=SAMPLE_BATCH,
                              device="cpu", num_workers=0).train
    batches = [range(start, min(start + SAMPLE_BATCH, len(paths))) for start in range(0, len(paths), SAMPLE_BATCH)]
    loader.do_batch([loader.do_item(index) for index in batches[0]])
    per_image = []
    for batch in batches:
        started = time.thread_time()
        loader.do_batch([loader.do_item(index) for index in batch])
        per_image.append((time.thread_time() - started) / len(batch))
    return statistics.median(per_image)


def loader_time(per_image: float, images_timed: int, workers: int, micro_batch: int, sizes: DataSizes,
                tta_passes: int = TTA_PASSES) -> LoaderTime:
    """An entry's loading seconds from one worker's seconds per image, for ``workers`` workers (0: the
    training process decodes alone, as one worker would).

    fastai drops the last partial training batch, so an epoch loads whole micro-batches of training
    images, then every held-out image; TTA loads the held-out and test images once per pass.
    """
    per_second = max(workers, 1) / per_image
    epoch_images = sizes.n_train // micro_batch * micro_batch + sizes.n_valid
    tta_images = tta_passes * (sizes.n_valid + sizes.n_test)
    return LoaderTime(workers=workers, seconds_per_image=per_image, images_timed=images_timed,
                      epoch_seconds=round(epoch_images / per_second, 3),
                      tta_seconds=round(tta_images / per_second, 3))


def with_loader_times(plan: Plan, files: Sequence[Path], sizes: DataSizes, workers: int) -> Plan:
    """The plan with every entry's loading time (one measurement per item transform) joined to its
    predicted and measured times (``planner.probe.epochtime.bounded_time``)."""
    sample = sample_files(files)
    per_image: dict[ItemTransform, float] = {}
    entries: list[PlanEntry] = []
    for entry in plan.entries:
        if entry.item not in per_image:
            per_image[entry.item] = seconds_per_image(sample, entry.item)
        loading = loader_time(per_image[entry.item], len(sample), workers, entry.micro_batch, sizes)
        update = {"loader_time": loading}
        for field in ("predicted_time", "measured_time"):
            time_now = getattr(entry, field)
            if time_now is not None:
                update[field] = bounded_time(time_now, loading)
        entries.append(entry.model_copy(update=update))
    return plan.model_copy(update={"entries": entries})
