"""How an image file becomes the picture the models see: 8-bit RGB, upright. One function for the run's
check, training, the probe and predict, so that an image is read the same way in each.

PIL's plain ``convert("RGB")`` (what fastai's ``PILImage.create`` does) clips wider pixel types to
0–255: a 16-bit PNG (0–65535) comes out almost white and a float TIFF (0–1) black. Here 16- and 32-bit
integer images are scaled from 0–65535 and float images from 0–1 (values outside are clipped). A photo
whose EXIF orientation says "rotated" is turned the way every image viewer shows it. A palette image
with per-entry transparency goes through RGBA (the same colours, without PIL's warning). Alpha is
dropped, as by ``convert("RGB")``.

:func:`check_images` decodes files before they are used, so that an unreadable one is named in one line
before hours of work rather than in a traceback in the middle of them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from planner.base.errors import UserError
from planner.base.images import some_of
from planner.base.threads import usable_cores

EXIF_ORIENTATION = 0x0112
INTEGER_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
FLOAT_MODES = frozenset({"F"})


def open_rgb(path: str | Path, reduce: int = 1) -> Image.Image:
    """The image file as an upright 8-bit RGB picture.

    Args:
        path: the image file.
        reduce: decode at about 1/``reduce`` of the size where the format can do it cheaply (JPEG's
            ``draft``); a check that the file decodes needs no more.

    Raises:
        Exception: whatever PIL raises for a file it cannot decode (UnidentifiedImageError, OSError, ...).
    """
    with Image.open(path) as image:
        if reduce > 1:
            image.draft("RGB", (max(1, image.width // reduce), max(1, image.height // reduce)))
        image.load()
        if image.getexif().get(EXIF_ORIENTATION, 1) != 1:
            image = ImageOps.exif_transpose(image)
        return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """An image of any PIL mode as 8-bit RGB, its pixel range scaled as the module says."""
    if image.mode in INTEGER_MODES:
        image = _eight_bit(np.asarray(image, dtype=np.float64) / 257)
    elif image.mode in FLOAT_MODES:
        image = _eight_bit(np.asarray(image, dtype=np.float64) * 255)
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def _eight_bit(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.nan_to_num(pixels).round().clip(0, 255).astype(np.uint8))


def decode_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read by :func:`open_rgb` (at 1/8 scale: the whole file is still read), or
    None when it can."""
    try:
        open_rgb(path, reduce=8)
    except Exception as error:  # PIL raises many types (UnidentifiedImageError, SyntaxError, OSError...)
        return str(error) or type(error).__name__
    return None


def check_images(paths: list[Path], root: Path) -> None:
    """Decode every image once, on a thread per core (PIL releases the GIL while decoding).

    Args:
        paths: the image files.
        root: the data folder, which the message names the images relative to.

    Raises:
        UserError: images cannot be decoded; one line names how many, which (in ``paths`` order, the
            first five when more) and why the first fails.
    """
    with ThreadPoolExecutor(max_workers=min(8, len(usable_cores()))) as pool:
        failed = [(path.relative_to(root).as_posix(), problem)
                  for path, problem in zip(paths, pool.map(decode_problem, paths), strict=True) if problem is not None]
    if len(failed) == 1:
        raise UserError(f"cannot read image {failed[0][0]} ({failed[0][1]}): replace or remove it")
    if failed:
        names = some_of([name for name, _ in failed])
        raise UserError(f"cannot read {len(failed)} images: {names} (the first: {failed[0][1]}): replace or remove "
                        "them")
