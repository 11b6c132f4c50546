"""Which files are images: one rule for the probe, the run, predict and the time estimate.

An image is a file (not hidden, not a folder) whose extension is one of ``IMAGE_SUFFIXES``, the
formats PIL decodes without plugins, in any letter case. Deciding it from the file name keeps listing
cheap; the run then opens every listed file once (``trainer.data``) so a broken one is named before
training. Folders are listed one level deep, sorted by name: ``train_images/<label>/*``,
``test_images/*``, a folder given to ``planner predict``.
"""

from __future__ import annotations

from pathlib import Path

from planner.base.errors import UserError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def is_image_file(path: Path) -> bool:
    """Whether ``path`` is an image file by the rule above."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


def images_in(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name.

    Raises:
        UserError: the folder cannot be listed (e.g. no permission).
    """
    return sorted((path for path in _listed(folder) if is_image_file(path)), key=lambda path: path.name)


def class_folders(folder: Path) -> list[Path]:
    """The class folders of a ``train_images`` folder (sub-folders, not hidden), sorted by name.

    Raises:
        UserError: the folder cannot be listed.
    """
    return sorted((path for path in _listed(folder) if path.is_dir() and not path.name.startswith(".")),
                  key=lambda path: path.name)


def _listed(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError as error:
        raise UserError(f"cannot list the folder {folder} ({error.strerror or error}): give a folder you can "
                        "read") from None
