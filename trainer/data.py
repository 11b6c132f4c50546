"""The data folder in the reference layout, checked cheaply before any training starts.

Layout: ``train_images/<label>/*`` (one folder per class), ``test_images/*`` (optional) and an
optional ``sample_submission.csv``. Items are named by their path relative to the data folder with
forward slashes (``train_images/3/img_12.png``); test items by their file name (``img_7.png``), as
``sample_submission.csv`` names them. Image files are recognised by extension (``planner.base.images``,
the rule the probe and predict use too); every one is decoded once before training as training reads it
(``planner.base.pixels.check_images``), so that corrupt files are reported by name before hours of
training, not in the middle of them: all of them in one line (the first few when many), so that one
rerun finds them fixed, and so are broken symbolic links. PIL's ``verify()`` alone misses a truncated
JPEG (it reads the headers only); a JPEG is decoded at 1/8 scale (``draft``: the whole compressed stream
is read, the inverse transform mostly skipped), on a thread per core; what it costs:
benchmarks/RESULTS.md, "What does a run cost beyond training?".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from planner.base.errors import UserError
from planner.base.images import broken_links_error, class_folders, images_in, is_broken_link, some_of
from planner.base.paths import resolved_folder
from planner.base.pixels import check_images

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


def _empty_class(class_dir: Path) -> str:
    """The refusal of a class folder without images, naming the sub-folders it has (only the images
    directly in a class folder are read)."""
    subfolders = class_folders(class_dir)
    if subfolders:
        return (f"class folder train_images/{class_dir.name} holds no image, only the sub-folder(s) "
                f"{some_of([folder.name for folder in subfolders])}: put its images directly in "
                f"train_images/{class_dir.name}/ (sub-folders are not read)")
    return f"class folder train_images/{class_dir.name} holds no image: add its images or remove the folder"


def scan_data(data_dir: str | Path) -> DataLayout:
    """List and check the data folder.

    Args:
        data_dir: the data folder.

    Returns:
        The layout, with every image checked.

    Raises:
        UserError: the folder or its ``train_images`` is missing, an image sits outside a class folder,
            a class folder holds no image, there are fewer than two classes, test_images holds only
            sub-folders, images are broken symbolic links or cannot be read (the message names every one,
            the first few when many).
    """
    root = resolved_folder(data_dir, "data folder")
    if root.exists() and not root.is_dir():
        raise UserError(f"data folder {root} is a file, not a folder: give the folder that holds train_images/")
    if not root.is_dir():
        raise UserError(f"data folder {root} not found ({LAYOUT_HINT})")
    train_dir, test_dir = root / "train_images", root / "test_images"
    for folder in (train_dir, test_dir):
        if is_broken_link(folder):
            raise broken_links_error([folder], root)
    if not train_dir.is_dir():
        raise UserError(f"data folder {root} has no train_images folder ({LAYOUT_HINT})")
    loose = [p.name for p in images_in(train_dir, broken_links=True)]
    if loose:
        raise UserError(f"train_images/{loose[0]} is not inside a class folder ({LAYOUT_HINT})")
    class_dirs = class_folders(train_dir)
    if len(class_dirs) < 2:
        raise UserError(f"{train_dir} holds {len(class_dirs)} class folder(s); training needs at least two: one "
                        "folder of images per class, train_images/<label>/*")
    train: list[str] = []
    for class_dir in class_dirs:
        files = images_in(class_dir, broken_links=True)
        if not files:
            raise UserError(_empty_class(class_dir))
        train.extend(p.relative_to(root).as_posix() for p in files)
    test = [p.name for p in images_in(test_dir, broken_links=True)] if test_dir.is_dir() else []
    test_subfolders = class_folders(test_dir) if test_dir.is_dir() and not test else []
    if test_subfolders:
        names = some_of([folder.name for folder in test_subfolders])
        raise UserError(f"test_images holds no image, only the sub-folder(s) {names}: put the test images directly in "
                        "test_images/ (sub-folders are not read), each name once")
    paths = [root / name for name in train] + [test_dir / name for name in test]
    broken = [path for path in paths if is_broken_link(path)]
    if broken:
        raise broken_links_error(broken, root)
    check_images(paths, root)
    return DataLayout(
        root=root,
        train=tuple(train),
        vocab=tuple(sorted(p.name for p in class_dirs)),
        test=tuple(test),
    )
