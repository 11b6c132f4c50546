import json
import re

import pytest

from planner.base.errors import UserError
from planner.base.plan import (
    ItemTransform,
    MeasuredOn,
    Plan,
    PlanEntry,
    ProbePoint,
    accum_for,
    batch_divisors,
    load_plan,
    micro_batch_for,
    save_plan,
)


def make_plan() -> Plan:
    entry = PlanEntry(
        name="resnet18-crop64-64", arch="resnet18", item=ItemTransform(resize=(64, 64)), size=(64, 64),
        accum=2, micro_batch=32, predicted_peak_bytes=250 * 2**20, fits=True, headroom_bytes=50 * 2**20,
        probes=[ProbePoint(micro_batch=32, peak_bytes=250 * 2**20, seconds=0.5)],
    )
    return Plan(budget_bytes=300 * 2**20, margin=0.0, effective_batch_size=64,
                measured_on=MeasuredOn(device="cpu", precision="fp32", torch="x", timm="y", fastai="z"),
                entries=[entry], created="2026-11-26T00:00:00+00:00")


def test_plan_round_trips_through_its_file(tmp_path):
    plan = make_plan()
    path = save_plan(plan, tmp_path / "plan.json")
    assert load_plan(path) == plan
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["entries"][0]["item"] == {"resize": 64, "method": "crop"}  # a square, one int
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed, not left behind


@pytest.mark.parametrize(
    ("breakage", "named"),
    [
        (lambda d: d["entries"][0].update(accum=0), "entries.0.accum"),
        (lambda d: d["entries"][0].update(accum=3), "accum × micro_batch"),
        (lambda d: d["entries"][0]["item"].update(method="stretch"), "entries.0.item.method"),
        (lambda d: d.update(budget_bytes="lots"), "budget_bytes"),
        (lambda d: d["measured_on"].update(device="tpu"), "measured_on.device"),
        (lambda d: d["entries"][0].pop("arch"), "entries.0.arch"),
        (lambda d: d["entries"][0].update(colour="red"), "entries.0.colour"),
    ],
)
def test_hand_broken_plan_is_refused_naming_the_field(tmp_path, breakage, named):
    data = make_plan().to_dict()
    breakage(data)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError) as error:
        load_plan(path)
    assert named in str(error.value)
    assert "\n" not in str(error.value)


def test_other_version_and_non_json_are_refused(tmp_path):
    data = make_plan().to_dict() | {"version": 2}
    (tmp_path / "v2.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="version 2"):
        load_plan(tmp_path / "v2.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="is not JSON"):
        load_plan(tmp_path / "bad.json")
    with pytest.raises(UserError, match="not found"):
        load_plan(tmp_path / "missing.json")


def test_written_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    path = save_plan(make_plan(), tmp_path / "plan.json")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_accumulation_and_micro_batch_are_the_divisor_pairs_of_the_effective_batch():
    assert batch_divisors(64) == [1, 2, 4, 8, 16, 32, 64]
    assert batch_divisors(12) == [1, 2, 3, 4, 6, 12]
    assert [(accum, micro_batch_for(64, accum)) for accum in (1, 2, 64)] == [(1, 64), (2, 32), (64, 1)]
    assert accum_for(64, 16) == 4
    with pytest.raises(ValueError, match="does not divide"):
        micro_batch_for(64, 3)  # fastai's GradientAccumulation would step after 63 samples, not 64
    with pytest.raises(ValueError, match="does not divide"):
        accum_for(64, 0)


@pytest.mark.parametrize("name", ["a/b", "a\\b", ".hidden"])
def test_entry_names_that_cannot_be_file_names_are_refused_for_training(name):
    plan = make_plan()
    plan = plan.model_copy(update={"entries": [plan.entries[0].model_copy(update={"name": name})]})
    with pytest.raises(UserError, match=re.escape(f"plan entry 0 has the name {name!r}, which cannot be a file name")):
        plan.check_entry_names()
    make_plan().check_entry_names()  # a plain name passes
    with pytest.raises(UserError, match="the plan has no entries: nothing to train"):
        make_plan().model_copy(update={"entries": []}).check_entry_names()
