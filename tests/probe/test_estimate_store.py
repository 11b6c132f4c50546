"""The estimate store: a second meter (a second `planner probe`) answers from the first one's probes,
only for the same question under the same settings, and a broken store never breaks a probe."""

from __future__ import annotations

from pathlib import Path

import pytest

import planner.probe.side_by_side as side_by_side
from planner.base.entries import single_entry
from planner.probe.meters import get_meter
from planner.probe.meters.device_model import DeviceModel
from planner.probe.meters.estimate_store import NO_CACHE_VARIABLE
from planner.probe.probe import probe_plan

GIB = 2**30


@pytest.fixture(scope="module")
def entry():
    return single_entry("resnet18", 64)[0]


def _bytes(point):
    return point.peak_bytes, point.forward_backward_bytes, point.step_bytes


def _stored_files() -> list[Path]:
    import os

    return sorted(Path(os.environ["XDG_CACHE_HOME"], "planner", "estimates").rglob("*.json"))


def test_a_new_meter_answers_a_probe_from_the_store_without_a_new_step(entry) -> None:
    first = get_meter("estimate").measure(entry, 16)
    second_meter = get_meter("estimate")
    assert second_meter.remembers(entry, 16) and not second_meter.remembers(entry, 32)
    again = second_meter.measure(entry, 16)
    assert again.reused and again.seconds == 0.0 and not first.reused
    assert _bytes(again) == _bytes(first)
    assert second_meter.has_batchnorm(entry) is True  # the model's facts are stored too


@pytest.mark.parametrize("other", [dict(n_classes=3), dict(precision="fp32"), dict(device=DeviceModel.raw())])
def test_other_settings_ask_another_question(entry, other) -> None:
    get_meter("estimate").measure(entry, 16)
    assert not get_meter("estimate", **other).remembers(entry, 16)


def test_the_store_can_be_turned_off(entry, monkeypatch) -> None:
    get_meter("estimate").measure(entry, 16)
    monkeypatch.setenv(NO_CACHE_VARIABLE, "1")
    assert not get_meter("estimate").remembers(entry, 16)


def test_a_damaged_file_is_a_miss_and_is_written_again(entry) -> None:
    first = get_meter("estimate").measure(entry, 16)
    files = _stored_files()
    assert files  # the probe and the model's facts
    for path in files:
        path.write_text('{"peak_bytes": ', encoding="utf-8")
    meter = get_meter("estimate")
    assert not meter.remembers(entry, 16)
    fresh = meter.measure(entry, 16)
    assert not fresh.reused and _bytes(fresh) == _bytes(first)
    assert get_meter("estimate").remembers(entry, 16)


@pytest.mark.parametrize("content", ["{}", '{"micro_batch": null, "peak_bytes": "x", "allocated": "x", '
                                     '"active": -1, "reserved": 1, "batchnorm": 3, "body_batchnorm": "no"}', "[1, 2]"])
def test_an_answer_of_the_wrong_shape_is_a_miss(entry, content) -> None:
    """JSON, but not what was stored (a damaged or hand-edited store): measured again, where the probe used to
    end in a validation traceback."""
    first = get_meter("estimate").measure(entry, 16)
    meter = get_meter("estimate")
    meter.replay_peaks(entry, 16)
    for path in _stored_files():
        path.write_text(content, encoding="utf-8")
    meter = get_meter("estimate")
    assert not meter.remembers(entry, 16)
    assert meter.has_batchnorm(entry) is True
    assert _bytes(meter.measure(entry, 16)) == _bytes(first)
    assert sorted(get_meter("estimate").replay_peaks(entry, 16)) == ["active", "allocated", "reserved"]


def test_a_folder_that_cannot_be_written_only_costs_the_saving(entry, tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "a file, not a folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    point = get_meter("estimate").measure(entry, 16)
    assert point.peak_bytes > 0 and not get_meter("estimate").remembers(entry, 16)


@pytest.mark.slow
def test_planning_again_answers_every_probe_from_the_store_in_this_process(entry, monkeypatch) -> None:
    entries = [entry, *single_entry("convnext_atto", 64)]
    options = dict(budget_bytes=3 * GIB, effective_batch_size=64)
    first = probe_plan(entries, get_meter("estimate"), jobs=1, **options)

    def no_workers(*args, **kwargs):
        raise AssertionError("remembered architectures start no worker process")

    monkeypatch.setattr(side_by_side, "Running", no_workers)
    again = probe_plan(entries, get_meter("estimate"), jobs=2, **options)
    assert all(point.reused for planned in again.entries for point in planned.probes)
    for before, after in zip(first.entries, again.entries, strict=True):
        assert (after.micro_batch, after.predicted_peak_bytes) == (before.micro_batch, before.predicted_peak_bytes)
        assert [_bytes(p) for p in after.probes] == [_bytes(p) for p in before.probes]
