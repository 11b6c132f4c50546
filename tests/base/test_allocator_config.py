"""One CUDA allocator configuration for the probe and the run (issue 22): planner's decision (the
user's own setting wins, else expandable segments), set before torch reads it, and recorded in
plan.json and run.json. On a machine without CUDA torch still parses the setting when asked, which
is how these tests see what a CUDA process would use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from planner.base.allocator import (
    ALLOC_CONF,
    DEFAULT_ALLOC_CONF,
    GENERIC_ALLOC_CONF,
    SET_BY_PLANNER,
    allocator_in_force,
    choose_allocator,
    describe_allocator,
    same_allocator,
    set_allocator,
    use_allocator,
)
from planner.base.plan import AllocatorConfig, load_plan
from planner.base.runfile import EntryRecord, MemoryRecord, RunFile, RunSettings, load_run, save_run
from planner.probe.meters import get_meter

REPO = Path(__file__).resolve().parents[2]
PLANNERS = AllocatorConfig(conf=DEFAULT_ALLOC_CONF, source="planner")


@pytest.fixture
def no_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's environment without any allocator setting; restored after the test."""
    for name in (ALLOC_CONF, GENERIC_ALLOC_CONF, SET_BY_PLANNER):
        monkeypatch.delenv(name, raising=False)


def test_planner_chooses_expandable_segments_when_the_user_sets_nothing() -> None:
    assert DEFAULT_ALLOC_CONF == "expandable_segments:True"
    assert choose_allocator({}) == PLANNERS


@pytest.mark.parametrize(("environ", "conf"), [
    ({ALLOC_CONF: "max_split_size_mb:128"}, "max_split_size_mb:128"),
    ({GENERIC_ALLOC_CONF: "expandable_segments:False"}, "expandable_segments:False"),
    ({ALLOC_CONF: "garbage_collection_threshold:0.6", GENERIC_ALLOC_CONF: "expandable_segments:False"},
     "garbage_collection_threshold:0.6"),  # torch's CUDA allocator reads the CUDA variable first
    ({ALLOC_CONF: ""}, ""),  # set but empty: torch's defaults, asked for
])
def test_the_users_own_setting_wins_and_is_recorded_as_the_users(environ: dict[str, str], conf: str) -> None:
    assert choose_allocator(environ) == AllocatorConfig(conf=conf, source="user")


def test_planners_setting_inherited_from_the_process_that_started_this_one_stays_planners() -> None:
    inherited = {ALLOC_CONF: DEFAULT_ALLOC_CONF, SET_BY_PLANNER: DEFAULT_ALLOC_CONF}
    assert choose_allocator(inherited) == PLANNERS
    changed_by_the_user = {ALLOC_CONF: "expandable_segments:False", SET_BY_PLANNER: DEFAULT_ALLOC_CONF}
    assert choose_allocator(changed_by_the_user).source == "user"


def test_a_decision_is_written_into_an_environment_as_a_child_process_inherits_it() -> None:
    environ = {SET_BY_PLANNER: "left by an earlier decision"}
    set_allocator(environ, AllocatorConfig(conf="max_split_size_mb:64", source="user"))
    assert environ == {ALLOC_CONF: "max_split_size_mb:64"}
    set_allocator(environ, PLANNERS)
    assert environ == {ALLOC_CONF: DEFAULT_ALLOC_CONF, SET_BY_PLANNER: DEFAULT_ALLOC_CONF}
    set_allocator(environ, AllocatorConfig(conf="", source="torch"))
    assert environ == {}


@pytest.mark.usefixtures("no_setting")
def test_using_it_sets_this_process_before_cuda_starts_and_says_what_is_in_force() -> None:
    import torch

    if torch.cuda.is_initialized():
        pytest.skip("CUDA has started in this test process: the setting can no longer change here")
    assert allocator_in_force() == AllocatorConfig(conf="", source="torch")  # nothing set yet
    assert use_allocator() == PLANNERS == use_allocator()  # applied once, the same when asked again
    assert allocator_in_force() == PLANNERS


