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

import itertools
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import optuna
import torch

from trainers import _ddp, _lightning
from trainers.best import BestEpoch, improved_best, maximizes
from trainers.insight import Insight
from trainers.params import RegularizationParams
from trainers.registry import Trainer, get_trainer
from trainers.space import Direction, SearchSpace

_log = logging.getLogger(__name__)

#: Used when a trainer's config has no ``max_epochs`` field.
DEFAULT_MAX_EPOCHS = 100


class TrialCancelled(optuna.TrialPruned):
    """The study was cancelled: the trial stopped at an epoch boundary (recorded PRUNED)."""


class TrialDiverged(RuntimeError):
    """Training produced a non-finite loss; the trial is recorded FAIL with this message."""


@dataclass(frozen=True)
class ObjectiveSpec:
    """What one study asks of each trial.

    Attributes:
        trainer: registered trainer name (see `trainers.available_trainers`).
        trainer_config: the trainer's config, validated by its own pydantic model.
        search_space: distributions (or fixed values) of the regularization parameters.
        metric: the per-epoch metric optimized, pruned on and early-stopped on; must be one of
            the trainer's ``metrics``.
        direction: ``minimize`` or ``maximize``.
        accelerator: Lightning accelerator, ``cpu``, ``gpu`` or ``auto`` (one device).
        torch_threads: torch intra-op threads for this process, or None to leave torch's.
        precision: the Lightning Trainer's ``precision`` (e.g. ``bf16-mixed``).
        devices: devices per trial; more than 1 runs DDP (rank 0 alone reports to Optuna).
        seed: mixed with the trial number into each trial's training seed (see
            `train_seed_for`); None counts as 0.
        insight_every: cadence of regtune's insight metrics for this study (None: the
            trainer's ``insight_every``; 0: off unless the objective is one of them).
        report_epoch: ``best`` reports (and tests) the best epoch's weights, as every search
            trial does; ``last`` reports the epoch training ended with (a reference run with
            regularization off: picking its best epoch would be early stopping, a regularizer).
        gap_stop_epochs: the ``gap`` pruner's rule (docs/api.md, "Pruners"): prune a trial once
            its ``gap`` rose strictly over this many measured epochs in a row while the
            objective did not improve in them; None: off. Inactive (a warning logged once) for
            a trainer that yields no ``gap``.
        gap_stop_action: ``prune`` ends such a trial PRUNED; ``stop`` ends it like an early
            stop (COMPLETE, its best epoch reported), its reason in ``stopped_reason``.
    """

    trainer: str
    trainer_config: dict[str, Any] = field(default_factory=dict)
    search_space: SearchSpace = field(default_factory=SearchSpace)
    metric: str = "val_loss"
    direction: Direction = "minimize"
    # "cpu", "gpu" or "auto" (Lightning accelerator); the worker sets CUDA_VISIBLE_DEVICES.
    accelerator: str = "cpu"
    # torch intra-op threads for this process (None: leave torch's setting). Small models on a
    # shared CPU run best with 1: several processes with a thread per core each oversubscribe it.
    torch_threads: int | None = None
    # Lightning's `precision` ("32-true", "bf16-mixed", "16-mixed", ...)
    precision: str = "32-true"
    # devices per trial: > 1 trains each trial with Lightning DDP over that many devices
    devices: int = 1
    # mixed into the training seed derived from the trial number (None: 0)
    seed: int | None = None
    # every how many epochs regtune computes its insight metrics (None: the trainer's default)
    insight_every: int | None = None
    # which epoch the outcome reports: "best" (search trials) or "last" (the reference run)
    report_epoch: Literal["best", "last"] = "best"
    # the gap pruner's k (None: off); see `_EpochTracker._gap_widened`
    gap_stop_epochs: int | None = None
    # what the gap rule does: "prune" (the trial ends PRUNED) or "stop" (it ends like an early
    # stop: COMPLETE with its best epoch)
    gap_stop_action: Literal["prune", "stop"] = "prune"


@dataclass
class EpochRecord:
    """One validation epoch: its 0-based index and every metric logged by then, as floats."""

    epoch: int  # 0-based
    metrics: dict[str, float]


