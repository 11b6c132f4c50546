"""What a person reads: the rich table of every method's scores and a PNG of weights and the study.

The table is a rich ``Table`` for the command to print; the PNG is drawn with matplotlib's
object API (``Figure``, Agg canvas), so no pyplot state or display is touched.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich import box
from rich.table import Table

from planner.base.atomic import atomic_write
from planner.ensemble.methods import SINGLE

if TYPE_CHECKING:
    from planner.ensemble.results import MethodResult, TuneResult
    from planner.ensemble.study import StudyResult


def scores_table(result: TuneResult) -> Table:
    """One row per method: in-sample log loss and error rate, cross-fitted ("cv") log loss and gains.

    Single models come first (named by entry), then the combinations. Gains are positive when the
    method beats the plain average (lower log loss; lower error rate, in points). The cross-fitted
    error rates themselves are in weights.json.

    Args:
        result: what tune-weights found.

    Returns:
        A rich table; the chosen method's row is bold.
    """
    table = Table(
        title=f"{len(result.names)} models, {result.rows} held-out rows, {result.folds}-fold cross-fit, ± se",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("method", overflow="fold")
    for header in ("log loss", "err %", "cv log loss", "cv gain", "cv err gain"):
        table.add_column(header, justify="right", no_wrap=True)
    for row, method in enumerate(result.methods):
        honest = method.crossfit
        table.add_row(
            method.name.removeprefix(SINGLE),
            f"{method.log_loss:.4f}",
            f"{100 * method.error_rate:.2f}",
            f"{honest.log_loss.mean:.4f}±{honest.log_loss.se:.4f}",
            f"{honest.log_loss_gain.mean:+.4f}±{honest.log_loss_gain.se:.4f}",
            f"{100 * honest.error_rate_gain.mean:+.2f}±{100 * honest.error_rate_gain.se:.2f}",
            style="bold" if method.name == result.chosen else None,
            end_section=row == len(result.names) - 1,
        )
    return table


def write_png(
    path: Path, names: tuple[str, ...], methods: tuple[MethodResult, ...], study: StudyResult
) -> Path:
    """Draw the weights of each combining method and the Optuna study's best value so far.

    Args:
        path: where to write the PNG (atomically).
        names: entry names, in model order.
        methods: every method's result; single models are left out of the bar chart.
        study: the Optuna study's history.

    Returns:
        The path written.
    """
    from matplotlib.figure import Figure

    shown = [method for method in methods if not method.name.startswith(SINGLE)]
    figure = Figure(figsize=(12, 4.5), layout="constrained")
    bars, history = figure.subplots(1, 2, width_ratios=(3, 2))
    models = len(names)
    width = 0.8 / len(shown)
    for i, method in enumerate(shown):
        bars.bar(
            np.arange(models) + (i - (len(shown) - 1) / 2) * width, method.weights, width, label=method.name
        )
    bars.set_xticks(np.arange(models), names, rotation=20, ha="right")
    bars.set_ylabel("weight")
    bars.set_title("weights per method (fit on all held-out rows)")
    bars.legend()
    values = np.array(study.history)
    trials = np.arange(1, len(values) + 1)
    history.scatter(trials, values, s=4, alpha=0.3, label="trial")
    history.plot(trials, np.minimum.accumulate(values), color="C1", label="best so far")
    slsqp = next((method.log_loss for method in methods if method.name == "slsqp"), None)
    if slsqp is not None:
        history.axhline(slsqp, color="C2", linestyle="--", label="SLSQP optimum")
    history.set_ylim(top=float(np.quantile(values, 0.9)) if len(values) > 5 else None)
    history.set_xlabel("trial")
    history.set_ylabel("held-out log loss")
    history.set_title(f"Optuna study {study.study_name!r}")
    history.legend()
    buffer = BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))