@pytest.mark.parametrize(("environment", "in_force"), [
    ({}, PLANNERS),
    ({ALLOC_CONF: "max_split_size_mb:128"}, AllocatorConfig(conf="max_split_size_mb:128", source="user")),
])
def test_torch_reads_the_setting_planner_decided_in_a_new_process(environment: dict[str, str],
                                                                  in_force: AllocatorConfig) -> None:
    script = ("from planner.base.allocator import use_allocator\n"
              "from planner.base.compat import allocator_settings\n"
              "print(use_allocator().model_dump_json())\n"
              "print(allocator_settings())\n")  # what torch's allocator parsed, after planner set it
    inherited = {name: value for name, value in os.environ.items()
                 if name not in (ALLOC_CONF, GENERIC_ALLOC_CONF, SET_BY_PLANNER)}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**inherited, **environment})
    assert result.returncode == 0, result.stderr
    recorded, parsed = result.stdout.splitlines()
    assert AllocatorConfig.model_validate_json(recorded) == in_force
    if parsed != "None":  # torch 2.9 and later tell what they parsed
        assert parsed == in_force.conf


def test_configurations_compare_by_their_options_and_read_in_one_line() -> None:
    assert same_allocator(AllocatorConfig(conf="expandable_segments:True, max_split_size_mb:128", source="user"),
                          AllocatorConfig(conf="max_split_size_mb:128,expandable_segments:True", source="planner"))
    assert not same_allocator(PLANNERS, AllocatorConfig(conf="", source="torch"))
    assert describe_allocator(PLANNERS) == f"{ALLOC_CONF}={DEFAULT_ALLOC_CONF} (planner's default)"
    assert describe_allocator(AllocatorConfig(conf="", source="torch")).startswith("torch's defaults (CUDA had started")


@pytest.mark.usefixtures("no_setting")
def test_the_estimate_records_planners_choice_and_the_cpu_meter_none() -> None:
    assert get_meter("estimate").measured_on().allocator == PLANNERS
    assert get_meter("cpu").measured_on().allocator is None


def test_planner_probe_records_the_users_setting_in_the_plan(planner_cli, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    result = planner_cli("probe", "--arch", "resnet18", "--size", "32", "--gpu-mem", "4G", "--device", "estimate",
                         "-o", plan, env={ALLOC_CONF: "expandable_segments:False"})
    assert result.returncode == 0, result.stderr
    recorded = json.loads(plan.read_text())["measured_on"]["allocator"]
    assert recorded == {"conf": "expandable_segments:False", "source": "user"}
    older = json.loads(plan.read_text())
    del older["measured_on"]["allocator"]
    plan.write_text(json.dumps(older))
    assert load_plan(plan).measured_on.allocator is None  # a plan from before the field still loads


def test_run_json_records_a_tries_allocator_and_older_files_still_load(tmp_path: Path) -> None:
    memory = MemoryRecord(meter="cuda", peak_bytes=3 * 2**30, start_bytes=0, allocator=PLANNERS)
    entry = EntryRecord(name="a", arch="resnet18", item={"resize": 40}, size=(32, 32), status="finished",
                        device="cuda", precision="fp16", planned_accum=1, planned_micro_batch=8, accum=1,
                        micro_batch=8, predicted_peak_bytes=None, predicted_on="estimate", memory=memory,
                        started="2026-01-01T00:00:00+00:00")
    run = RunFile(data="/data", plan="/plan.json", effective_batch_size=8, budget_bytes=2**34,
                  settings=RunSettings(epochs=1, lr=0.01, pretrained=False), entries={"a": entry},
                  created="2026-01-01T00:00:00+00:00", updated="2026-01-01T00:00:00+00:00")
    save_run(run, tmp_path)
    assert load_run(tmp_path).entries["a"].memory.allocator == PLANNERS
    older = json.loads((tmp_path / "run.json").read_text())
    del older["entries"]["a"]["memory"]["allocator"]
    (tmp_path / "run.json").write_text(json.dumps(older))
    assert load_run(tmp_path).entries["a"].memory.allocator is None