@dataclass
class TrialOutcome:
    """A completed trial: the best epoch's value and metrics, the history, the test metrics."""

    params: RegularizationParams
    value: float  # the objective metric at the best epoch (not the last)
    best_epoch: int
    epochs_run: int
    history: list[EpochRecord]
    best_metrics: dict[str, float]  # every logged metric at the best epoch
    test_metrics: dict[str, float] | None = None  # best-epoch weights on the test split, if any


@dataclass(frozen=True)
class TrialCheckpoint:
    """Where a trial keeps a resumable checkpoint, how often it saves it, whether to resume.

    Attributes:
        path: a file path or any fsspec URL Lightning accepts (``s3://...``); a trial and its
            retries share it.
        interval_s: at most one save per this many seconds (0: after every epoch).
        resume: continue from the checkpoint at ``path`` when there is one (a retried trial).
    """

    path: str
    interval_s: float = 60.0
    resume: bool = False


def _filesystem(path: str) -> tuple[Any, str]:
    import fsspec

    fs, inner = fsspec.core.url_to_fs(path)
    return fs, str(inner)


def checkpoint_exists(path: str) -> bool:
    """Whether there is a checkpoint at `path` (a file path or an fsspec URL)."""
    fs, inner = _filesystem(path)
    return bool(fs.exists(inner))


def delete_checkpoint(path: str) -> None:
    """Remove the checkpoint at `path` (no error when there is none)."""
    fs, inner = _filesystem(path)
    if fs.exists(inner):
        fs.rm(inner)


class TrialObserver(Protocol):
    """Callbacks a caller passes to `run_trial` to follow (and stop) a running trial."""

    def on_start(self, trial: optuna.trial.BaseTrial, params: RegularizationParams) -> None:
        """Called once the parameters are sampled, before the model is built."""

    def on_epoch(self, trial: optuna.trial.BaseTrial, record: EpochRecord) -> None:
        """Called after each validation epoch (before Optuna may prune the trial)."""

    def should_stop(self) -> bool:
        """Polled before training and after each epoch; True stops with `TrialCancelled`."""


