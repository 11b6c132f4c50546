"""Which card: one plan per named card, compared side by side, priced when the user gives prices.

Users choose a card before they plan (a free T4 on Kaggle or Colab, an L4, an A100 or H100 by the
hour). ``planner probe --gpu T4 --gpu L4 --gpu A100-80G`` plans for each card as ``--gpu`` alone
would (its usable memory is the budget, its speed times the entries) and compares them: per card,
each entry's accumulation × micro-batch (and checkpointing), what does not fit, the predicted time of
the whole plan and, with ``--price CARD=USD_PER_HOUR``, its cost. No prices are built in: they go
stale. plan.json keeps the plan of one card (``--for CARD``, else the first); the comparison is
written beside it (``PLAN.cards.json``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import Field

from planner.base.atomic import atomic_write_json
from planner.base.errors import UserError
from planner.base.gpus import get_gpu
from planner.base.plan import Plan, Record, save_plan
from planner.probe.options import ProbeOptions

CARDS_VERSION = 1


class CardEntry(Record):
    """One entry as planned for one card."""

    name: str
    accum: int
    micro_batch: int
    grad_checkpointing: bool
    fits: bool
    predicted_peak_bytes: int | None
    predicted_total_seconds: float | None


class CardPlan(Record):
    """One card's plan in short: its entries, the whole plan's predicted seconds and cost."""

    gpu: str
    budget_bytes: int
    entries: list[CardEntry]
    misfits: int = Field(ge=0)
    total_seconds: float | None
    usd_per_hour: float | None = None
    cost_usd: float | None = None


class CardComparison(Record):
    """``PLAN.cards.json``: every card's plan, and which one plan.json holds."""

    version: Literal[1] = CARDS_VERSION
    chosen: str
    cards: list[CardPlan]
    note: str = ("seconds: fine_tune + TTA on the card, data loading not included; cost: the predicted "
                 "seconds at the given price per hour, for the entries that fit")


def comparison_path(plan_path: Path) -> Path:
    """Where the comparison of a plan is written: ``plan.json`` → ``plan.cards.json``."""
    return plan_path.with_suffix(".cards.json")


def check_cards(options: ProbeOptions) -> tuple[str, ...]:
    """The cards to compare, checked before any probing; the chosen one first.

    Raises:
        UserError: an unknown card, ``--gpu-mem`` beside several cards, ``--for`` or ``--price``
            naming a card not asked for, or a negative price.
    """
    cards = tuple(get_gpu(name).name for name in options.gpus)
    if len(set(cards)) != len(cards):
        raise UserError(f"--gpu names the same card twice ({', '.join(options.gpus)}): name each card once")
    if options.budgets:
        raise UserError("--gpu-mem sets one budget for every card: with several --gpu, each card's own memory is its "
                        "budget; drop --gpu-mem")
    named = {get_gpu(name).name: name for name in [*options.prices, *([options.plan_for] if options.plan_for else [])]}
    strangers = [given for card, given in named.items() if card not in cards]
    if strangers:
        raise UserError(f"--for/--price name {', '.join(strangers)}, which no --gpu asks for: add --gpu "
                        f"{strangers[0]} or drop it")
    bad = [f"{name}={price:g}" for name, price in options.prices.items() if not 0 <= price < math.inf]
    if bad:
        raise UserError(f"--price {bad[0]} must be a finite price per hour of 0 or more, e.g. --price A100-80G=1.9")
    priced = [get_gpu(name).name for name in options.prices]
    twice = [name for name, card in zip(options.prices, priced, strict=True) if priced.count(card) > 1]
    if twice:
        raise UserError(f"--price names one card twice ({', '.join(twice)}): give each card one price")
    chosen = get_gpu(options.plan_for).name if options.plan_for else cards[0]
    return (chosen, *(card for card in cards if card != chosen))


def compare_cards(options: ProbeOptions, make_plan: Callable[[ProbeOptions], Plan]) -> tuple[Plan, CardComparison]:
    """Plan for every card of ``options.gpus``; write the chosen card's plan and the comparison.

    Args:
        options: the probe's options, with several cards.
        make_plan: plans for one card (``planner.probe.command.make_plan``, given the options of one
            card); its plan is not written.

    Returns:
        The chosen card's plan (written to ``options.output``) and the comparison (written beside it).

    Raises:
        UserError: see :func:`check_cards`, and whatever planning one card raises.
    """
    cards = check_cards(options)
    prices = {get_gpu(name).name: price for name, price in options.prices.items()}
    plans = {card: make_plan(replace(options, gpus=(card,), prices={}, plan_for=None)) for card in cards}
    comparison = CardComparison(chosen=cards[0], cards=[card_plan(plans[card], prices.get(card)) for card in cards])
    save_plan(plans[cards[0]], options.output)
    atomic_write_json(comparison_path(options.output), comparison.to_dict())
    return plans[cards[0]], comparison


def card_plan(plan: Plan, usd_per_hour: float | None) -> CardPlan:
    """One card's plan in short; time and cost count the entries that fit (`planner run` skips the rest)."""
    entries = [CardEntry(name=e.name, accum=e.accum, micro_batch=e.micro_batch, grad_checkpointing=e.grad_checkpointing,
                         fits=e.fits, predicted_peak_bytes=e.predicted_peak_bytes,
                         predicted_total_seconds=e.predicted_time.total_seconds if e.predicted_time else None)
               for e in plan.entries]
    fitting = [e.predicted_total_seconds for e in entries if e.fits]
    total = sum(fitting) if fitting and None not in fitting else None
    cost = round(total / 3600 * usd_per_hour, 2) if total is not None and usd_per_hour is not None else None
    return CardPlan(gpu=plan.timing.gpu if plan.timing and plan.timing.gpu else "?", budget_bytes=plan.budget_bytes,
                    entries=entries, misfits=sum(not e.fits for e in entries), total_seconds=total,
                    usd_per_hour=usd_per_hour, cost_usd=cost)

