"""The objective in real in-memory Optuna studies: best epoch, pruning, divergence, cancel."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import optuna
import pytest
import torch

from tests.trainers.conftest import fixed_space, synthetic_spec
from trainers import (
    EpochRecord,
    ObjectiveSpec,
    RegularizationParams,
    SearchSpace,
    TrialCancelled,
    TrialDiverged,
    get_trainer,
    make_objective,
    run_trial,
)
from trainers.module import EPOCH_METRICS

State = optuna.trial.TrialState


class Recorder:
    """A TrialObserver that records what it sees and can ask to stop after N epochs."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.started: list[RegularizationParams] = []
        self.epochs: list[EpochRecord] = []
        self.stop_after = stop_after

    def on_start(self, trial: optuna.trial.BaseTrial, params: RegularizationParams) -> None:
        self.started.append(params)

    def on_epoch(self, trial: optuna.trial.BaseTrial, record: EpochRecord) -> None:
        self.epochs.append(record)

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.epochs) >= self.stop_after


def _factory(observers: list[Recorder]) -> Callable[[], Recorder]:
    """An observer factory that keeps every observer it makes."""

    def make() -> Recorder:
        observers.append(Recorder())
        return observers[-1]

    return make


def _noisy_digits(max_epochs: int, patience: int) -> ObjectiveSpec:
    # 40 % label noise, a wide MLP and no regularization: val_loss bottoms out early, then rises
    # as the network memorizes the noise.
    return ObjectiveSpec(
        trainer="digits-mlp",
        trainer_config={
            "max_epochs": max_epochs,
            "label_noise": 0.4,
            "hidden_sizes": [64],
            "learning_rate": 1e-2,
        },
        search_space=fixed_space(patience=patience, batch_size=64),
    )


def test_returns_the_best_epoch_not_the_last() -> None:
    study = optuna.create_study(direction="minimize")
    trial = study.ask()
    observer = Recorder()
    outcome = run_trial(trial, _noisy_digits(max_epochs=8, patience=100), observer)
    losses = [r.metrics["val_loss"] for r in outcome.history]
    assert outcome.epochs_run == 8 == len(losses)
    assert outcome.value == min(losses)
    assert outcome.best_epoch == losses.index(min(losses)) < 7
    assert losses[-1] > outcome.value  # the last epoch is worse: the value is not the last one
    assert outcome.best_metrics == outcome.history[outcome.best_epoch].metrics
    assert observer.epochs == outcome.history
    assert [r.epoch for r in outcome.history] == list(range(8))
    assert set(EPOCH_METRICS) <= set(outcome.history[0].metrics)
    # the test split is evaluated with the best epoch's weights
    assert outcome.test_metrics is not None
    assert set(outcome.test_metrics) == {"test_loss", "test_acc", "test_ece"}
    study.tell(trial, outcome.value)
    stored = study.trials[0]
    assert stored.user_attrs["best_epoch"] == outcome.best_epoch
    assert stored.user_attrs["epochs_run"] == 8
    assert stored.intermediate_values == {r.epoch: r.metrics["val_loss"] for r in outcome.history}


def test_patience_stops_training_early() -> None:
    outcome = run_trial(optuna.trial.FixedTrial({}), _noisy_digits(max_epochs=40, patience=2))
    assert outcome.epochs_run < 40
    # EarlyStopping(patience=2): two epochs without improvement after the best, then stop
    assert outcome.epochs_run == outcome.best_epoch + 1 + 2


def test_test_metrics_come_from_the_best_epochs_weights() -> None:
    long = run_trial(optuna.trial.FixedTrial({}), _noisy_digits(max_epochs=6, patience=100))
    assert long.best_epoch < 5
    # Training is deterministic, so a run stopped right at that epoch ends with the same weights:
    # its test metrics are what the best epoch's weights score (not the last epoch's).
    short = run_trial(
        optuna.trial.FixedTrial({}), _noisy_digits(max_epochs=long.best_epoch + 1, patience=100)
    )
    assert short.history == long.history[: long.best_epoch + 1]
    assert long.test_metrics == short.test_metrics
    assert long.test_metrics is not None and long.test_metrics["test_acc"] > 0.8  # clean labels


