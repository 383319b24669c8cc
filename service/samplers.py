"""Samplers regtune adds to Optuna's: TPE with a fixed share of random proposals.

TPE exploits what it has seen: after an unlucky start-up it can keep proposing around a poor
plateau (docs/benchmarks.md, "Sampler regret"). `RandomShareSampler` hands a fixed, evenly spaced
share of the trials to a random sampler, so the search keeps looking everywhere at a known cost.

Which trials are random depends only on the trial number (trial n is random when
``floor((n + 1) * share) > floor(n * share)``), not on a sampler's state: several workers sharing
one study, each rebuilding its sampler per trial, agree on it, and a study with a seed repeats it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

__all__ = ["MAX_RANDOM_SHARE", "RandomShareSampler", "is_random_trial"]

MAX_RANDOM_SHARE = 0.5
"""Above half the trials, the search is mostly random: ask for the random sampler instead."""


def is_random_trial(number: int, share: float) -> bool:
    """Whether trial `number` (0-based) is one of the `share` of trials proposed at random.

    Evenly spaced: a share of 0.2 makes trials 4, 9, 14, ... random; in any run of trials the
    count of random ones is within one of `share` times its length.
    """
    return math.floor((number + 1) * share) > math.floor(number * share)


class RandomShareSampler(BaseSampler):
    """`base` proposes every trial except a `share` of them, which a random sampler proposes.

    Every hook is forwarded to `base` (TPE's constant liar, constraints and multi-objective
    support work as without the wrapper); a random trial samples every parameter
    independently at random and `base` learns from its result like from any other trial.
    """

    def __init__(self, base: BaseSampler, share: float, seed: int | None = None) -> None:
        if not 0.0 <= share <= MAX_RANDOM_SHARE:
            raise ValueError(f"random_share must be between 0 and {MAX_RANDOM_SHARE}, got {share}")
        self.base = base
        self.share = share
        self._random = RandomSampler(seed=seed)

    def _is_random(self, trial: FrozenTrial) -> bool:
        return is_random_trial(trial.number, self.share)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if self._is_random(trial):
            return {}
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if self._is_random(trial):
            return {}
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        sampler = self._random if self._is_random(trial) else self.base
        return sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)
        self._random.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.base.after_trial(study, trial, state, values)
        self._random.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self._random.reseed_rng()
