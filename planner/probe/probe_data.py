"""Where the probe's batches come from: generated images by default, or a data folder's images.

Peak memory does not depend on pixel values, only on shapes, so generated images at the item
transform's size give the same peaks; ``--data`` probes with the user's own files instead: a sample of
them spread over every class (the one the loading time is measured on), decoded first so that an
unreadable one is refused in one line before any probing (`planner run` checks every image).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.base.errors import UserError
from planner.base.images import class_folders, images_in
from planner.base.paths import resolved_folder
from planner.base.pixels import check_images
from planner.base.plan import ItemTransform, Size
from planner.probe.loadtime import sample_files

SYNTHETIC_CLASSES = 10


@dataclass(frozen=True)
class ProbeData:
    """The images and labels probe batches are drawn from; no files means generated images."""

    files: tuple[Path, ...] = ()
    labels: tuple[str, ...] = tuple(f"class{i}" for i in range(SYNTHETIC_CLASSES))

    @property
    def synthetic(self) -> bool:
        return not self.files

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    def dataloaders(self, item: ItemTransform, size: Size, micro_batch: int, device: str,
                    n_batches: int, n_valid: int | None = None) -> Any:
        """fastai DataLoaders with ``n_batches`` training batches of ``micro_batch`` images and
        ``n_valid`` held-out images (default: one batch)."""
        from planner.base.recipe import synthetic_dataloaders

        if self.synthetic:
            return synthetic_dataloaders(item, size, micro_batch, device=device, n_batches=n_batches,
                                         n_classes=self.n_classes, n_valid=n_valid)
        return self._folder_dataloaders(item, size, micro_batch, device, n_batches, n_valid or micro_batch)

    def _folder_dataloaders(self, item: ItemTransform, size: Size, micro_batch: int, device: str,
                            n_batches: int, n_valid: int) -> Any:
        from planner.base.recipe import make_dataloaders

        n_train = micro_batch * n_batches
        # Repeat the checked sample as often as the probe needs; items are "index|path" strings because
        # fastai's transforms would split tuple items apart.
        paths = itertools.islice(itertools.cycle(sample_files(self.files)), n_train + n_valid)
        items = [f"{index}|{path}" for index, path in enumerate(paths)]
        return make_dataloaders(
            items, get_x=lambda key: Path(key.split("|", 1)[1]),
            get_y=lambda key: Path(key.split("|", 1)[1]).parent.name,
            is_valid=lambda key: int(key.split("|", 1)[0]) >= n_train,
            item=item, size=size, micro_batch=micro_batch, device=device, vocab=self.labels, seed=0,
        )


def probe_data_from_folder(folder: str | Path | None) -> ProbeData:
    """Probe data for ``--data``: the training images in ``folder/train_images/<label>/``.

    Raises:
        UserError: the folder or its train_images folder is missing, holds no images, or images of the
            sample the probe reads cannot be decoded.
    """
    if folder is None:
        return ProbeData()
    root = resolved_folder(folder, "data folder")
    if root.exists() and not root.is_dir():
        raise UserError(f"data folder {root} is a file, not a folder: give the folder that holds train_images/")
    train = root / "train_images"
    if not train.is_dir():
        raise UserError(
            f"data folder {root} has no train_images/ folder: expected train_images/<label>/*.jpg"
        )
    files = [path for folder in class_folders(train) for path in images_in(folder)]
    if not files:
        raise UserError(f"data folder {train} holds no images: expected train_images/<label>/*.jpg")
    check_images(sample_files(files), root)
    labels = tuple(sorted({path.parent.name for path in files}))
    return ProbeData(files=tuple(files), labels=labels)
