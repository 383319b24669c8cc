"""Trainer registry: named factories discovered through the `regtune.trainers` entry points.

A trainer plugin is any installed distribution that declares, in its ``pyproject.toml``::

    [project.entry-points."regtune.trainers"]
    my-model = "my_package.regtune_plugin:TRAINER"

where ``TRAINER`` is a `Trainer` instance. Names are looked up in this registry only: nothing
named by a request is ever imported.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel

from trainers.insight import BatchToXY, Insight, LossFn, Task, insight_metrics
from trainers.params import RegularizationParams

ENTRY_POINT_GROUP = "regtune.trainers"
#: The insight cadence when neither the trainer nor the study sets one: every 2nd epoch (the
#: reported epoch gets them after training when skipped; docs/trainers.md).
DEFAULT_INSIGHT_EVERY = 2
log = logging.getLogger(__name__)


class UnknownTrainerError(LookupError):
    """Raised when a trainer name is not registered."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown trainer {name!r}; registered trainers: {', '.join(known)}")
        self.name = name
        self.known = known


# build(params, config) -> (LightningModule, LightningDataModule); either Lightning namespace.
# A build that accepts a keyword `seed` also gets the trial's training seed.
BuildFn = Callable[..., tuple[Any, Any]]


@dataclass(frozen=True)
class Trainer:
    """A named trainer: a config schema and a factory.

    Attributes:
        name: registry name (lower-case, digits and dashes), e.g. ``digits-mlp``.
        description: one line shown by ``GET /api/v1/trainers``.
        config_model: pydantic model validating the study's ``trainer_config``.
        build: ``build(params, config) -> (LightningModule, LightningDataModule)``, or
            ``build(params, config, *, seed)`` to receive the trial's training seed. Modules may
            subclass ``lightning.pytorch`` or ``pytorch_lightning``; the objective drives each
            with the matching Trainer.
        metrics: metric names the module logs per epoch. The names regtune computes itself
            (`trainers.insight.insight_metrics` of ``task``: ``weight_l2`` and
            ``near_zero_frac`` always, ``val_nll``, ``val_acc``, ``val_ece``, ``train_nll``,
            ``train_acc`` and ``gap`` for a classifier) are added; a study's objective must be
            one of the result.
        task: the one declaration: ``"classification"`` (the module's ``forward(x)`` returns
            logits, batches are ``(x, y)``) or ``"regression"`` (``forward(x)`` returns
            predictions scored with ``loss``); None: weight statistics only.
        batch_to_xy: maps a loader's batch to ``(x, y)`` when batches have another shape.
        loss: the regression loss ``loss(pred, y)`` (mean squared error when None).
        insight_every: compute the insight metrics every this many epochs (1: every epoch;
            0: never); None: regtune's default, `DEFAULT_INSIGHT_EVERY` (every epoch for a DDP
            trial). When the study's objective is one of them they are computed every epoch;
            the reported epoch gets them after training when the cadence skipped it.
    """

    name: str
    description: str
    config_model: type[BaseModel]
    build: BuildFn
    metrics: tuple[str, ...] = ("val_loss", "val_acc")
    tags: tuple[str, ...] = field(default=())
    task: Task | None = None
    batch_to_xy: BatchToXY | None = None
    loss: LossFn | None = None
    insight_every: int | None = None

    def __post_init__(self) -> None:
        if self.task not in (None, "classification", "regression"):
            raise ValueError(
                f"trainer {self.name!r}: task must be 'classification', 'regression' or None, "
                f"not {self.task!r}"
            )
        if self.loss is not None and self.task != "regression":
            raise ValueError(f"trainer {self.name!r}: loss= is for task='regression' only")
        every = self.insight_every
        if every is not None and (not isinstance(every, int) or every < 0):
            raise ValueError(f"trainer {self.name!r}: insight_every must be an int >= 0 or None")
        extra = [m for m in insight_metrics(self.task) if m not in self.metrics]
        object.__setattr__(self, "metrics", (*self.metrics, *extra))

    def validate_config(self, config: dict[str, Any] | None) -> BaseModel:
        """Validate a study's ``trainer_config`` (raises ``pydantic.ValidationError``)."""
        return self.config_model.model_validate(config or {})

    def config_schema(self) -> dict[str, Any]:
        return self.config_model.model_json_schema()

    def takes_seed(self) -> bool:
        """Whether ``build`` accepts the training seed as a keyword ``seed``."""
        try:
            parameters = inspect.signature(self.build).parameters
        except (TypeError, ValueError):
            return False
        param = parameters.get("seed")
        return param is not None and param.kind in (
            inspect.Parameter.KEYWORD_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        )

    def build_seeded(
        self, params: RegularizationParams, config: Any, seed: int | None
    ) -> tuple[Any, Any]:
        """``build(params, config)``, passing ``seed=`` when the build accepts it.

        Raises:
            TypeError: the build did not return a ``(module, datamodule)`` pair (naming the
                trainer and what it returned).
        """
        if seed is not None and self.takes_seed():
            built = self.build(params, config, seed=seed)
        else:
            built = self.build(params, config)
        if not isinstance(built, tuple | list) or len(built) != 2:
            got = (
                f"{len(built)} values" if isinstance(built, tuple | list) else type(built).__name__
            )
            raise TypeError(
                f"trainer {self.name!r}: build() must return (LightningModule, "
                f"LightningDataModule), got {got}"
            )
        module, datamodule = built
        return module, datamodule

    def insight(self, every: int | None = None) -> Insight:
        """regtune's per-epoch insight computation for this trainer's modules, at cadence
        ``every`` (None: the trainer's ``insight_every``, else `DEFAULT_INSIGHT_EVERY`)."""
        if every is None:
            every = DEFAULT_INSIGHT_EVERY if self.insight_every is None else self.insight_every
        return Insight(self.task, batch_to_xy=self.batch_to_xy, loss=self.loss, every=every)


def _load() -> dict[str, Trainer]:
    found: dict[str, Trainer] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception:  # a broken plugin must not take the service down
            log.exception("cannot load trainer plugin %r (%s)", ep.name, ep.value)
            continue
        if not isinstance(obj, Trainer):
            log.error("trainer plugin %r (%s) is not a regtune Trainer", ep.name, ep.value)
            continue
        found[ep.name] = obj
    return found


_cache: dict[str, Trainer] | None = None


def available_trainers(*, refresh: bool = False) -> dict[str, Trainer]:
    """All registered trainers by name (entry points are read once, then cached)."""
    global _cache
    if _cache is None or refresh:
        _cache = _load()
    return dict(_cache)


def register_trainer(trainer: Trainer) -> None:
    """Add ``trainer`` to this process's registry (notebooks, tests, benchmarks).

    Only this process sees it: workers and the API know the trainers of installed entry points.
    """
    global _cache
    if _cache is None:
        _cache = _load()
    _cache[trainer.name] = trainer


def get_trainer(name: str) -> Trainer:
    """The trainer registered under `name`; raises `UnknownTrainerError`."""
    trainers = available_trainers()
    try:
        return trainers[name]
    except KeyError:
        raise UnknownTrainerError(name, sorted(trainers)) from None
