"""Image files of every kind a user's folder may hold become the picture a user sees: 8-bit RGB, upright,
with 16-bit and float pixels scaled rather than clipped; and the data loaders of run, probe and predict
read files that way.

Real files written by PIL in temporary folders; the data loaders are the real fastai ones.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from planner.base.pixels import EXIF_ORIENTATION, open_rgb
from planner.base.plan import ItemTransform
from planner.base.recipe import make_dataloaders

GREY = np.arange(64 * 48, dtype=np.uint8).reshape(48, 64)  # every grey level, 64 wide × 48 high


def grey_rgb() -> np.ndarray:
    return np.repeat(GREY[..., None], 3, axis=2)


def written(path: Path, image: Image.Image, **options: object) -> Path:
    image.save(path, **options)
    return path


@pytest.mark.parametrize("name, image", [
    ("grey.png", Image.fromarray(GREY)),
    ("grey16.png", Image.fromarray(GREY.astype(np.uint16) * 257)),
    ("grey_float.tif", Image.fromarray(GREY.astype(np.float32) / 255)),
    ("grey_alpha.png", Image.fromarray(np.dstack([GREY, np.zeros_like(GREY)]), "LA")),
    ("grey.webp", Image.fromarray(GREY)),
    ("grey.bmp", Image.fromarray(GREY)),
])
def test_every_pixel_type_reads_as_the_same_8_bit_rgb(tmp_path: Path, name: str, image: Image.Image) -> None:
    options = {"lossless": True} if name.endswith(".webp") else {}
    pixels = np.asarray(open_rgb(written(tmp_path / name, image, **options)))
    assert pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, grey_rgb())


def test_16_bit_and_float_pixels_are_scaled_where_a_plain_conversion_clips_them(tmp_path: Path) -> None:
    wide = written(tmp_path / "grey16.png", Image.fromarray(GREY.astype(np.uint16) * 257))
    floats = written(tmp_path / "grey_float.tif", Image.fromarray(GREY.astype(np.float32) / 255))
    with Image.open(wide) as image:
        assert (np.asarray(image.convert("RGB")) == 255).mean() > 0.99  # what PIL (and fastai) alone make of it
    with Image.open(floats) as image:
        assert np.asarray(image.convert("RGB")).max() <= 1
    assert np.asarray(open_rgb(wide)).std() == pytest.approx(GREY.std(), rel=1e-6)
    assert np.asarray(open_rgb(floats)).std() == pytest.approx(GREY.std(), rel=1e-6)


def test_a_photo_with_exif_orientation_is_turned_upright(tmp_path: Path) -> None:
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)  # red left half, as the sensor stored it
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[EXIF_ORIENTATION] = 6  # "rotate 90° clockwise to view"
    upright = np.asarray(open_rgb(written(tmp_path / "photo.JPG", image, exif=exif, quality=100)))
    assert upright.shape == (40, 20, 3)
    assert upright[:10, :, 0].mean() > 200 > upright[30:, :, 0].mean()  # the red half is on top


def test_a_palette_image_with_transparency_reads_as_its_colours_without_warnings(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).convert("P")
    path = written(tmp_path / "palette.png", palette, transparency=bytes(range(256)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels = np.asarray(open_rgb(path))
    np.testing.assert_array_equal(pixels, np.asarray(palette.convert("RGB")))


def test_the_data_loaders_of_training_and_prediction_read_files_the_same_way(tmp_path: Path) -> None:
    plain = written(tmp_path / "grey.png", Image.fromarray(GREY))
    wide = written(tmp_path / "grey16.png", Image.fromarray(GREY.astype(np.uint16) * 257))
    dls = make_dataloaders([plain, wide], get_x=lambda path: path, get_y=lambda path: path.stem,
                           is_valid=lambda path: False, item=ItemTransform(resize=(48, 64), method="squish"),
                           size=(48, 64), micro_batch=2, device="cpu", num_workers=0)
    images = dls.test_dl([plain, wide]).one_batch()[0]  # what `planner predict` feeds the models
    assert images[0].std().item() > 0
    assert images[0].equal(images[1])
    trained = dls.train_ds[1][0]  # what training decodes for the 16-bit file
    np.testing.assert_array_equal(np.asarray(trained), grey_rgb())
