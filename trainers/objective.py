"""The Optuna objective: sample regularization, train one Lightning module, return its best epoch.

CONTRACT (used by the service; keep these names and signatures):

- `ObjectiveSpec`: what a study asks for (trainer name + config, search space, metric, direction).
- `TrialObserver`: optional callbacks the caller passes to see a trial as it runs (the service
  stores per-epoch metrics through it and uses `should_stop` to cancel).
- `run_trial(trial, spec, observer)` -> `TrialOutcome`; raises `optuna.TrialPruned` when the
  pruner prunes (its subclass `TrialCancelled` when `observer.should_stop()` said so), raises
  `TrialDiverged` (a RuntimeError) when a loss becomes NaN/inf, and lets any other trainer
  exception propagate (Optuna records FAIL).
- `make_objective(spec, observer_factory)` -> a callable for `study.optimize`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna

from trainers.params import RegularizationParams
from trainers.space import Direction, SearchSpace


class TrialCancelled(optuna.TrialPruned):
    """The study was cancelled: the trial stopped at an epoch boundary (recorded PRUNED)."""


class TrialDiverged(RuntimeError):
    """Training produced a non-finite loss; the trial is recorded FAIL with this message."""


@dataclass(frozen=True)
class ObjectiveSpec:
    trainer: str
    trainer_config: dict[str, Any] = field(default_factory=dict)
    search_space: SearchSpace = field(default_factory=SearchSpace)
    metric: str = "val_loss"
    direction: Direction = "minimize"
    # "cpu", "gpu" or "auto" (Lightning accelerator); the worker sets CUDA_VISIBLE_DEVICES.
    accelerator: str = "cpu"


@dataclass
class EpochRecord:
    epoch: int  # 0-based
    metrics: dict[str, float]


@dataclass
class TrialOutcome:
    params: RegularizationParams
    value: float  # the objective metric at the best epoch (not the last)
    best_epoch: int
    epochs_run: int
    history: list[EpochRecord]
    best_metrics: dict[str, float]  # every logged metric at the best epoch
    test_metrics: dict[str, float] | None = None  # best-epoch weights on the test split, if any


class TrialObserver(Protocol):
    def on_start(self, trial: optuna.trial.BaseTrial, params: RegularizationParams) -> None: ...

    def on_epoch(self, trial: optuna.trial.BaseTrial, record: EpochRecord) -> None: ...

    def should_stop(self) -> bool: ...


def run_trial(
    trial: optuna.trial.BaseTrial,
    spec: ObjectiveSpec,
    observer: TrialObserver | None = None,
) -> TrialOutcome:
    raise NotImplementedError


def make_objective(
    spec: ObjectiveSpec,
    observer_factory: Callable[[], TrialObserver | None] | None = None,
) -> Callable[[optuna.Trial], float]:
    raise NotImplementedError