def test_report_epoch_last_reports_and_tests_the_weights_training_ended_with() -> None:
    # the reference run (regularization off) reports its last epoch: picking the best epoch
    # would be early stopping, itself a regularizer
    spec = replace(_noisy_digits(max_epochs=6, patience=2), report_epoch="last")
    ended = run_trial(optuna.trial.FixedTrial({}), spec)
    best = run_trial(optuna.trial.FixedTrial({}), _noisy_digits(max_epochs=6, patience=2))
    assert ended.history == best.history  # the same training; patience still stops it
    assert ended.epochs_run == best.epochs_run < 6
    assert ended.best_epoch == ended.epochs_run - 1 != best.best_epoch
    assert ended.value == ended.history[-1].metrics["val_loss"] > best.value
    assert ended.best_metrics == ended.history[-1].metrics
    # the test split scores the last weights, not the best epoch's
    assert ended.test_metrics is not None and best.test_metrics is not None
    assert ended.test_metrics["test_loss"] != best.test_metrics["test_loss"]


def test_study_optimize_with_sampled_params() -> None:
    space = SearchSpace.model_validate(
        {
            "weight_decay": {"low": 1e-5, "high": 1e-1, "log": True},
            "dropout": {"low": 0.0, "high": 0.5},
            "batch_size": {"choices": [16, 64]},
            "patience": {"fixed": 1},
        }
    )
    observers: list[Recorder] = []
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(make_objective(synthetic_spec(space), _factory(observers)), n_trials=3)
    assert [t.state for t in study.trials] == [State.COMPLETE] * 3
    for trial, observer in zip(study.trials, observers, strict=True):
        (params,) = observer.started
        assert params.batch_size == trial.params["batch_size"]
        assert params.dropout == trial.params["dropout"]
        assert params.patience == 1 and "patience" not in trial.params
        assert trial.value == min(r.metrics["val_loss"] for r in observer.epochs)


def test_a_pruner_that_must_prune_prunes() -> None:
    # Any val_loss above 1e-9 is over the threshold: every trial is pruned at its first report
    # after the warm-up (epoch index 1).
    pruner = optuna.pruners.ThresholdPruner(upper=1e-9, n_warmup_steps=1)
    study = optuna.create_study(pruner=pruner)
    observers: list[Recorder] = []
    study.optimize(make_objective(synthetic_spec(max_epochs=6), _factory(observers)), n_trials=2)
    assert [t.state for t in study.trials] == [State.PRUNED] * 2
    for trial, observer in zip(study.trials, observers, strict=True):
        assert sorted(trial.intermediate_values) == [0, 1]
        assert trial.user_attrs["epochs_run"] == 2 == len(observer.epochs)


def test_a_trial_is_never_pruned_at_its_last_epoch() -> None:
    """The same pruner, first allowed to prune at the last epoch (index 5 of 6): pruning there
    would save nothing and throw the finished result away, so every trial completes."""
    pruner = optuna.pruners.ThresholdPruner(upper=1e-9, n_warmup_steps=5)
    study = optuna.create_study(pruner=pruner)
    space = fixed_space(patience=100)
    study.optimize(make_objective(synthetic_spec(space, max_epochs=6)), n_trials=2)
    assert [t.state for t in study.trials] == [State.COMPLETE] * 2
    assert all(t.user_attrs["epochs_run"] == 6 for t in study.trials)


def test_median_pruner_prunes_a_hopeless_trial() -> None:
    # First trial learns; the second (lr 1e-6, so it cannot) is compared with it and pruned.
    study = optuna.create_study(
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    )
    study.optimize(make_objective(synthetic_spec(max_epochs=4)), n_trials=1)
    study.optimize(make_objective(synthetic_spec(max_epochs=4, learning_rate=1e-6)), n_trials=1)
    assert [t.state for t in study.trials] == [State.COMPLETE, State.PRUNED]


def test_non_finite_loss_fails_the_trial_with_a_reason(test_plugin: str) -> None:
    spec = ObjectiveSpec(
        trainer="test-plugin-lightning",
        trainer_config={"max_epochs": 5, "nan_at_epoch": 1},
        metric="val_loss",
    )
    study = optuna.create_study()
    study.optimize(make_objective(spec), n_trials=1, catch=(TrialDiverged,))
    (trial,) = study.trials
    assert trial.state == State.FAIL
    reason = trial.user_attrs["fail_reason"]
    assert "diverged at epoch 1" in reason and "val_loss=nan" in reason
    assert trial.user_attrs["epochs_run"] == 1


def test_should_stop_cancels_at_the_next_epoch() -> None:
    study = optuna.create_study()
    observer = Recorder(stop_after=2)
    trial = study.ask()
    with pytest.raises(TrialCancelled, match="cancelled"):
        run_trial(trial, synthetic_spec(max_epochs=10), observer)
    assert len(observer.epochs) == 2
    assert trial.user_attrs["epochs_run"] == 2
    # TrialCancelled is a TrialPruned: under study.optimize the trial is recorded PRUNED
    stopped = Recorder(stop_after=0)
    study.optimize(make_objective(synthetic_spec(), lambda: stopped), n_trials=1)
    assert study.trials[-1].state == State.PRUNED
    assert stopped.epochs == []  # stopped before training started


