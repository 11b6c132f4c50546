"""The meter interface: what the search asks of every way of measuring a training step's memory.

A meter is chosen by name (`cuda`, `cpu`, `estimate`) from a registry (``PROBE_METERS``); the search
never asks which one it holds, and passes the card size to each measurement (``cap_bytes``). Every
peak a meter returns is in the units the budget is compared with: for `cuda` the whole card
(reserved peak + what torch does not see), for `cpu` live tensor bytes, for `estimate` fake-tensor
bytes plus a model of what a CUDA device adds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from planner.base.entries import EntrySpec
from planner.base.plan import MeasuredOn, ProbePoint
from planner.base.registry import Registry


class DoesNotFit(Exception):
    """A step at this micro-batch ran out of memory under the cap; the meter has released it cleanly.

    Attributes:
        micro_batch: the micro-batch that did not fit.
        seconds: how long the try took (the probe reports it).
    """

    def __init__(self, micro_batch: int, seconds: float) -> None:
        super().__init__(f"micro-batch {micro_batch} does not fit")
        self.micro_batch = micro_batch
        self.seconds = seconds


class ProbeMeter(ABC):
    """Measures the peak memory of real (or fake) training steps at one micro-batch.

    (The trainer's meters, which watch a whole training, are ``planner_trainer.memory.RunMeter``.)

    Args (of every meter's constructor):
        n_classes: the number of classes, which sizes the head.
    """

    name: ClassVar[str]
    cost_grows_with_batch: ClassVar[bool] = True
    """Whether a probe at a larger micro-batch costs more (GPU time, a risk of running out of memory);
    when not (fake steps), the search opens with the largest candidates."""
    probes_apart: ClassVar[bool] = False
    """Whether architectures can be probed in separate worker processes, each on a pickled copy of the
    unused meter: the probes need no device and share nothing between architectures (fake steps)."""

    def __init__(self, n_classes: int = 10):
        self.n_classes = n_classes

    @abstractmethod
    def measured_on(self) -> MeasuredOn:
        """Describe the device and precision; called once, for the plan's header."""

    def remembers(self, entry: EntrySpec, micro_batch: int) -> bool:
        """Whether :meth:`measure` would answer from an earlier identical probe, without a new step."""
        return False

    @abstractmethod
    def measure(self, entry: EntrySpec, micro_batch: int, cap_bytes: int | None = None) -> ProbePoint:
        """Run at least two optimizer steps of ``entry`` at ``micro_batch`` and report the peaks.

        Called by the search once per probe, entries of one architecture one after the other, so
        a meter may keep the model of the last architecture.

        Args:
            entry: the architecture, size and checkpointing to measure.
            micro_batch: the batch of one forward/backward pass.
            cap_bytes: the card the step must fit. A meter that emulates a card of this size (cuda:
                its allocator capped at the card minus the context; cpu made with
                ``emulate_cap=True``: its tracker) fails above it; the estimate meter predicts and
                ignores it. None: measure what the step needs, however much (asked once for an entry
                whose smallest micro-batch did not fit).

        Returns:
            The peaks, in the units the budget is compared with.

        Raises:
            DoesNotFit: the step ran out of memory under ``cap_bytes``; the meter has released the
                step's memory, so the next call starts clean.
            CheckpointingUnsupported: ``entry.grad_checkpointing`` for a model timm cannot checkpoint.
        """

    @abstractmethod
    def has_batchnorm(self, entry: EntrySpec) -> bool:
        """True when the model trains BatchNorm layers (then micro-batch 1 is never a candidate)."""

    def body_has_batchnorm(self, entry: EntrySpec) -> bool:
        """True when the timm body (not fastai's head, which always has one) has BatchNorm layers:
        it sets the smallest micro-batch worth training without checkpointing. By default the
        architecture is built on the ``meta`` device to look; a meter that holds the model answers
        from it."""
        from planner.probe.meters.fastai_steps import model_has_batchnorm

        return model_has_batchnorm(entry.arch, self.n_classes, body_only=True)

    def close(self) -> None:  # noqa: B027 - optional hook with nothing to do by default
        """Release models and memory; called once when probing ends."""


PROBE_METERS: Registry[type[ProbeMeter]] = Registry("probe meter")


def get_meter(name: str, **options) -> ProbeMeter:
    """Build the meter registered as ``name`` with the given constructor options.

    Raises:
        KeyError: no meter has that name.
    """
    return PROBE_METERS.get(name)(**options)
