"""One CUDA allocator configuration for the probe and the run: decided once, set before CUDA starts,
recorded with the peaks.

torch's caching allocator reads ``PYTORCH_CUDA_ALLOC_CONF`` once, when it is first used in a process
(in practice: when CUDA starts there), and what it says changes reserved memory, which decides
out-of-memory. A plan's peaks therefore hold for a run only when both ran with the same setting, so
the cuda meter, `planner run` (its local tries, and every Ray task in its own worker) and the records
all go through this module:

- :func:`choose_allocator` decides: the user's own setting when the environment has one
  (``PYTORCH_CUDA_ALLOC_CONF``, or torch's newer ``PYTORCH_ALLOC_CONF``; an empty value asks for
  torch's defaults), which planner never overrides; otherwise :data:`DEFAULT_ALLOC_CONF`;
- :func:`use_allocator` applies a decision to this process before CUDA starts (processes started from
  it inherit it); once CUDA has started, the configuration can no longer change, and the one in
  force is returned as it is;
- :func:`allocator_in_force` says what this process's allocator uses (or will use), as
  :class:`~planner.base.plan.AllocatorConfig`: plan.json's ``measured_on.allocator`` and run.json's
  ``memory.allocator`` record it.

Why ``expandable_segments:True`` by default. The project's recorded GPU session (an H100,
``benchmarks/results/gpu_h100/``, RESULTS.md "GPU") ran with torch's defaults and showed what this
setting addresses: reserved over allocated memory from 1.04 to 1.27, and the cuda meter's short
probe 11 to 16 % under a whole run, because reserved memory grows as new shapes and phases arrive and
blocks of separate segments never merge. Expandable segments grow one mapped segment instead of
adding segments, which removes that dependence on the order of allocations (so that a probe and a
run fragment alike) at the cost of rounding segments to 2 MiB pages (20 MiB for large blocks);
reductions of reserved memory of 10 to 34 % are reported elsewhere (torchtune issue 1185). Nothing
recorded argues for torch's defaults. Not yet measured with this project on a GPU: the probe's and a
run's peaks under both settings are what the next GPU session is to compare. The estimate meter
replays torch's native allocator (``planner.probe.meters.allocator``), which is expected to reserve
at least what expandable segments do: a safe side, also to be measured.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

from planner.base.compat import allocator_settings
from planner.base.plan import AllocatorConfig

ALLOC_CONF = "PYTORCH_CUDA_ALLOC_CONF"
"""The variable planner sets; torch's CUDA allocator reads it before :data:`GENERIC_ALLOC_CONF`."""
GENERIC_ALLOC_CONF = "PYTORCH_ALLOC_CONF"
"""torch's newer name for the same setting (torch 2.9 on), read when the CUDA one is not set."""
SET_BY_PLANNER = "PLANNER_SET_ALLOC_CONF"
"""Holds the value planner set, so that a process started from this one (a local Ray worker) tells
planner's setting from the user's."""
DEFAULT_ALLOC_CONF = "expandable_segments:True"
"""planner's setting when the user has none (see the module docstring for why)."""


def environment_setting(environ: Mapping[str, str]) -> str | None:
    """The allocator setting ``environ`` holds, as torch's CUDA allocator reads it (the CUDA variable
    first), or None when it holds none."""
    return environ.get(ALLOC_CONF, environ.get(GENERIC_ALLOC_CONF))


def choose_allocator(environ: Mapping[str, str] | None = None) -> AllocatorConfig:
    """planner's one decision: the user's own setting when ``environ`` has one, else the default.

    Args:
        environ: the environment to decide from; None: this process's.

    Returns:
        The configuration to use; ``source`` says whose it is (``user`` or ``planner``).
    """
    environ = os.environ if environ is None else environ
    setting = environment_setting(environ)
    if setting is None or setting == environ.get(SET_BY_PLANNER):  # nothing, or planner's own, inherited
        return AllocatorConfig(conf=DEFAULT_ALLOC_CONF, source="planner")
    return AllocatorConfig(conf=setting, source="user")


def set_allocator(environ: MutableMapping[str, str], choice: AllocatorConfig) -> None:
    """Write ``choice`` into ``environ``: the variable (removed for torch's defaults) and the mark that
    tells planner's setting from the user's."""
    if choice.source == "torch":
        environ.pop(ALLOC_CONF, None)
    else:
        environ[ALLOC_CONF] = choice.conf
    if choice.source == "planner":
        environ[SET_BY_PLANNER] = choice.conf
    else:
        environ.pop(SET_BY_PLANNER, None)


def use_allocator(choice: AllocatorConfig | None = None) -> AllocatorConfig:
    """Apply ``choice`` to this process, if CUDA has not started in it yet, and say what is in force.

    Call it before anything in the process touches CUDA (a device's name or memory, a tensor, fastai's
    set-up): torch reads the setting once. Calling it again is harmless.

    Args:
        choice: the decision to apply, e.g. the run driver's for a Ray task; None: :func:`choose_allocator`
            in this process.

    Returns:
        The configuration in force: ``choice``, unless CUDA had started before (then whatever torch
        read when it started, recorded as it is).
    """
    import torch

    if not torch.cuda.is_initialized():
        set_allocator(os.environ, choice or choose_allocator())
    return allocator_in_force()


def allocator_in_force() -> AllocatorConfig:
    """The configuration this process's CUDA allocator uses, or will use when CUDA starts: what torch
    parsed once CUDA has started (where torch can tell), else what the environment holds."""
    import torch

    setting = environment_setting(os.environ)
    if torch.cuda.is_initialized():
        parsed = allocator_settings()
        if parsed is not None and parsed != (setting or ""):
            setting = parsed or None
    if setting is None:
        return AllocatorConfig(conf="", source="torch")
    return AllocatorConfig(conf=setting, source="planner" if setting == os.environ.get(SET_BY_PLANNER) else "user")


def same_allocator(first: AllocatorConfig, second: AllocatorConfig) -> bool:
    """Whether two configurations set the same options (order and spaces aside; who set them aside)."""
    def options(conf: str) -> set[str]:
        return {option.replace(" ", "") for option in conf.split(",") if option.strip()}

    return options(first.conf) == options(second.conf)


def describe_allocator(config: AllocatorConfig) -> str:
    """A short text for a notice, e.g. ``expandable_segments:True (planner's default)``."""
    conf = f"{ALLOC_CONF}={config.conf}" if config.conf else "torch's defaults"
    whose = {"planner": "planner's default", "user": "set in the environment",
             "torch": "CUDA had started before planner could set its default"}[config.source]
    return f"{conf} ({whose})"
