"""Shared fixtures: a small image folder in the reference layout (see run_data.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from run_data import make_image_folder


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes × 12 images of 40×40 px, 6 test images, sample_submission.csv; read-only by convention."""
    return make_image_folder(tmp_path_factory.mktemp("data"))
