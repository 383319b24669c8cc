"""The two Lightning namespaces, and the per-epoch callback built for each.

``lightning.pytorch`` (package ``lightning``) and ``pytorch_lightning`` (package
``pytorch-lightning``) define distinct classes: a ``pytorch_lightning`` module cannot be fitted by
a ``lightning.pytorch`` Trainer nor carry its callbacks. The objective finds which namespace a
trainer's module belongs to and builds the Trainer and callbacks from that same namespace.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any, Protocol

_NAMESPACES = ("lightning.pytorch", "pytorch_lightning")
_callback_classes: dict[str, type] = {}


def _import(name: str) -> ModuleType | None:
    try:
        return __import__(name, fromlist=["LightningModule"])
    except ImportError:
        return None


def namespace_of(module: Any, datamodule: Any) -> ModuleType:
    """The Lightning namespace both objects belong to.

    Raises:
        TypeError: when ``module`` is no LightningModule of either namespace, or the data module
            belongs to another namespace than the module.
    """
    for name in _NAMESPACES:
        ns = _import(name)
        if ns is None or not isinstance(module, ns.LightningModule):
            continue
        if not isinstance(datamodule, ns.LightningDataModule):
            other = any(
                (o := _import(n)) is not None and isinstance(datamodule, o.LightningDataModule)
                for n in _NAMESPACES
                if n != name
            )
            why = (
                "the two Lightning namespaces cannot be mixed"
                if other
                else "wrap its DataLoaders in a LightningDataModule"
            )
            raise TypeError(
                f"the trainer's module is a {name}.LightningModule but its data module "
                f"{type(datamodule).__name__} is not a {name}.LightningDataModule; {why}"
            )
        return ns
    raise TypeError(
        f"the trainer built a {type(module).__name__}, which is not a LightningModule "
        "(lightning.pytorch or pytorch_lightning)"
    )


def quiet() -> None:
    """Silence the per-fit banner ("GPU available: ...", tips) that Lightning logs at INFO.

    Lightning routes those messages through one shared logger that whichever namespace was
    imported last renames, so every candidate is set to WARNING.
    """
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "pytorch_lightning.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning_fabric.utilities.rank_zero",
        "lightning_utilities.core.rank_zero",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)


class EpochState(Protocol):
    """What the per-epoch callback drives: the objective's `_EpochTracker`."""

    def on_epoch(self, trainer: Any, module: Any, stale: frozenset[str] = frozenset()) -> None:
        """After each real validation epoch (`stale`: names in `trainer.callback_metrics`
        this epoch did not log, `StaleMetrics`); raising stops the fit."""

    def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
        """Before each training epoch."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of it (Lightning saves it with the callback)."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore it from a checkpoint (Lightning calls this when a fit resumes)."""


class ValidationHooks(Protocol):
    """What the per-epoch callback also drives when given: `trainers.insight.Insight`."""

    def on_validation_epoch_start(self, trainer: Any, module: Any) -> None: ...

    def on_validation_batch_start(self) -> None: ...

    def on_validation_batch_end(self, batch: Any, dataloader_idx: int) -> None: ...


class StaleMetrics:
    """The names in `trainer.callback_metrics` that this validation epoch did not log.

    Lightning never clears `callback_metrics`: a name validation logs on some epochs only keeps
    its last value on the others, which the objective would read as this epoch's. Lightning
    stores each value it logs as a new tensor, so a name whose value is the same object before
    and after the validation loop was not logged in it. Names logged in validation before and
    not in this one are stale; names validation never logs (training hooks' `on_epoch`
    aggregates, updated after validation) are left alone, as before.
    """

    def __init__(self) -> None:
        self._before: dict[str, Any] = {}
        self._logged_in_validation: set[str] = set()

    def start(self, trainer: Any) -> None:
        """At the start of each validation epoch."""
        self._before = dict(trainer.callback_metrics)

    def stale(self, trainer: Any) -> frozenset[str]:
        """At the end of a real validation epoch."""
        now = trainer.callback_metrics
        fresh = {name for name, value in now.items() if value is not self._before.get(name)}
        self._logged_in_validation |= fresh
        return frozenset(n for n in now if n in self._logged_in_validation and n not in fresh)


def epoch_callback(
    ns: ModuleType, tracker: EpochState, insight: ValidationHooks | None = None
) -> Any:
    """A ``ns.Callback`` calling ``tracker.on_epoch(trainer, module)`` after each real
    validation epoch, and carrying the tracker's state in Lightning checkpoints.

    The objective's hook records the epoch, reports it to Optuna and raises to prune, cancel or
    fail; this is the small pruning callback (optuna-integration's speaks one namespace only).
    With ``insight``, the validation hooks also let it keep the logits of the module's own
    validation pass (see `trainers.insight.Insight`).
    """
    cls = _callback_classes.get(ns.__name__)
    if cls is None:

        class EpochCallback(ns.Callback):  # type: ignore[name-defined]
            def __init__(self, tracker: EpochState, insight: ValidationHooks | None) -> None:
                super().__init__()
                self.tracker = tracker
                self.insight = insight
                self.metrics = StaleMetrics()

            def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
                self.metrics.start(trainer)
                if self.insight is not None:
                    self.insight.on_validation_epoch_start(trainer, pl_module)

            def on_validation_batch_start(
                self,
                trainer: Any,
                pl_module: Any,
                batch: Any,
                batch_idx: int,
                dataloader_idx: int = 0,
            ) -> None:
                if self.insight is not None:
                    self.insight.on_validation_batch_start()

            def on_validation_batch_end(
                self,
                trainer: Any,
                pl_module: Any,
                outputs: Any,
                batch: Any,
                batch_idx: int,
                dataloader_idx: int = 0,
            ) -> None:
                if self.insight is not None:
                    self.insight.on_validation_batch_end(batch, dataloader_idx)

            def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
                self.tracker.on_train_epoch_start(trainer, pl_module)

            def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
                if trainer.sanity_checking:
                    return
                self.tracker.on_epoch(trainer, pl_module, self.metrics.stale(trainer))

            def state_dict(self) -> dict[str, Any]:
                return self.tracker.state_dict()

            def load_state_dict(self, state_dict: dict[str, Any]) -> None:
                self.tracker.load_state_dict(state_dict)

        EpochCallback.__qualname__ = f"EpochCallback[{ns.__name__}]"
        _callback_classes[ns.__name__] = cls = EpochCallback
    return cls(tracker, insight)


def overrides(ns: ModuleType, obj: Any, method: str) -> bool:
    """Whether ``obj`` defines ``method`` itself (not just Lightning's default hook)."""
    from importlib import import_module

    helpers = import_module(f"{ns.__name__}.utilities.model_helpers")
    return bool(helpers.is_overridden(method, obj))
