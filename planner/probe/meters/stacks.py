"""A device model per software stack: a few constants, chosen by what the card will run with.

The fake step (:mod:`planner.probe.meters.fake_step`) is the same on every stack; what a card
reserves on top of its replay is not. torch's caching allocator changed between PyTorch 1.12 (timm's
published RTX 3090 runs, 2022) and today's releases, and its configuration (``PYTORCH_CUDA_ALLOC_CONF``,
:mod:`planner.base.allocator`) changes it again. So each stack has its own :class:`DeviceModel`
constants, never per model:

- :data:`PUBLISHED_2022`: fitted on the calibration half of the published brackets; the published
  check keeps it, so that it judges the fake step itself with unchanged numbers;
- :data:`TODAY`: fitted on the calibration half of the published recipe measured on an H100 with
  torch 2.11 and torch's default allocator (``benchmarks/gpu/today_stack_fit.py``); the product plans
  with it.

A stack the built-in table does not hold gets the closest one (same allocator configuration first,
then the same torch major version, then the nearest minor version: torch 2.6 to 2.14 all plan with
today's constants, whose allocator is torch 2's, not 1.12's), and the plan says which; a card that
``planner calibrate`` has calibrated gets its own constants (:mod:`planner.probe.meters.calibration`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from planner.probe.meters.device_model import CALIBRATED_OVERHEAD_BYTES, DeviceModel

MIB = 2**20


def torch_minor(version: str) -> str:
    """``2.11.0+cu130`` -> ``2.11``: the part of torch's version a device model depends on."""
    match = re.match(r"(\d+)\.(\d+)", version)
    return f"{match.group(1)}.{match.group(2)}" if match else version


def allocator_options(conf: str) -> str:
    """An allocator configuration in one spelling: options sorted, spaces dropped ("" = torch's defaults)."""
    return ",".join(sorted(option.replace(" ", "") for option in conf.split(",") if option.strip()))


@dataclass(frozen=True)
class Stack:
    """What a device model's constants depend on.

    Attributes:
        torch: torch's major.minor version.
        allocator: the allocator configuration (:func:`allocator_options`; "" for torch's defaults).
        gpu: the card, as the GPU table names it (or as CUDA does when the table has no such card).
        driver: the NVIDIA driver's version, when known.
        cudnn: cuDNN's version number, when known.
    """

    torch: str
    allocator: str
    gpu: str | None = None
    driver: str | None = None
    cudnn: int | None = None

    def describe(self) -> str:
        allocator = f"PYTORCH_CUDA_ALLOC_CONF={self.allocator}" if self.allocator else "torch's default allocator"
        card = f", {self.gpu}" if self.gpu else ""
        return f"torch {self.torch}, {allocator}{card}"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StackModel:
    """One stack's device model and what it was fitted on.

    Attributes:
        stack: the stack it was fitted on.
        device: its constants.
        fitted_on: a short text for the plan (what was measured, how much).
        points: how many measurements the constants were fitted on.
        errors: the fit's relative errors of card bytes on those (``median``, ``worst_under``), or empty.
        calibrated: True when ``planner calibrate`` fitted it from this user's own measurements.
    """

    stack: Stack
    device: DeviceModel
    fitted_on: str
    points: int
    errors: dict[str, float] = field(default_factory=dict)
    calibrated: bool = False


PUBLISHED_2022 = StackModel(
    Stack(torch="1.12", allocator="", gpu="RTX 3090"), DeviceModel(allocator="caching",
                                                                     overhead_bytes=CALIBRATED_OVERHEAD_BYTES),
    "timm's published RTX 3090 runs (PyTorch 1.12): the calibration half's brackets", 88)
TODAY = StackModel(
    Stack(torch="2.11", allocator="", gpu="H100", driver="580.159.04", cudnn=91900),
    DeviceModel(allocator="reserved", overhead_bytes=19 * MIB, reserved_factor=1.10),
    "the published recipe on an H100 (torch 2.11, torch's default allocator): 11 points of 4 models, "
    "the calibration half of 6", 11, {"median": 0.030, "worst_under": -0.030})
BUILT_IN = (PUBLISHED_2022, TODAY)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


def built_in_model(stack: Stack) -> tuple[StackModel, str | None]:
    """The built-in device model for ``stack``, and a note when it was fitted on another stack.

    Same allocator configuration first, then the same torch major version, then the nearest minor
    version (the older of two as near). The note names what differs, for the plan.
    """
    wanted = _version(stack.torch)

    def closeness(model: StackModel) -> tuple:
        have = _version(model.stack.torch)
        return (model.stack.allocator == stack.allocator, have[:1] == wanted[:1],
                -abs(have[1:2][0] - wanted[1:2][0]) if have[1:] and wanted[1:] else 0, have <= wanted)

    chosen = max(BUILT_IN, key=closeness)
    differs = [what for what, same in (("torch", chosen.stack.torch == stack.torch),
                                       ("the allocator configuration", chosen.stack.allocator == stack.allocator))
               if not same]
    note = None
    if differs:
        note = (f"no device model measured for {stack.describe()}: using the one of {chosen.stack.describe()} "
                f"({' and '.join(differs)} differ)")
    return chosen, note
