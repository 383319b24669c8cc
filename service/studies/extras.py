"""Extra runs of a study beyond its search budget: the reference run and confirmation repeats.

Pure planning over the stored spec (a dict, as `regtune_studies.spec` holds it) and the study's
completed search trials; the worker repository claims the runs in plan order, one slot each
(slots ``n_trials .. n_trials + len(plan) - 1``), once every search trial has finished.

- Reference run (spec ``reference``, default on): the single-run best search trial's config
  with regularization off (weight decay, L1, dropout, label smoothing 0; no early stopping:
  patience = the study's ``max_epochs``, and the worker reports the epoch training ended
  with), the same batch size and the same training seed, so it differs from the tuned best in
  the regularization alone.
- Confirmation (spec ``confirm: {top_k, repeats}``): the ``top_k`` best search trials re-trained
  ``repeats`` times each with new seeds, repeat by repeat (every config's first repeat before
  any second one), so a study cut short by its deadline has repeats spread evenly.
- Racing (``confirm.race: true``): the same rounds, but round ``r + 1`` is planned only once
  every run of rounds ``0..r`` has finished, and holds only the configurations
  `service.studies.confirmation.race_survivors` keeps (a configuration clearly behind the
  leader is not re-trained again). Until a round is decided the plan ends before it, and
  `ExtraPlan.total` counts the undecided rounds at the current survivors (an upper bound that
  only falls).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.models import TrialRole
from service.studies.confirmation import ConfigRuns, race_survivors
from trainers import get_trainer
from trainers.params import PARAM_NAMES, RegularizationParams
from trainers.space import Choices, Fixed, Range, SearchSpace

__all__ = [
    "REGULARIZATION_OFF",
    "ExtraPlan",
    "ExtraRun",
    "SearchRun",
    "confirm_seed",
    "plan_extras",
    "races",
    "reference_params",
    "reference_space",
]

# Optuna user attributes of extra trials (also `train_seed`, which the trainer reads)
ROLE_ATTR = "regtune:role"
REPEAT_OF_ATTR = "regtune:repeat_of"
SLOT_ATTR = "regtune:slot"

_SEED_MODULUS = 2**31 - 1
# regularization off: these parameters are 0 in the reference run
REGULARIZATION_OFF = ("weight_decay", "l1", "dropout", "label_smoothing")
_DEFAULTS = RegularizationParams()


@dataclass(frozen=True)
class SearchRun:
    """A completed search trial as the plan needs it."""

    number: int
    value: float
    params: Mapping[str, Any]
    train_seed: int | None


@dataclass(frozen=True)
class ExtraRun:
    role: TrialRole
    params: dict[str, Any]  # the six regularization parameters it trains with
    train_seed: int | None  # None: the trainer derives it from the trial number
    repeat_of: int | None  # confirm: the repeated search trial's number

    def user_attrs(self, slot: int) -> dict[str, Any]:
        attrs: dict[str, Any] = {ROLE_ATTR: self.role.value, SLOT_ATTR: slot}
        if self.train_seed is not None:
            attrs["train_seed"] = self.train_seed
        if self.repeat_of is not None:
            attrs[REPEAT_OF_ATTR] = self.repeat_of
        return attrs


@dataclass(frozen=True)
class ExtraPlan:
    """The extra runs decided so far, in claim order, and how many the study will have at most
    (more than ``len(runs)`` only while a race has undecided rounds)."""

    runs: list[ExtraRun]
    total: int


def _confirm_settings(spec: Mapping[str, Any]) -> tuple[int, int, bool]:
    confirm = spec.get("confirm") or {}
    return (
        int(confirm.get("top_k", 0) or 0),
        int(confirm.get("repeats", 0) or 0),
        bool(confirm.get("race", False)),
    )


def races(spec: Mapping[str, Any]) -> bool:
    """The spec races its confirmation (``confirm.race``): only then does the plan read the
    finished repeats."""
    return _confirm_settings(spec)[2]


def _reference_on(spec: Mapping[str, Any]) -> bool:
    return bool(spec.get("reference", True))


def max_patience(space: SearchSpace) -> int:
    """The largest patience the search space allows (its default when not given)."""
    spec = space.patience
    if isinstance(spec, Fixed):
        return int(spec.fixed)
    if isinstance(spec, Range):
        return int(spec.high)
    if isinstance(spec, Choices):
        return int(max(spec.choices))
    return _DEFAULTS.patience


def max_epochs(spec: Mapping[str, Any]) -> int | None:
    """The study's ``max_epochs`` (its trainer config's, or the trainer's default); None when
    the trainer has no such field."""
    config = get_trainer(str(spec["trainer"])).validate_config(spec.get("trainer_config"))
    value = getattr(config, "max_epochs", None)
    return int(value) if isinstance(value, int) else None


def reference_params(
    space: SearchSpace, best: Mapping[str, Any], epochs: int | None = None
) -> dict[str, Any]:
    """The reference run's parameters: `best`'s config with regularization off; its patience is
    `epochs` (the study's max_epochs: no early stopping), else the largest the space allows."""
    params = {name: best.get(name, getattr(_DEFAULTS, name)) for name in PARAM_NAMES}
    for name in REGULARIZATION_OFF:
        params[name] = 0.0
    params["patience"] = epochs if epochs is not None else max_patience(space)
    if params.get("batch_size") is None:
        params["batch_size"] = _DEFAULTS.batch_size
    return params


def reference_space(params: Mapping[str, Any]) -> SearchSpace:
    """A search space fixing every parameter to `params` (the reference run samples nothing)."""
    return SearchSpace.model_validate({name: {"fixed": params[name]} for name in PARAM_NAMES})


def confirm_seed(base: int, repeat: int) -> int:
    """The training seed of repeat `repeat` (0-based) of a run trained with seed `base`."""
    return (base + 1_000_003 * (repeat + 1)) % _SEED_MODULUS


def plan_extras(
    spec: Mapping[str, Any],
    ranked: Sequence[SearchRun],
    space: SearchSpace,
    confirmed: Mapping[int, Sequence[float]] | None = None,
    *,
    maximize: bool = False,
) -> ExtraPlan:
    """The extra runs in claim order; `ranked`: complete search trials, best first.

    `confirmed` (racing only): the values of each repeated trial's finished confirmation runs,
    by its number, in repeat order.
    """
    if not ranked:
        return ExtraPlan([], 0)
    runs: list[ExtraRun] = []
    if _reference_on(spec):
        best = ranked[0]
        runs.append(
            ExtraRun(
                TrialRole.reference,
                reference_params(space, best.params, max_epochs(spec)),
                best.train_seed,
                None,
            )
        )
    top_k, repeats, race = _confirm_settings(spec)
    alive = list(ranked[:top_k])
    done = confirmed or {}
    for repeat in range(repeats):
        runs.extend(_repeat(run, repeat) for run in alive)
        if not race or repeat == repeats - 1:
            continue
        if any(len(done.get(run.number, ())) <= repeat for run in alive):
            # this round is still running: the next ones are undecided, at most all survivors
            return ExtraPlan(runs, len(runs) + (repeats - 1 - repeat) * len(alive))
        kept = race_survivors(
            [ConfigRuns(run.number, [run.value, *done[run.number][: repeat + 1]]) for run in alive],
            maximize,
        )
        numbers = {config.trial_number for config in kept}
        alive = [run for run in alive if run.number in numbers]
    return ExtraPlan(runs, len(runs))


def _repeat(run: SearchRun, repeat: int) -> ExtraRun:
    base = run.train_seed if run.train_seed is not None else run.number
    return ExtraRun(
        TrialRole.confirm,
        {name: run.params.get(name) for name in PARAM_NAMES},
        confirm_seed(base, repeat),
        run.number,
    )
