"""A seed outside numpy's range is refused in one line by the options of run and tune-weights, before
any work (numpy raised it as a traceback once the split or the folds were drawn); its ends are accepted,
and a study seeded at the top end runs (its per-trial seeds wrap instead of leaving the range)."""

from __future__ import annotations

import numpy as np
import pytest

from planner.base.errors import UserError
from planner.base.seeds import MAX_SEED
from planner.ensemble.options import TuneOptions
from planner.ensemble.study import SAMPLERS, run_study
from planner_trainer.options import RunOptions


@pytest.mark.parametrize("options", [RunOptions, TuneOptions])
@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1])
def test_a_seed_out_of_range_is_refused_naming_the_range(options: type, seed: int) -> None:
    with pytest.raises(UserError, match=rf"^--seed {seed} must be between 0 and 4294967295, e\.g\. 42$"):
        options(seed=seed)


@pytest.mark.parametrize("options", [RunOptions, TuneOptions])
def test_the_ends_of_the_range_are_seeds(options: type) -> None:
    assert [options(seed=seed).seed for seed in (0, MAX_SEED)] == [0, MAX_SEED]


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_a_study_seeded_at_the_top_of_the_range_runs_its_trials(sampler: str) -> None:
    p_true = np.random.default_rng(0).uniform(0.2, 0.9, size=(2, 40))
    assert run_study(p_true, ("a", "b"), trials=4, sampler=sampler, seed=MAX_SEED).completed == 4
