"""Plugin discovery through entry points, and both Lightning namespaces."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import lightning.pytorch
import optuna
import pytest
import pytorch_lightning

from trainers import ObjectiveSpec, available_trainers, get_trainer, make_objective, run_trial
from trainers._lightning import namespace_of
from trainers.registry import ENTRY_POINT_GROUP

BUILTIN = {"digits-mlp", "breast-cancer-mlp", "wine-mlp", "synthetic-mlp"}


def test_builtins_are_registered_through_entry_points() -> None:
    names = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert names >= BUILTIN
    trainers = available_trainers(refresh=True)
    assert set(trainers) >= BUILTIN
    for name in BUILTIN:
        assert trainers[name].name == name
        assert "val_loss" in trainers[name].metrics
        assert trainers[name].config_schema()["properties"]["max_epochs"]["minimum"] == 1


def test_an_installed_distribution_adds_its_trainers(test_plugin: str) -> None:
    dist = importlib.metadata.distribution(test_plugin)
    declared = {ep.name for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP}
    assert declared == {"test-plugin-pl", "test-plugin-lightning", "insight-cnn"}
    assert declared <= set(available_trainers(refresh=True))
    assert get_trainer("test-plugin-pl").description == "tiny test trainer (pytorch_lightning)"


@pytest.mark.parametrize(
    ("name", "namespace"),
    [("test-plugin-pl", pytorch_lightning), ("test-plugin-lightning", lightning.pytorch)],
)
def test_both_lightning_namespaces_train_and_prune(
    test_plugin: str, name: str, namespace: object
) -> None:
    module, datamodule = get_trainer(name).build(*_defaults(name))
    assert namespace_of(module, datamodule) is namespace
    spec = ObjectiveSpec(
        trainer=name, trainer_config={"max_epochs": 3}, metric="val_acc", direction="maximize"
    )
    study = optuna.create_study(direction="maximize")
    study.optimize(make_objective(spec), n_trials=1)
    (done,) = study.trials
    assert done.state == optuna.trial.TrialState.COMPLETE
    assert sorted(done.intermediate_values) == [0, 1, 2]
    assert done.value == max(done.intermediate_values.values())
    # and the namespace's own pruning path works: a threshold no accuracy can reach
    pruned = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0)
    )
    pruned.optimize(make_objective(spec), n_trials=1)
    assert pruned.trials[0].state == optuna.trial.TrialState.PRUNED


def _defaults(name: str):  # type: ignore[no-untyped-def]
    from trainers import RegularizationParams

    return RegularizationParams(), get_trainer(name).validate_config({})


def test_mixing_namespaces_is_refused(test_plugin: str) -> None:
    pl_module, _ = get_trainer("test-plugin-pl").build(*_defaults("test-plugin-pl"))
    _, l_data = get_trainer("test-plugin-lightning").build(*_defaults("test-plugin-lightning"))
    with pytest.raises(TypeError, match="cannot be mixed"):
        namespace_of(pl_module, l_data)
    with pytest.raises(TypeError, match="not a LightningModule"):
        namespace_of(object(), l_data)


def test_a_plugins_build_mistakes_are_named(test_plugin: str) -> None:
    """What a build returns is checked with a message naming the trainer and the contract
    (before: 'cannot unpack non-iterable ...'); a plain DataLoader in place of the data module
    is not called a namespace mix."""
    from dataclasses import replace

    import torch
    from torch.utils.data import DataLoader, TensorDataset

    plugin = get_trainer("test-plugin-pl")
    params, config = _defaults("test-plugin-pl")
    module, data = plugin.build(params, config)
    returns: list[Any] = [module, (module, data, None)]
    for built, got in zip(returns, ["got [A-Za-z]+Module", "got 3 values"], strict=True):
        broken = replace(plugin, build=lambda _p, _c, built=built: built)
        with pytest.raises(TypeError, match=rf"'test-plugin-pl': build\(\) must return .*{got}"):
            broken.build_seeded(params, config, None)
    with pytest.raises(TypeError, match="wrap its DataLoaders in a LightningDataModule"):
        namespace_of(module, DataLoader(TensorDataset(torch.zeros(1))))


def test_plugin_without_test_step_has_no_test_metrics(test_plugin: str) -> None:
    spec = ObjectiveSpec(trainer="test-plugin-pl", trainer_config={"max_epochs": 2})
    outcome = run_trial(optuna.trial.FixedTrial({}), spec)
    assert outcome.test_metrics is None
    assert outcome.epochs_run == 2
