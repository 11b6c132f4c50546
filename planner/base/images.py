"""Which files are images: one rule for the probe, the run, predict and the time estimate.

An image is a file (not hidden, not a folder) whose extension is one of ``IMAGE_SUFFIXES``, the
formats PIL decodes without plugins, in any letter case. Deciding it from the file name keeps listing
cheap; the run then opens every listed file once (``planner_trainer.data``) so a broken one is named before
training. Folders are listed one level deep, sorted by name: ``train_images/<label>/*``,
``test_images/*``, a folder given to ``planner predict``.

A symbolic link to an image is an image. A broken one (its target gone, as when data linked from
``/kaggle/input`` is no longer mounted) is not a file, but it is never dropped without a word: the
listing refuses it, or, when asked, returns it for the caller to report (the run names every one at
once; predict lists it with the unreadable images).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from planner.base.errors import UserError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def is_image_file(path: Path) -> bool:
    """Whether ``path`` is an image file by the rule above."""
    return _image_name(path) and path.is_file()


def is_broken_link(path: Path) -> bool:
    """Whether ``path`` is a symbolic link whose target does not exist."""
    return path.is_symlink() and not path.exists()


def images_in(folder: Path, broken_links: bool = False) -> list[Path]:
    """The image files directly in ``folder``, sorted by name.

    Args:
        folder: the folder to list.
        broken_links: also return the broken symbolic links named like images, for the caller to report;
            False: refuse them.

    Raises:
        UserError: the folder cannot be listed (e.g. no permission), or, without ``broken_links``, holds
            broken symbolic links named like images (all named in the one line, the first few when many).
    """
    listed = [path for path in _listed(folder) if _image_name(path)]
    broken = {path for path in listed if is_broken_link(path)}
    if broken and not broken_links:
        raise broken_links_error(sorted(broken, key=lambda path: path.name), folder)
    return sorted((path for path in listed if path in broken or path.is_file()), key=lambda path: path.name)


def class_folders(folder: Path) -> list[Path]:
    """The class folders of a ``train_images`` folder (sub-folders, not hidden), sorted by name.

    Raises:
        UserError: the folder cannot be listed, or holds broken symbolic links (a linked class folder
            whose target is gone, say).
    """
    listed = sorted((path for path in _listed(folder) if not path.name.startswith(".")), key=lambda path: path.name)
    broken = [path for path in listed if is_broken_link(path)]
    if broken:
        raise broken_links_error(broken, folder)
    return [path for path in listed if path.is_dir()]


def broken_links_error(links: Sequence[Path], root: Path) -> UserError:
    """The one-line refusal of broken symbolic links: how many, their names relative to ``root`` (the
    first few when many), where the first points, and the fix."""
    names = [link.relative_to(root).as_posix() for link in links]
    target = os.readlink(links[0])
    if len(links) == 1:
        return UserError(f"{root / names[0]} is a broken symbolic link (its target {target} does not exist): "
                         "restore the target or remove the link")
    return UserError(f"{len(links)} broken symbolic links in {root}: {some_of(names)} (the first points to "
                     f"{target}, which does not exist): restore their targets or remove the links")


def some_of(names: Sequence[str], shown: int = 5) -> str:
    """``a, b, c``; when there are more than ``shown``, the first ``shown`` and ``and N more``."""
    text = ", ".join(names[:shown])
    return f"{text} and {len(names) - shown} more" if len(names) > shown else text


def _image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _listed(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError as error:
        raise UserError(f"cannot list the folder {folder} ({error.strerror or error}): give a folder you can "
                        "read") from None
