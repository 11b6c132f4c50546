"""Which card: `planner probe` with several --gpu plans for each card and compares them in one table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from planner.base.errors import UserError
from planner.base.gpus import get_gpu
from planner.probe.cards import check_cards
from planner.probe.options import ProbeOptions

ESTIMATE = ("--arch", "resnet50", "--size", "224", "--device", "estimate", "--jobs", "1")


def test_several_cards_are_planned_compared_and_priced(planner_cli, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    result = planner_cli("probe", "--gpu", "T4", "--gpu", "A100-80G", "--price", "A100-80G=1.9", "--price", "T4=0",
                         *ESTIMATE, "-o", plan)
    assert result.returncode == 0, result.stderr
    assert "cards compared (plan.json is for T4)" in result.stdout and "cost" in result.stdout
    assert json.loads(plan.read_text())["budget_bytes"] == get_gpu("T4").budget_bytes  # the first card's plan
    comparison = json.loads((tmp_path / "plan.cards.json").read_text())
    t4, a100 = comparison["cards"]
    assert (t4["gpu"], a100["gpu"]) == ("T4", "A100-80G") and comparison["chosen"] == "T4"
    assert a100["budget_bytes"] == get_gpu("A100-80G").budget_bytes
    assert a100["total_seconds"] < t4["total_seconds"]  # the faster card
    assert a100["cost_usd"] == round(a100["total_seconds"] / 3600 * 1.9, 2) and t4["cost_usd"] == 0
    for card in comparison["cards"]:
        (entry,) = card["entries"]
        assert entry["accum"] * entry["micro_batch"] == 64 and entry["fits"]


def test_the_plan_can_be_for_another_card_of_the_comparison(planner_cli, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    result = planner_cli("probe", "--gpu", "T4", "--gpu", "A100-80G", "--for", "a100-80g", *ESTIMATE, "-o", plan)
    assert result.returncode == 0, result.stderr
    assert json.loads(plan.read_text())["budget_bytes"] == get_gpu("A100-80G").budget_bytes
    assert json.loads((tmp_path / "plan.cards.json").read_text())["chosen"] == "A100-80G"


@pytest.mark.parametrize(("args", "message"), [
    (["--gpu", "T4", "--gpu", "L4", "--price", "H100=3"], "--for/--price name H100, which no --gpu asks for"),
    (["--gpu", "T4", "--for", "T4"], "--for and --price compare cards: give two or more --gpu"),
    (["--gpu", "T4", "--gpu", "L4", "--gpu-mem", "16G"], "drop --gpu-mem"),
    (["--gpu", "T4", "--gpu", "L4", "--price", "L4=cheap"], "--price expects CARD=USD_PER_HOUR"),
    (["--gpu", "T4", "--gpu", "L4", "--price", "L4=-1"], "must be a finite price per hour of 0 or more"),
    (["--gpu", "T4", "--gpu", "T4"], "names the same card twice"),
    (["--gpu", "T4", "--gpu", "L4", "--price", "L4=1", "--price", "L4=2"], "--price gives L4 twice"),
])
def test_cards_that_do_not_agree_are_refused_in_one_line(args: list[str], message: str, planner_cli,
                                                         tmp_path: Path) -> None:
    result = planner_cli("probe", *args, *ESTIMATE, "-o", tmp_path / "plan.json")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "plan.json").exists() and not (tmp_path / "plan.cards.json").exists()


@pytest.mark.parametrize(("prices", "message"), [
    ({"L4": float("inf")}, "--price L4=inf must be a finite price"),
    ({"L4": 0.8, "NVIDIA L4": 0.9}, "--price names one card twice (L4, NVIDIA L4)"),
])
def test_prices_that_cannot_price_a_card_are_refused(prices: dict[str, float], message: str) -> None:
    options = ProbeOptions(gpus=("T4", "L4"), prices=prices, arch="resnet18", size=(64, 64))
    with pytest.raises(UserError, match=re.escape(message)):
        check_cards(options)


def test_a_plan_measured_on_a_card_the_table_lacks_says_why_it_has_no_times(tmp_path: Path) -> None:
    from planner.base.plan import load_plan
    from planner.probe.report import timing_summary
    from tests.run_data import plan_entry, write_plan

    plan = load_plan(write_plan(tmp_path / "plan.json", [plan_entry("resnet18")]))

    def measured_on(gpu: str):
        return plan.model_copy(update={"measured_on": plan.measured_on.model_copy(update={"gpu": gpu})})

    assert timing_summary(measured_on("NVIDIA H200")) == ("no predicted times: planner's GPU table has no NVIDIA H200 "
                                                          "(its speeds are unknown); the plan is for its memory")
    assert timing_summary(measured_on("Tesla T4")) is None  # a known card: nothing to explain
