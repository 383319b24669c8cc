"""Trainer registry: named factories discovered through the `regtune.trainers` entry points.

A trainer plugin is any installed distribution that declares, in its ``pyproject.toml``::

    [project.entry-points."regtune.trainers"]
    my-model = "my_package.regtune_plugin:TRAINER"

where ``TRAINER`` is a `Trainer` instance. Names are looked up in this registry only: nothing
named by a request is ever imported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel

from trainers.params import RegularizationParams

ENTRY_POINT_GROUP = "regtune.trainers"
log = logging.getLogger(__name__)


class UnknownTrainerError(LookupError):
    """Raised when a trainer name is not registered."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown trainer {name!r}; registered trainers: {', '.join(known)}")
        self.name = name
        self.known = known


# build(params, config) -> (LightningModule, LightningDataModule); either Lightning namespace.
BuildFn = Callable[[RegularizationParams, Any], tuple[Any, Any]]


@dataclass(frozen=True)
class Trainer:
    """A named trainer: a config schema and a factory.

    Attributes:
        name: registry name (lower-case, digits and dashes), e.g. ``digits-mlp``.
        description: one line shown by ``GET /api/v1/trainers``.
        config_model: pydantic model validating the study's ``trainer_config``.
        build: ``build(params, config) -> (LightningModule, LightningDataModule)``. The module must
            log ``val_loss`` (and whatever metric a study optimizes) once per epoch. Modules may
            subclass ``lightning.pytorch`` or ``pytorch_lightning``; the objective drives each with
            the matching Trainer.
        metrics: metric names the module logs per epoch (a study's objective must be one of them).
    """

    name: str
    description: str
    config_model: type[BaseModel]
    build: BuildFn
    metrics: tuple[str, ...] = ("val_loss", "val_acc")
    tags: tuple[str, ...] = field(default=())

    def validate_config(self, config: dict[str, Any] | None) -> BaseModel:
        """Validate a study's ``trainer_config`` (raises ``pydantic.ValidationError``)."""
        return self.config_model.model_validate(config or {})

    def config_schema(self) -> dict[str, Any]:
        return self.config_model.model_json_schema()


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


def get_trainer(name: str) -> Trainer:
    """The trainer registered under `name`; raises `UnknownTrainerError`."""
    trainers = available_trainers()
    try:
        return trainers[name]
    except KeyError:
        raise UnknownTrainerError(name, sorted(trainers)) from None
