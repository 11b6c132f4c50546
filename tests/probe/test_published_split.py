"""The published runs' calibration / held-out split: stable, about half and half, shared by name only."""

import hashlib

from benchmarks.published.split import half, is_calibration
from benchmarks.published.steptime import architecture_class, family, read_published


def test_split_is_the_parity_of_the_first_sha256_byte_and_splits_the_file_about_evenly():
    rows = read_published()
    for row in rows[:50]:
        assert is_calibration(row.model) == (hashlib.sha256(row.model.encode()).digest()[0] % 2 == 0)
    calibration = sum(is_calibration(row.model) for row in rows)
    assert len(rows) == 838 and 0.4 < calibration / len(rows) < 0.6
    assert {half(row.model) for row in rows} == {"calibration", "held-out"}


def test_families_and_classes_group_names_as_people_do():
    assert family("tf_efficientnet_b0_ns") == family("efficientnet_b3") == "efficientnet"
    assert family("vit_large_patch16_224") == "vit" and family("resnet50d") == "resnet"
    assert architecture_class("swin_large_patch4_window7_224") == "transformer"
    assert architecture_class("mobilenetv3_large_100") == "depthwise / mobile"
    assert architecture_class("resnet50") == "convnet"
