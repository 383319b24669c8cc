"""The gap pruner's rule: prune once the gap widened k epochs in a row while the objective stalled.

On digits with 40 % label noise and no regularization (`_noisy_digits`), val_loss bottoms out in
the first epochs while the network memorizes the noise and the gap keeps widening.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import replace

import optuna
import pytest

from service.optuna_builders import DEFAULT_GAP_EPOCHS, build_pruner
from service.spec import StudySpec
from tests.support import tiny_spec
from tests.trainers.test_objective import Recorder, _noisy_digits
from trainers import run_trial
from trainers.objective import ObjectiveSpec


def _widened(gaps: list[float], losses: list[float], k: int) -> bool:
    """The rule by hand: the last k + 1 gaps rose strictly, val_loss's best not after them."""
    if len(gaps) <= k:
        return False
    rose = all(b > a for a, b in itertools.pairwise(gaps[-k - 1 :]))
    return rose and losses.index(min(losses)) <= len(losses) - 1 - k


def _gap_spec(max_epochs: int, k: int | None, every: int | None = 1) -> ObjectiveSpec:
    spec = _noisy_digits(max_epochs=max_epochs, patience=100)
    return replace(spec, gap_stop_epochs=k, insight_every=every)


def test_prunes_once_the_gap_widened_k_epochs_while_the_objective_stalled() -> None:
    k = 2
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    observer = Recorder()
    with pytest.raises(optuna.TrialPruned, match=r"pruned at epoch .*gap widened 2 epoch"):
        run_trial(trial, _gap_spec(max_epochs=12, k=k), observer)
    history = observer.epochs
    assert len(history) < 12  # stopped before the end
    gaps = [r.metrics["gap"] for r in history]
    losses = [r.metrics["val_loss"] for r in history]
    # the last k + 1 epochs: the gap rose each time, and val_loss's best is not after the first
    assert _widened(gaps, losses, k)
    # and it is the first epoch where that holds: the rule does not wait longer
    assert not _widened(gaps[:-1], losses[:-1], k)
    # why it was pruned is kept with the trial
    reason = study.trials[0].user_attrs["pruned_reason"]
    assert f"epoch {len(history) - 1}" in reason and "val_loss stalled" in reason


def test_action_stop_ends_the_trial_like_an_early_stop_with_its_best_epoch() -> None:
    k = 2
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    spec = replace(_gap_spec(max_epochs=12, k=k), gap_stop_action="stop")
    outcome = run_trial(trial, spec)  # no TrialPruned: the trial completes
    gaps = [r.metrics["gap"] for r in outcome.history]
    losses = [r.metrics["val_loss"] for r in outcome.history]
    assert outcome.epochs_run < 12
    assert _widened(gaps, losses, k) and not _widened(gaps[:-1], losses[:-1], k)
    assert outcome.value == min(losses) and outcome.best_epoch == losses.index(min(losses))
    assert "gap widened 2 epoch" in study.trials[0].user_attrs["stopped_reason"]


def test_at_the_default_cadence_only_the_measured_epochs_count() -> None:
    # every 2nd epoch has a gap: the rule reads those alone, skipped epochs break no run
    k = 2
    observer = Recorder()
    with pytest.raises(optuna.TrialPruned, match=r"gap widened 2 epoch"):
        run_trial(optuna.trial.FixedTrial({}), _gap_spec(16, k, every=None), observer)
    history = observer.epochs
    assert [("gap" in r.metrics) for r in history] == [e % 2 == 0 for e in range(len(history))]
    measured = [r for r in history if "gap" in r.metrics]
    assert history[-1] is measured[-1]  # it fires at a measured epoch
    gaps = [r.metrics["gap"] for r in measured]
    assert all(b > a for a, b in itertools.pairwise(gaps[-k - 1 :]))


def test_does_not_prune_when_k_is_not_shorter_than_the_run() -> None:
    # k widenings need k + 1 epochs: a run of k epochs trains to its end
    outcome = run_trial(optuna.trial.FixedTrial({}), _gap_spec(max_epochs=6, k=6))
    assert outcome.epochs_run == 6


def test_is_inactive_with_a_warning_when_the_trainer_yields_no_gap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # insight off: the built-in MLP yields no gap; the rule waits for one and never prunes
    spec = replace(_gap_spec(max_epochs=6, k=1), insight_every=0)
    with caplog.at_level(logging.WARNING, logger="trainers.objective"):
        outcome = run_trial(optuna.trial.FixedTrial({}), spec)
    if "gap" in outcome.history[-1].metrics:
        pytest.skip("this trainer yields a gap even with insight off")
    assert outcome.epochs_run == 6
    assert any("yielded no gap" in r.getMessage() for r in caplog.records)


def test_the_spec_hands_k_to_the_trainers_and_keeps_the_auto_pruner() -> None:
    spec = StudySpec.model_validate(tiny_spec(pruner={"name": "gap"}))
    assert spec.objective_spec().gap_stop_epochs == DEFAULT_GAP_EPOCHS
    assert isinstance(build_pruner(spec.pruner, spec), optuna.pruners.PercentilePruner)
    given = StudySpec.model_validate(tiny_spec(pruner={"name": "gap", "options": {"epochs": 5}}))
    assert given.objective_spec().gap_stop_epochs == 5
    assert given.objective_spec().gap_stop_action == "prune"
    stop = StudySpec.model_validate(
        tiny_spec(pruner={"name": "gap", "options": {"action": "stop"}})
    )
    assert stop.objective_spec().gap_stop_action == "stop"
    assert StudySpec.model_validate(tiny_spec()).objective_spec().gap_stop_epochs is None
