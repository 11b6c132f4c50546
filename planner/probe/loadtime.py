"""Data loading time: how long the run's DataLoader takes to decode and resize the data folder's images.

A DataLoader worker runs, for each batch, what the recipe's item pipeline runs on every image
(``get_x``, fastai's ``PILImage.create`` decoding the file, the entry's ``Resize``, ``ToTensor``),
collates them into one batch in shared memory and hands it to the training process; the batch
transforms run afterwards on the training device. So a sample of the folder's images goes through
the very DataLoaders the run builds (``planner.base.recipe.make_dataloaders``) and their CPU seconds
are counted (CPU time, not wall time, so that other processes on the planning machine do not
inflate it):

- without workers, in this thread, batch by batch (``do_item``, ``do_batch``: what the training
  process runs between its steps);
- with workers, in one real worker process (its CPU seconds once it has exited): a pass over one
  image gives the worker's start, a pass over enough images (the sample, repeated) the seconds per
  image, which include the shared-memory hand-over (measured: a quarter more than in-process on
  640 × 480 JPEGs).

Workers build batches side by side, each on its own core, and start again for every pass over the
data (training, held-out, each TTA pass): a pass takes the start plus its images × the seconds per
image / the workers.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from planner.base.plan import ItemTransform, LoaderTime, Plan, PlanEntry
from planner.probe.epochtime import TTA_PASSES, DataSizes, with_loading

SAMPLE_IMAGES = 32
SAMPLE_BATCH = 8
WORKER_PASS_SECONDS = 0.3
MAX_WORKER_IMAGES = 4096


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
    if not files:
        raise ValueError("seconds_per_image needs at least one image")
    loader = _sample_loader(files, item, workers=0)
    batches = [range(start, min(start + SAMPLE_BATCH, len(files))) for start in range(0, len(files), SAMPLE_BATCH)]
    loader.do_batch([loader.do_item(index) for index in batches[0]])
    per_image = []
    for batch in batches:
        started = time.thread_time()
        loader.do_batch([loader.do_item(index) for index in batch])
        per_image.append((time.thread_time() - started) / len(batch))
    return statistics.median(per_image)


def measure_loading(files: Sequence[Path], item: ItemTransform, workers: int, micro_batch: int) -> tuple[float, float]:
    """``(seconds per image, start per pass)`` of the run's loading with ``workers`` workers: in this
    thread without workers (nothing to start), in a worker process with them, handing over batches of
    ``micro_batch`` (each hand-over has a cost of its own)."""
    here = seconds_per_image(files, item)
    if not workers:
        return here, 0.0
    return worker_seconds(files, item, here, micro_batch)


def worker_seconds(files: Sequence[Path], item: ItemTransform, per_image_here: float,
                   micro_batch: int) -> tuple[float, float]:
    """A DataLoader worker process's CPU seconds to start and per image, through the run's DataLoader.

    Args:
        files: the sample, repeated as needed so that the per-image pass takes about
            :data:`WORKER_PASS_SECONDS` (from ``per_image_here``, :func:`seconds_per_image`).
        item: the item transform.
        per_image_here: the in-process seconds per image.
        micro_batch: the batches the worker builds and hands over.

    Returns:
        ``(per_image, start)``, as :func:`measure_loading`: the seconds per image of the longer pass
        after its start, never below ``per_image_here`` (a worker does all that this thread does, and
        hands the batch over); a pass over one image, less that image.
    """
    count = int(min(MAX_WORKER_IMAGES, max(len(files), WORKER_PASS_SECONDS / per_image_here)))
    repeated = [files[index % len(files)] for index in range(count)]
    one = _worker_pass(files[:1], item, micro_batch)
    many = _worker_pass(repeated, item, micro_batch)
    per_image = max((many - one) / (count - 1), per_image_here) if count > 1 else per_image_here
    return per_image, max(one - per_image, 0.0)


def _worker_pass(files: Sequence[Path], item: ItemTransform, micro_batch: int) -> float:
    """CPU seconds of one worker process iterating ``files`` through the run's DataLoader (collected
    once the worker has exited and been joined)."""
    import resource

    loader = _sample_loader(files, item, workers=1, micro_batch=micro_batch)

    def children() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    before = children()
    for _ in loader:
        pass
    return children() - before


def _sample_loader(files: Sequence[Path], item: ItemTransform, workers: int, micro_batch: int = SAMPLE_BATCH) -> Any:
    """The run's training DataLoader over ``files`` (labels from their folders), batches of
    ``micro_batch``, the last partial one kept, without batch transforms (the device's work)."""
    from planner.base.recipe import make_dataloaders

    paths = [str(path) for path in files]
    loader = make_dataloaders(paths, get_x=lambda path: Path(path), get_y=lambda path: Path(path).parent.name,
                              is_valid=lambda _: False, item=item, size=(8, 8), micro_batch=micro_batch,
                              device="cpu", num_workers=workers).train.new(shuffle=False, drop_last=False)
    loader.after_batch = lambda batch: batch
    return loader


def loader_time(per_image: float, start: float, images_timed: int, workers: int, micro_batch: int,
                sizes: DataSizes, tta_passes: int = TTA_PASSES) -> LoaderTime:
    """An entry's loading seconds for ``workers`` workers (0: the training process decodes alone, as
    one worker would, and starts nothing), from the seconds per image and a worker's start per pass.

    fastai drops the last partial training batch, so an epoch loads whole micro-batches of training
    images, then every held-out image (two passes); TTA loads the held-out and the test images once per
    pass (two passes each, one without test images).
    """
    per_second = max(workers, 1) / per_image
    start = start if workers else 0.0
    train = start + sizes.n_train // micro_batch * micro_batch / per_second
    valid = start + sizes.n_valid / per_second
    tta_images = tta_passes * (sizes.n_valid + sizes.n_test)
    tta_starts = tta_passes * (2 if sizes.n_test else 1)
    return LoaderTime(workers=workers, seconds_per_image=per_image, start_seconds=start, images_timed=images_timed,
                      train_seconds=round(train, 3), valid_seconds=round(valid, 3),
                      epoch_seconds=round(train + valid, 3),
                      tta_seconds=round(tta_starts * start + tta_images / per_second, 3))


def with_loader_times(plan: Plan, files: Sequence[Path], sizes: DataSizes, workers: int,
                      host_speed: float = 1.0) -> Plan:
    """The plan with every entry's loading time (one measurement per item transform and micro-batch,
    on a host ``host_speed`` times as fast per core as this one: ``--host-speed``) joined to its
    predicted and measured times (``planner.probe.epochtime.with_loading``)."""
    sample = sample_files(files)
    measured: dict[tuple[ItemTransform, int], tuple[float, float]] = {}
    entries: list[PlanEntry] = []
    for entry in plan.entries:
        key = entry.item, entry.micro_batch
        if key not in measured:
            measured[key] = measure_loading(sample, entry.item, workers, entry.micro_batch)
        per_image, start = (seconds / host_speed for seconds in measured[key])
        loading = loader_time(per_image, start, len(sample), workers, entry.micro_batch, sizes)
        update = {"loader_time": loading}
        for field in ("predicted_time", "measured_time"):
            time_now = getattr(entry, field)
            if time_now is not None:
                update[field] = with_loading(time_now, loading)
        entries.append(entry.model_copy(update=update))
    return plan.model_copy(update={"entries": entries})
