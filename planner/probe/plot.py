"""The plan as a picture: per entry, predicted peak memory against micro-batch with the budget, and the
predicted epoch time of each candidate micro-batch.

Reads only a :class:`planner.base.plan.Plan`; memory comes from each entry's fitted curve and probes, times
from the probes' ``predicted_times`` (``planner.probe.epochtime.step_times_at`` for candidates not probed).
"""

from __future__ import annotations

import math
from pathlib import Path

from planner.base.plan import Plan, PlanEntry, accum_for, batch_divisors
from planner.probe.epochtime import entry_time, step_times_at
from planner.probe.hosttime import host_bound

GIB = 2**30


def plot_plan(plan: Plan, path: str | Path) -> Path:
    """Draw every entry of ``plan`` into one PNG at ``path`` and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(plan.entries)) or 1
    rows = math.ceil(len(plan.entries) / columns) or 1
    figure, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 3.8 * rows), squeeze=False)
    for axis, entry in zip(axes.flat, plan.entries, strict=False):
        _entry_panel(axis, entry, plan)
    for axis in list(axes.flat)[len(plan.entries):]:
        axis.axis("off")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def _candidates(plan: Plan, entry: PlanEntry) -> list[int]:
    sizes = batch_divisors(plan.effective_batch_size)
    return [size for size in sizes if size > 1] or sizes


def _entry_panel(axis, entry: PlanEntry, plan: Plan) -> None:
    candidates = _candidates(plan, entry)
    if entry.curve is not None:
        axis.plot(candidates, [entry.curve.predict(size) / GIB for size in candidates], "-", color="tab:blue",
                  label="predicted peak")
    probed = [p for p in entry.probes if not p.oom and p.peak_bytes is not None]
    axis.plot([p.micro_batch for p in probed], [p.peak_bytes / GIB for p in probed], "o", color="tab:blue",
              label="probes")
    axis.axhline(plan.budget_bytes / GIB, color="tab:red", label="budget")
    axis.axhline(plan.budget_bytes * (1 - plan.margin) / GIB, color="tab:red", linestyle=":", label="budget − margin")
    axis.axvline(entry.micro_batch, color="gray", linestyle="--", linewidth=1)
    axis.set_xscale("log", base=2)
    axis.set_xticks(candidates, [str(size) for size in candidates])
    axis.set_xlabel("micro-batch")
    axis.set_ylabel("GiB")
    axis.set_title(entry.name, fontsize=9)
    same = [other for other in plan.entries if (other.arch, other.size) == (entry.arch, entry.size)]
    timed = [(p.micro_batch, p.predicted_times) for other in same for p in other.probes  # shared curves
             if p.predicted_times is not None]
    if timed and plan.timing is not None:
        twin = axis.twinx()
        host = host_bound(next((p.host_work for p in entry.probes if p.host_work), None), plan.timing)
        minutes = [entry_time({"device": step_times_at(timed, size), **host}, size,
                              accum_for(plan.effective_batch_size, size), plan.timing).epoch_seconds / 60
                   for size in candidates]
        twin.plot(candidates, minutes, "s--", color="tab:green", label=f"epoch ({plan.timing.gpu})")
        twin.set_ylabel("predicted minutes per epoch")
        twin.set_ylim(bottom=0)
        twin.legend(loc="lower right", fontsize=7)
    axis.legend(loc="upper left", fontsize=7)
