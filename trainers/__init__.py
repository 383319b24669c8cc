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
from trainers.presets import PRESETS, Preset, UnknownPresetError, get_preset, preset_names
from trainers.registry import Trainer, UnknownTrainerError, available_trainers, get_trainer
from trainers.space import Choices, Fixed, Range, SearchSpace

__all__ = [
    "PARAM_NAMES",
    "PRESETS",
    "Choices",
    "EpochRecord",
    "Fixed",
    "ObjectiveSpec",
    "Preset",
    "Range",
    "RegularizationParams",
    "SearchSpace",
    "Trainer",
    "TrialCancelled",
    "TrialDiverged",
    "TrialObserver",
    "TrialOutcome",
    "UnknownPresetError",
    "UnknownTrainerError",
    "available_trainers",
    "get_preset",
    "get_trainer",
    "make_objective",
    "preset_names",
    "run_trial",
]
