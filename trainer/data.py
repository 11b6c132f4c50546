"""The data folder in the reference layout, checked cheaply before any training starts.

Layout: ``train_images/<label>/*`` (one folder per class), ``test_images/*`` (optional) and an
optional ``sample_submission.csv``. Items are named by their path relative to the data folder with
forward slashes (``train_images/3/img_12.png``); test items by their file name (``img_7.png``), as
``sample_submission.csv`` names them. Image files are recognised by extension (``planner.base.images``,
the rule the probe and predict use too); every one is decoded once before training, so that a corrupt
file is reported by name before hours of training, not in the middle of them. PIL's ``verify()``
alone misses a truncated JPEG (it reads the headers only); a JPEG is decoded at 1/8 scale (``draft``:
the whole compressed stream is read, the inverse transform mostly skipped), on a thread per core
(PIL releases the GIL while decoding): benchmarks/RESULTS.md, "image check", for what it costs.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from planner.base.errors import UserError
from planner.base.images import class_folders, images_in
from planner.base.threads import usable_cores

LAYOUT_HINT = "expected train_images/<label>/* and test_images/*"


@dataclass(frozen=True)
class DataLayout:
    """What a data folder holds.

    Attributes:
        root: the data folder, absolute.
        train: relative names of the training images, sorted.
        vocab: the sorted class names: the class order of every model of a run.
        test: file names of the test images (in ``test_images/``), sorted; empty when there are none.
    """

    root: Path
    train: tuple[str, ...]
    vocab: tuple[str, ...]
    test: tuple[str, ...]

    def test_path(self, name: str) -> Path:
        """The file of a test item."""
        return self.root / "test_images" / name


def label_of(name: str) -> str:
    """The class of a training item (``train_images/<label>/<file>``): its folder name."""
    return name.split("/")[-2]


def _decode(path: Path) -> str | None:
    """Why ``path`` cannot be decoded, or None when it can."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))  # JPEG only; others: no-op
            image.load()
    except Exception as error:  # PIL raises many types (UnidentifiedImageError, SyntaxError, OSError...)
        return str(error) or type(error).__name__
    return None


def check_images(paths: list[Path], root: Path) -> None:
    """Decode every image once, on a thread per core.

    Raises:
        UserError: an image cannot be decoded; the first in ``paths`` order is named.
    """
    with ThreadPoolExecutor(max_workers=min(8, len(usable_cores()))) as pool:
        for path, problem in zip(paths, pool.map(_decode, paths), strict=True):
            if problem is not None:
                name = path.relative_to(root).as_posix()
                raise UserError(f"cannot read image {name} ({problem}): replace or remove it")


def scan_data(data_dir: str | Path) -> DataLayout:
    """List and check the data folder.

    Args:
        data_dir: the data folder.

    Returns:
        The layout, with every image checked.

    Raises:
        UserError: the folder or its ``train_images`` is missing, an image sits outside a class folder,
            a class folder holds no image, there are fewer than two classes, or an image cannot be read
            (the message names the file).
    """
    root = Path(data_dir).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise UserError(f"data folder {root} is a file, not a folder: give the folder that holds train_images/")
    if not root.is_dir():
        raise UserError(f"data folder {root} not found ({LAYOUT_HINT})")
    train_dir = root / "train_images"
    if not train_dir.is_dir():
        raise UserError(f"data folder {root} has no train_images folder ({LAYOUT_HINT})")
    loose = [p.name for p in images_in(train_dir)]
    if loose:
        raise UserError(f"train_images/{loose[0]} is not inside a class folder ({LAYOUT_HINT})")
    class_dirs = class_folders(train_dir)
    if len(class_dirs) < 2:
        raise UserError(f"{train_dir} holds {len(class_dirs)} class folder(s); training needs at least two")
    train: list[str] = []
    for class_dir in class_dirs:
        files = images_in(class_dir)
        if not files:
            raise UserError(f"class folder train_images/{class_dir.name} holds no image")
        train.extend(p.relative_to(root).as_posix() for p in files)
    test_dir = root / "test_images"
    test = [p.name for p in images_in(test_dir)] if test_dir.is_dir() else []
    check_images([root / name for name in train] + [test_dir / name for name in test], root)
    return DataLayout(
        root=root,
        train=tuple(train),
        vocab=tuple(sorted(p.name for p in class_dirs)),
        test=tuple(test),
    )
