"""fastai's image type read through :func:`planner.base.pixels.open_rgb`: the ``ImageBlock`` of every data
loader the probe, the run and predict build, so that each reads a file the same way."""

# No ``from __future__ import annotations``: fastai dispatches ``create`` on its annotation at run time.
from pathlib import Path

from fastai.vision.core import PILImage
from numpy import ndarray
from PIL import Image
from torch import Tensor

from planner.base.pixels import open_rgb


class RGBImage(PILImage):
    """fastai's ``PILImage``, but a file becomes an upright 8-bit RGB picture by ``open_rgb``."""

    @classmethod
    def create(cls, fn: Path | str | Tensor | ndarray | bytes | Image.Image, **kwargs) -> "RGBImage":
        """The image of a file (by ``open_rgb``), or of anything else fastai's ``PILImage`` takes."""
        return super().create(open_rgb(fn) if isinstance(fn, (str, Path)) else fn, **kwargs)
