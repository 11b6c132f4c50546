"""`planner run` says in one line when its CUDA allocator configuration is not the one the plan's peaks
are for (issue 22), and says nothing where the two agree or the comparison means nothing."""

from __future__ import annotations

from run_data import plan_entry

from planner.base.allocator import DEFAULT_ALLOC_CONF
from planner.base.plan import AllocatorConfig, MeasuredOn, Plan
from planner_trainer.progress import LineReporter
from planner_trainer.run import note_allocator_change

PLANNERS = AllocatorConfig(conf=DEFAULT_ALLOC_CONF, source="planner")
TORCHS = AllocatorConfig(conf="", source="torch")


def plan_made(device: str, allocator: AllocatorConfig | None) -> Plan:
    """A plan measured (cuda, cpu) or estimated (estimate) with ``allocator``."""
    on = MeasuredOn(device=device, precision="fp32" if device == "cpu" else "fp16", torch="2.11", timm="1.0",
                    fastai="2.8", allocator=allocator)
    return Plan(budget_bytes=2**34, margin=0.05, effective_batch_size=8, measured_on=on,
                entries=[plan_entry("resnet18")], created="2026-01-01T00:00:00+00:00")


def notices(plan: Plan, allocator: AllocatorConfig | None) -> list[str]:
    lines: list[str] = []
    note_allocator_change(plan, allocator, LineReporter(lines.append))
    return lines


def test_a_run_with_another_allocator_than_the_measured_plan_says_so_in_one_line() -> None:
    assert notices(plan_made("cuda", PLANNERS), TORCHS) == [
        "allocator: the plan's peaks were measured with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True "
        "(planner's default), this run uses torch's defaults (CUDA had started before planner could set its "
        "default): reserved memory, and so the peaks, may differ; run with "
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True or probe again with this run's setting"]


def test_a_run_with_another_allocator_than_the_estimated_plan_says_so_in_one_line() -> None:
    users = AllocatorConfig(conf="", source="user")
    (line,) = notices(plan_made("estimate", users), PLANNERS)
    assert line.startswith("allocator: the plan's peaks were estimated with torch's defaults (set in the "
                           "environment), this run uses PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True")
    assert "run with PYTORCH_CUDA_ALLOC_CONF= (empty: torch's defaults) or probe again" in line


def test_nothing_is_said_where_the_settings_agree_or_the_comparison_means_nothing() -> None:
    reordered = AllocatorConfig(conf="max_split_size_mb:128,expandable_segments:True", source="user")
    same_options = AllocatorConfig(conf="expandable_segments:True, max_split_size_mb:128", source="planner")
    assert notices(plan_made("cuda", reordered), same_options) == []
    assert notices(plan_made("estimate", PLANNERS), PLANNERS) == []
    assert notices(plan_made("cuda", PLANNERS), None) == []  # the run trains on the CPU
    assert notices(plan_made("cuda", None), TORCHS) == []  # a plan from before planner recorded it
    assert notices(plan_made("cpu", None), PLANNERS) == []  # the cpu meter's peaks are live tensor bytes
