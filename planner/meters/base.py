"""The meter interface: what the search asks of every way of measuring a training step's memory.

A meter is chosen by name (`cuda`, `cpu`, `estimate`) from a registry; the search never asks which
one it holds. Every peak a meter returns is in the units the budget is compared with: for `cuda`
the whole card (reserved peak + what torch does not see), for `cpu` live tensor bytes, for
`estimate` fake-tensor bytes plus a model of what a CUDA device adds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

from planner.entries import EntrySpec
from planner.plan import MeasuredOn, ProbePoint

PHASE_FORWARD_BACKWARD = "forward_backward"
PHASE_STEP = "step"


class Meter(ABC):
    """Measures the peak memory of real (or fake) training steps at one micro-batch.

    Args (of every meter's constructor):
        budget_bytes: the card size the plan is for; a meter that can emulate it (cuda) caps itself.
        n_classes: the number of classes, which sizes the head.
    """

    name: ClassVar[str]
    cost_grows_with_batch: ClassVar[bool] = True
    """Whether a probe at a larger micro-batch costs more (GPU time, a risk of running out of memory);
    when not (fake steps), the search opens with the largest candidates."""

    def __init__(self, budget_bytes: int, n_classes: int = 10):
        self.budget_bytes = budget_bytes
        self.n_classes = n_classes

    @abstractmethod
    def measured_on(self) -> MeasuredOn:
        """Describe the device and precision; called once, for the plan's header."""

    @abstractmethod
    def measure(self, entry: EntrySpec, micro_batch: int, capped: bool = True) -> ProbePoint:
        """Run at least two optimizer steps of ``entry`` at ``micro_batch`` and report the peaks.

        Called by the search once per probe, entries of one architecture one after the other, so
        a meter may keep the model of the last architecture. Running out of memory is not an error:
        it is released cleanly and returned as ``ProbePoint(oom=True)``. ``capped=False`` is asked
        once for an entry whose smallest micro-batch ran out of memory, to learn the peak it needs:
        a meter that emulates a smaller card then lifts its cap.
        """

    @abstractmethod
    def has_batchnorm(self, entry: EntrySpec) -> bool:
        """True when the model trains BatchNorm layers (then micro-batch 1 is never a candidate)."""

    def body_has_batchnorm(self, entry: EntrySpec) -> bool:
        """True when the timm body (not fastai's head, which always has one) has BatchNorm layers:
        it sets the smallest micro-batch worth training without checkpointing. By default the
        architecture is built on the ``meta`` device to look; a meter that holds the model answers
        from it."""
        from planner.meters.fastai_steps import model_has_batchnorm

        return model_has_batchnorm(entry.arch, self.n_classes, body_only=True)

    def close(self) -> None:  # noqa: B027 - optional hook with nothing to do by default
        """Release models and memory; called once when probing ends."""


_METERS: dict[str, type[Meter]] = {}


def register_meter(name: str) -> Callable[[type[Meter]], type[Meter]]:
    """Class decorator: make a meter available to :func:`get_meter` under ``name``."""

    def register(cls: type[Meter]) -> type[Meter]:
        cls.name = name
        _METERS[name] = cls
        return cls

    return register


def meter_names() -> list[str]:
    return sorted(_METERS)


def get_meter(name: str, **options) -> Meter:
    """Build the meter registered as ``name`` with the given constructor options.

    Raises:
        KeyError: no meter has that name.
    """
    return _METERS[name](**options)
