"""A model that cannot train at the entry's size: one line naming the size, timm's error and the size to try."""

import pytest

from planner.base.entries import single_entry
from planner.base.errors import UserError
from planner.probe.meters import get_meter
from planner.probe.probe import measure_point


def test_a_size_the_model_cannot_take_names_timms_size_for_it():
    (entry,) = single_entry("hrnet_w18_small", (97, 131))  # its branches' odd sides do not meet again
    with pytest.raises(UserError) as refused:
        measure_point(get_meter("estimate"), entry, 8, None)
    message = str(refused.value)
    assert message.startswith("hrnet_w18_small-crop97x131-97x131: a training step at 97x131 (micro-batch 8) failed: ")
    assert message.endswith("; try timm's size for hrnet_w18_small, 224")
    assert "\n" not in message


def test_the_same_model_at_a_size_near_it_is_measured():
    (entry,) = single_entry("hrnet_w18_small", (96, 128))
    assert measure_point(get_meter("estimate"), entry, 8, None).peak_bytes > 0