def host_copy(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` copied into CPU memory: the best epoch's weights never take a second copy of the
    model on the accelerator (a GPU holds the live weights only)."""
    return {name: t.detach().to("cpu", copy=True) for name, t in state.items()}


def _one_number(name: Any, value: Any) -> float:
    """A value of a module's ``epoch_metrics`` as a float; a tensor of several elements (or
    anything else that is not one number) is an error naming the metric."""
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        shape = f" of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else ""
        raise TypeError(
            f"epoch_metrics[{name!r}] must be one number, got {type(value).__name__}{shape}"
        ) from None


class _EpochTracker:
    """Per-epoch bookkeeping of one trial: history, best epoch (and its weights), Optuna reports.

    Namespace-independent; `trainers._lightning.epoch_callback` calls `on_epoch` from the
    matching Lightning callback.
    """

    def __init__(
        self,
        trial: optuna.trial.BaseTrial,
        spec: ObjectiveSpec,
        observer: TrialObserver | None,
        patience: int,
        checkpoint: TrialCheckpoint | None = None,
        insight: Insight | None = None,
    ) -> None:
        self.trial = trial
        self.insight = insight
        self.spec = spec
        self.observer = observer
        self.patience = patience
        self.epochs_without_improvement = 0
        self.history: list[EpochRecord] = []
        self.best: BestEpoch | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self._maximize = maximizes(spec.direction)
        self.checkpoint = checkpoint
        self._last_save = -math.inf
        self._rng: dict[str, Any] | None = None  # restored at the first resumed epoch
        self.resumed_at: int | None = None  # first epoch trained after a resume
        self._gaps: list[tuple[int, float]] = []  # (epoch, gap) of the epochs that measured it
        self._gap_missing_logged = False

    def on_epoch(self, trainer: Any, module: Any, stale: frozenset[str] = frozenset()) -> None:
        if not _ddp.is_distributed(trainer):
            self._on_epoch(trainer, module, stale)
            return
        # DDP: every rank applies this rank's decision at this same epoch (none hangs)
        try:
            self._on_epoch(trainer, module, stale)
        except BaseException:
            _ddp.broadcast(trainer, _ddp.END)
            raise
        _ddp.broadcast(trainer, _ddp.STOP if trainer.should_stop else _ddp.GO_ON)

    def _on_epoch(self, trainer: Any, module: Any, stale: frozenset[str]) -> None:
        epoch = int(trainer.current_epoch)
        metrics = {  # without values an earlier epoch logged (`_lightning.StaleMetrics`)
            name: float(v)
            for name, v in trainer.callback_metrics.items()
            if name not in stale and (not isinstance(v, torch.Tensor) or v.numel() == 1)
        }
        # A module may also hand over its epoch's metrics as floats, sparing Lightning a
        # self.log per metric (the built-in module logs only what callbacks monitor).
        extra = getattr(module, "epoch_metrics", None)
        if isinstance(extra, dict):
            metrics.update({str(name): _one_number(name, v) for name, v in extra.items()})
        if self.insight is not None and self.insight.due(epoch):
            metrics.update(self.insight.compute(trainer, module, metrics))
        metric = self.spec.metric
        if metric not in metrics:
            raise RuntimeError(
                f"trainer {self.spec.trainer!r} did not log the objective metric {metric!r} "
                f"at epoch {epoch} (logged: {', '.join(sorted(metrics)) or 'nothing'}; "
                "log it in validation every epoch)"
            )
        bad = [
            f"{name}={value}"
            for name, value in metrics.items()
            if (name == metric or name.endswith("loss")) and not math.isfinite(value)
        ]
        if bad:
            raise TrialDiverged(
                f"training diverged at epoch {epoch}: non-finite {', '.join(sorted(bad))} "
                "(try a lower learning rate or weaker regularization)"
            )
        record = EpochRecord(epoch=epoch, metrics=metrics)
        self.history.append(record)
        if self.observer is not None:
            self.observer.on_epoch(self.trial, record)
        value = metrics[metric]
        improved = improved_best(self.best, epoch, metrics, metric, maximize=self._maximize)
        if improved is not None:
            self.best = improved
            self.epochs_without_improvement = 0
            if self.spec.report_epoch == "best":  # "last" tests the weights training ends with
                self.best_state = host_copy(module.state_dict())
        else:
            # Early stopping with Lightning EarlyStopping's rule (strict improvement, stop once
            # `patience` epochs in a row did not improve), done here rather than by that
            # callback so the metric need not go through `self.log` (docs/trainers.md).
            self.epochs_without_improvement += 1
            if self.epochs_without_improvement >= self.patience:
                trainer.should_stop = True
        self.trial.report(value, epoch)
        if self.observer is not None and self.observer.should_stop():
            raise TrialCancelled(f"study cancelled: trial stopped after epoch {epoch}")
        # a trial that ends at this epoch anyway (early stop, last epoch) is never pruned:
        # that would save nothing and throw its finished result away
        ending = trainer.should_stop or epoch + 1 >= (
            getattr(trainer, "max_epochs", None) or math.inf
        )
        if not ending and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} with {metric}={value:.6g}")
        reason = self._gap_widened(epoch, metrics)
        if reason is not None and self.spec.gap_stop_action == "prune":
            self.trial.set_user_attr("pruned_reason", reason)
            raise optuna.TrialPruned(f"pruned {reason}")
        if reason is not None:  # "stop": an early stop, the trial completes with its best epoch
            self.trial.set_user_attr("stopped_reason", reason)
            trainer.should_stop = True
        self._maybe_save(trainer)

    def _gap_widened(self, epoch: int, metrics: Mapping[str, float]) -> str | None:
        """Why the gap rule prunes the trial at `epoch`, or None.

        With k = ``spec.gap_stop_epochs``: the last k+1 epochs that measured ``gap`` show it
        rising strictly k times in a row, and the objective's best epoch is not after the first
        of them (it stalled while the model fitted the training split ever closer). Epochs
        without a ``gap`` (the insight cadence) neither count nor break the run.
        """
        k = self.spec.gap_stop_epochs
        if k is None:
            return None
        gap = metrics.get("gap")
        if gap is None or not math.isfinite(gap):
            if not self._gap_missing_logged and not self._gaps:
                self._gap_missing_logged = True
                _log.warning(
                    "pruner gap: trainer %r yielded no gap at epoch %d; the gap rule waits for "
                    "one (inactive for a trainer that never yields it, docs/api.md, Pruners)",
                    self.spec.trainer,
                    epoch,
                )
            return None
        self._gaps.append((epoch, gap))
        if len(self._gaps) <= k:
            return None
        window = self._gaps[-(k + 1) :]
        if any(later <= earlier for (_, earlier), (_, later) in itertools.pairwise(window)):
            return None
        start = window[0][0]
        if self.best is None or self.best.epoch > start:
            return None
        return (
            f"at epoch {epoch}: gap widened {k} epoch(s) in a row "
            f"({window[0][1]:.4g} at epoch {start} -> {gap:.4g}) while {self.spec.metric} "
            f"stalled (best {self.best.value:.6g} at epoch {self.best.epoch})"
        )

    def _maybe_save(self, trainer: Any) -> None:
        plan = self.checkpoint
        if plan is None or trainer.should_stop:
            return
        now = time.monotonic()
        if now - self._last_save < plan.interval_s:
            return
        # optimizer, loops and callbacks too (the tracker's state_dict() below): all a retry needs
        trainer.save_checkpoint(plan.path, weights_only=False)
        self._last_save = now

    def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
        if self._rng is not None:
            # the random streams where the checkpointed epoch left them: the resumed epochs
            # drop out (and shuffle, for loaders drawing on torch's generator) as the
            # uninterrupted trial would have
            torch.set_rng_state(self._rng["cpu"])
            if self._rng.get("cuda") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(self._rng["cuda"])
            self._rng = None
            self.resumed_at = int(trainer.current_epoch)

    def state_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "history": [(r.epoch, dict(r.metrics)) for r in self.history],
            "best": (best.epoch, best.value, dict(best.metrics)) if best is not None else None,
            "best_state": self.best_state,
            "epochs_without_improvement": self.epochs_without_improvement,
            "rng": {
                "cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the epochs before the checkpoint are replayed to the observer (the curve
        stays continuous in SQL) and reported to this trial (the pruner sees them); best epoch,
        best weights and the patience count are as they were."""
        self.history = [EpochRecord(epoch=e, metrics=m) for e, m in state["history"]]
        best = state["best"]
        self.best = BestEpoch(*best) if best is not None else None
        self.best_state = state["best_state"]
        self.epochs_without_improvement = int(state["epochs_without_improvement"])
        self._gaps = [
            (r.epoch, r.metrics["gap"])
            for r in self.history
            if "gap" in r.metrics and math.isfinite(r.metrics["gap"])
        ]
        self._rng = state["rng"]
        for record in self.history:
            if self.observer is not None:
                self.observer.on_epoch(self.trial, record)
            self.trial.report(record.metrics[self.spec.metric], record.epoch)


def _reported(tracker: _EpochTracker) -> BestEpoch | None:
    """The epoch a trial reports: its best, or its last under ``report_epoch="last"``."""
    if tracker.spec.report_epoch == "best" or not tracker.history:
        return tracker.best
    last = tracker.history[-1]
    return BestEpoch(last.epoch, last.metrics[tracker.spec.metric], dict(last.metrics))


def _record_attrs(trial: optuna.trial.BaseTrial, tracker: _EpochTracker) -> None:
    trial.set_user_attr("epochs_run", len(tracker.history))
    reported = _reported(tracker)
    if reported is not None:
        trial.set_user_attr("best_epoch", reported.epoch)
    if tracker.resumed_at is not None:
        trial.set_user_attr("resumed_at_epoch", tracker.resumed_at)


MAX_SEED = 2**32 - 1


def train_seed_for(trial: optuna.trial.BaseTrial, spec: ObjectiveSpec, config: Any) -> int:
    """The training seed of a trial, in this order of precedence:

    1. the trial's user attribute ``train_seed`` (an enqueued reference or confirmation
       trial carries one: a confirmation repeat must train from its own new seed, also in a
       study that pins one);
    2. the trainer config's own ``train_seed`` field when it is set (the built-in trainers
       have one: a study that pins it trains every search trial with it);
    3. derived from the trial number and ``spec.seed``: the first word of
       ``numpy.random.SeedSequence([spec.seed or 0, trial.number])``, so trial n of a study
       always gets the same seed and trials get unrelated ones.
    """
    attr = trial.user_attrs.get("train_seed")
    if attr is not None:
        seed = int(attr)
        if not 0 <= seed <= MAX_SEED:
            raise ValueError(f"train_seed: user attribute {seed} is outside 0..{MAX_SEED}")
        return seed
    pinned = getattr(config, "train_seed", None)
    if isinstance(pinned, int):
        return pinned
    number = int(getattr(trial, "number", 0))
    state = np.random.SeedSequence([spec.seed or 0, number]).generate_state(1)
    return int(state[0])


def seed_training(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators (and dataloader workers) with Lightning's
    ``seed_everything`` (lightning.fabric's: both namespaces read the same RNGs)."""
    from lightning.fabric.utilities.seed import seed_everything

    seed_everything(seed, workers=True, verbose=False)


def _insight_for(definition: Trainer, spec: ObjectiveSpec, module: Any) -> Insight:
    """The trial's insight computation; its cadence also drives a module that computes the
    same metrics itself (an int attribute ``insight_every``, as the built-in module has)."""
    every = spec.insight_every if spec.insight_every is not None else definition.insight_every
    if every is None and spec.devices > 1:
        # DDP: no after-fit fill of a skipped reported epoch (`_fill_reported`), so the default
        # cadence stays every epoch there
        every = 1
    insight = definition.insight(every)
    if spec.metric in insight.names:  # the objective needs them every epoch
        insight.every = 1
    if isinstance(getattr(module, "insight_every", None), int):
        module.insight_every = insight.every
    return insight


def _trainer_kwargs(spec: ObjectiveSpec, config: Any) -> dict[str, Any]:
    """The Lightning Trainer options of a trial (every DDP rank gets the same)."""
    return {
        "accelerator": spec.accelerator,
        "devices": 1,
        "precision": spec.precision,
        "max_epochs": int(getattr(config, "max_epochs", DEFAULT_MAX_EPOCHS)),
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }


def _fill_reported(pl_trainer: Any, module: Any, tracker: _EpochTracker) -> dict[str, float]:
    """The insight metrics of the reported epoch (`_reported`) when the cadence skipped it.

    The reported epoch's weights (the best epoch's, kept on the CPU; under
    ``report_epoch="last"`` the live ones) go through the same `Insight.compute` once after
    fit, on the device the trial trained on, so the trial's gap, ECE and sparsity are its
    reported epoch's own. Torch's generator state is restored (`Insight.compute_now`). Empty
    for a DDP trial, a cadence of 0 (off) or an epoch that has them.
    """
    insight, reported = tracker.insight, _reported(tracker)
    if insight is None or reported is None or insight.every == 0 or tracker.spec.devices > 1:
        return {}
    if insight.due(reported.epoch) or set(insight.names) <= set(reported.metrics):
        return {}
    if tracker.spec.report_epoch == "best":
        if tracker.best_state is None:
            return {}
        module.load_state_dict(tracker.best_state)
    before = module.device
    module.to(pl_trainer.strategy.root_device)
    try:
        return insight.compute_now(pl_trainer, module, reported.metrics)
    finally:
        module.to(before)


def _test(
    pl_trainer: Any, ns: Any, module: Any, datamodule: Any, tracker: _EpochTracker
) -> dict[str, float] | None:
    """Score the reported epoch's weights (`_reported`) on the test split when the module and
    data module define one; returns the test metrics."""
    last = tracker.spec.report_epoch == "last"
    if tracker.best is None or (tracker.best_state is None and not last):
        raise RuntimeError(f"trainer {tracker.spec.trainer!r} ran no validation epoch")
    if not (
        _lightning.overrides(ns, module, "test_step")
        and _lightning.overrides(ns, datamodule, "test_dataloader")
    ):
        return None
    if tracker.best_state is not None:
        module.load_state_dict(tracker.best_state)
    results = pl_trainer.test(module, datamodule=datamodule, verbose=False)
    test_metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
    tracker.trial.set_user_attr("test_metrics", test_metrics)
    return test_metrics


def run_trial(
    trial: optuna.trial.BaseTrial,
    spec: ObjectiveSpec,
    observer: TrialObserver | None = None,
    checkpoint: TrialCheckpoint | None = None,
) -> TrialOutcome:
    """Sample the regularization, train the spec's trainer once, return its best epoch.

    Steps: sample ``spec.search_space`` on ``trial`` (``observer.on_start``), build the trainer's
    module and data module, fit with a per-epoch callback that records the epoch
    (``observer.on_epoch``), stops after ``patience`` epochs without improvement of
    ``spec.metric`` (Lightning EarlyStopping's rule), reports it to Optuna and prunes; then
    evaluate the best epoch's weights on the test split when the module has a ``test_step`` and
    the data module a ``test_dataloader``.

    Before ``build``, seeds Python, numpy and torch with Lightning's ``seed_everything`` and the
    trial's training seed (`train_seed_for`), recorded as the user attribute ``train_seed``; a
    trainer whose ``build`` takes a keyword ``seed`` also receives it. Each validation epoch
    regtune adds its insight metrics (`trainers.insight`) at the trainer's cadence.

    Sets the trial's user attributes ``best_epoch`` and ``epochs_run`` (also when pruned),
    ``test_metrics`` when evaluated, and ``fail_reason`` when the trial diverged.

    Raises:
        optuna.TrialPruned: the pruner pruned the trial.
        TrialCancelled: ``observer.should_stop()`` returned True (checked before training and
            after each epoch).
        TrialDiverged: a loss (or the objective metric) became NaN or infinite.
        UnknownTrainerError, pydantic.ValidationError, ValueError: a bad spec.
    """
    definition = get_trainer(spec.trainer)
    config = definition.validate_config(spec.trainer_config)
    if spec.metric not in definition.metrics:
        raise ValueError(
            f"objective metric {spec.metric!r} is not logged by trainer {spec.trainer!r} "
            f"(it logs: {', '.join(definition.metrics)})"
        )
    if spec.torch_threads is not None:
        torch.set_num_threads(spec.torch_threads)
    params = spec.search_space.sample(trial)
    seed = train_seed_for(trial, spec, config)
    trial.set_user_attr("train_seed", seed)
    if observer is not None:
        observer.on_start(trial, params)
        if observer.should_stop():
            raise TrialCancelled("study cancelled before the trial started training")
    seed_training(seed)
    module, datamodule = definition.build_seeded(params, config, seed)
    ns = _lightning.namespace_of(module, datamodule)
    _lightning.quiet()
    if spec.devices > 1:
        checkpoint = None  # resuming a DDP trial is not supported: it starts over
    insight = _insight_for(definition, spec, module)
    tracker = _EpochTracker(trial, spec, observer, params.patience, checkpoint, insight)
    resume_from = None
    if checkpoint is not None and checkpoint.resume and checkpoint_exists(checkpoint.path):
        resume_from = checkpoint.path
    kwargs = _trainer_kwargs(spec, config)
    callbacks = [_lightning.epoch_callback(ns, tracker, insight)]
    try:
        if spec.devices > 1:
            ddp_kwargs = {**kwargs, "devices": spec.devices, "strategy": "ddp"}
            payload = {
                "trainer": spec.trainer,
                "trainer_config": spec.trainer_config,
                "params": params.model_dump(),
                "seed": seed,
                "insight_every": insight.every,
                "torch_threads": spec.torch_threads,
                "trainer_kwargs": ddp_kwargs,
            }
            with _ddp.ranks(spec.devices, payload):
                ddp_trainer = ns.Trainer(callbacks=callbacks, **ddp_kwargs)
                ddp_trainer.fit(module, datamodule=datamodule)
            test_trainer = ns.Trainer(**kwargs)  # the test split on rank 0's device alone
        else:
            test_trainer = ns.Trainer(callbacks=callbacks, **kwargs)
            test_trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
        filled = _fill_reported(test_trainer, module, tracker)
        test_metrics = _test(test_trainer, ns, module, datamodule, tracker)
    except TrialDiverged as exc:
        # Optuna keeps no message for a FAIL trial; the reason stays readable on the trial.
        trial.set_user_attr("fail_reason", str(exc))
        raise
    finally:
        _record_attrs(trial, tracker)
        if checkpoint is not None:  # the trial ended (a killed worker never gets here)
            delete_checkpoint(checkpoint.path)
    best = _reported(tracker)
    assert best is not None
    return TrialOutcome(
        params=params,
        value=best.value,
        best_epoch=best.epoch,
        epochs_run=len(tracker.history),
        history=tracker.history,
        best_metrics={**best.metrics, **filled},  # the history keeps the cadence's epochs
        test_metrics=test_metrics,
    )


def make_objective(
    spec: ObjectiveSpec,
    observer_factory: Callable[[], TrialObserver | None] | None = None,
) -> Callable[[optuna.Trial], float]:
    """An objective for ``study.optimize``: `run_trial` with a fresh observer per trial."""

    def objective(trial: optuna.Trial) -> float:
        observer = observer_factory() if observer_factory is not None else None
        return run_trial(trial, spec, observer).value

    return objective
