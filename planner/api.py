"""planner in Python, for notebooks: the commands' cores and their options records, returning records.

Each function is what a command calls, without printing: ``make_plan`` (`planner probe`) returns the
written :class:`~planner.base.plan.Plan`, ``compare_plans`` (several ``--gpu``) the plan and the
comparison, ``run_plan`` (`planner run`) a ``RunResult`` holding run.json's record, ``tune_weights``
(`planner tune-weights`) a ``TuneResult`` with every method's scores and the chosen weights, ``predict``
(`planner predict`) a ``PredictResult`` with the probabilities; ``run_plan(..., reporter=LineReporter(print))``
shows a run's progress as run.log records it. Mistakes raise :class:`~planner.base.errors.UserError` with
the same one-line message the command prints.
docs/python-api.md has the demo's three steps as a notebook would run them.
"""

from planner.base.entries import single_entry
from planner.base.errors import UserError
from planner.base.plan import load_plan
from planner.base.runfile import load_run
from planner.demo import write_digits
from planner.ensemble.options import TuneOptions
from planner.ensemble.record import load_weights
from planner.ensemble.tune import tune_weights
from planner.probe.command import compare_plans, make_plan
from planner.probe.options import ProbeOptions
from planner_trainer.options import PredictOptions, RunOptions
from planner_trainer.predict import predict
from planner_trainer.progress import LineReporter
from planner_trainer.run import run_plan
from planner_trainer.saved_model import load_model

__all__ = [
    "LineReporter", "PredictOptions", "ProbeOptions", "RunOptions", "TuneOptions", "UserError", "compare_plans",
    "load_model", "load_plan", "load_run", "load_weights", "make_plan", "predict", "run_plan", "single_entry",
    "tune_weights", "write_digits",
]
