"""regtune trainers: regularized Lightning training and the Optuna objective.

Never imports `service` (the service depends on this package, not the other way round).
"""

from trainers.objective import (
    EpochRecord,
    ObjectiveSpec,
    TrialCancelled,
    TrialDiverged,
    TrialObserver,
    TrialOutcome,
    make_objective,
    run_trial,
)
from trainers.params import PARAM_NAMES, RegularizationParams
from trainers.registry import Trainer, UnknownTrainerError, available_trainers, get_trainer
from trainers.space import Choices, Fixed, Range, SearchSpace

__all__ = [
    "PARAM_NAMES",
    "Choices",
    "EpochRecord",
    "Fixed",
    "ObjectiveSpec",
    "Range",
    "RegularizationParams",
    "SearchSpace",
    "Trainer",
    "TrialCancelled",
    "TrialDiverged",
    "TrialObserver",
    "TrialOutcome",
    "UnknownTrainerError",
    "available_trainers",
    "get_trainer",
    "make_objective",
    "run_trial",
]