def test_same_seed_same_params_same_metrics() -> None:
    space = fixed_space(dropout=0.3, weight_decay=1e-3, l1=1e-4, label_smoothing=0.1, batch_size=16)
    runs = [run_trial(optuna.trial.FixedTrial({}), synthetic_spec(space)) for _ in range(2)]
    assert runs[0].history == runs[1].history
    assert runs[0].test_metrics == runs[1].test_metrics
    other = run_trial(optuna.trial.FixedTrial({}), synthetic_spec(space, seed=1))
    assert other.history != runs[0].history
    assert all(math.isfinite(v) for v in runs[0].best_metrics.values())


def test_train_seed_retrains_on_the_same_split_with_other_initialization() -> None:
    space = fixed_space(dropout=0.3, weight_decay=1e-3, label_smoothing=0.1, batch_size=16)
    trial = optuna.trial.FixedTrial({})
    default = run_trial(trial, synthetic_spec(space, seed=2))
    own_seed = trial.user_attrs["train_seed"]
    same = run_trial(
        optuna.trial.FixedTrial({}), synthetic_spec(space, seed=2, train_seed=own_seed)
    )
    other = run_trial(optuna.trial.FixedTrial({}), synthetic_spec(space, seed=2, train_seed=5))
    assert same.history == default.history  # without train_seed: the trial's training seed
    assert other.history != default.history

    definition = get_trainer("synthetic-mlp")
    params = RegularizationParams(
        weight_decay=1e-3, l1=0.0, dropout=0.3, label_smoothing=0.1, batch_size=16, patience=5
    )
    splits = [
        definition.build(
            params, definition.validate_config(synthetic_spec(space, **c).trainer_config)
        )[1].splits
        for c in ({"seed": 2}, {"seed": 2, "train_seed": 5}, {"seed": 3, "train_seed": 5})
    ]
    assert torch.equal(splits[0].x_val, splits[1].x_val)
    assert torch.equal(splits[0].y_train, splits[1].y_train)
    assert not torch.equal(splits[0].x_val, splits[2].x_val)  # the split follows `seed`


def test_an_epoch_metric_that_is_not_one_number_is_named() -> None:
    """A module's epoch_metrics value of several elements: the error names the metric (before:
    torch's 'only one element tensors can be converted' with no name)."""
    from trainers.objective import _one_number

    assert _one_number("val_loss", torch.tensor(0.5)) == 0.5
    with pytest.raises(TypeError, match=r"epoch_metrics\['val_loss'\] must be one number, got "):
        _one_number("val_loss", torch.tensor([0.5, 0.6]))


@pytest.mark.parametrize("trainer", ["test-plugin-lightning", "test-plugin-pl"])
def test_a_metric_logged_on_some_epochs_is_absent_on_the_others(
    test_plugin: str, trainer: str
) -> None:
    """Lightning keeps a name's last logged value in `callback_metrics`: a plugin logging
    val_acc on even epochs only had epoch 0's val_acc recorded again at epoch 1 and 3. Now those
    epochs have no val_acc, and the training hook's train_loss is still recorded."""
    spec = ObjectiveSpec(
        trainer=trainer,
        trainer_config={"max_epochs": 4, "log_every": {"val_acc": 2}},
        search_space=fixed_space(patience=100),
    )
    observer = Recorder()
    run_trial(optuna.trial.FixedTrial({}), spec, observer)
    logged = [sorted(record.metrics) for record in observer.epochs]
    assert [("val_acc" in names) for names in logged] == [True, False, True, False]
    assert all("val_loss" in names for names in logged)
    assert all("train_loss" in names for names in logged[1:])


def test_an_objective_logged_on_some_epochs_fails_naming_the_epoch(test_plugin: str) -> None:
    """The objective missing at an epoch fails the trial there (before: early stopping and the
    pruner read the previous epoch's value as this one's)."""
    spec = ObjectiveSpec(
        trainer="test-plugin-lightning",
        trainer_config={"max_epochs": 4, "log_every": {"val_loss": 2}},
    )
    with pytest.raises(RuntimeError, match=r"objective metric 'val_loss' at epoch 1 .*every epoch"):
        run_trial(optuna.trial.FixedTrial({}), spec)
