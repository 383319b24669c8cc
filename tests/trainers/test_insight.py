"""regtune's own per-epoch metrics for any module: weights, NLL, accuracy, ECE, gap, cadence."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any, Literal

import lightning.pytorch as pl
import optuna
import pytest
import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tests.trainers.conftest import fixed_space, synthetic_spec
from trainers import ObjectiveSpec, RegularizationParams, Trainer, get_trainer, run_trial
from trainers import insight as insight_module
from trainers import registry as registry_module
from trainers.builtin import SyntheticConfig, build_mlp
from trainers.insight import CLASSIFIER_METRICS, Insight, weight_stats, weights_of
from trainers.metrics import expected_calibration_error
from trainers.objective import _insight_for

INSIGHT = {"weight_l2", "near_zero_frac", "val_nll", "val_acc", "val_ece", "train_nll", "gap"}


def test_weight_stats_cover_matrices_and_kernels_not_biases() -> None:
    conv, linear = nn.Conv2d(1, 2, 3), nn.Linear(2, 3)
    net = nn.Sequential(conv, nn.Flatten(), linear, nn.BatchNorm1d(3))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(0.5)
        conv.weight[0].zero_()  # 9 of the 18 kernel entries
        linear.bias.fill_(100.0)  # 1-D: not a weight
    weights = weights_of(net)
    assert {id(w) for w in weights} == {id(conv.weight), id(linear.weight)}
    stats = weight_stats(weights)
    # 9 + 6 weights at 0.5, 9 at 0
    assert float(stats["weight_l2"]) == pytest.approx((15 * 0.25) ** 0.5)
    assert float(stats["near_zero_frac"]) == pytest.approx(9 / 24)


def test_weight_stats_agree_whether_flattened_or_tensor_by_tensor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # small models go through one flat copy, large ones tensor by tensor: same values
    conv = nn.Conv2d(3, 8, 3)
    net = nn.Sequential(conv, nn.Flatten(), nn.Linear(8, 5))
    with torch.no_grad():
        conv.weight.mul_(torch.rand(conv.weight.shape) < 0.5)  # some exact zeros
    flat = {k: float(v) for k, v in weight_stats(weights_of(net)).items()}
    monkeypatch.setattr(insight_module, "_FLAT_LIMIT", 0)
    split = {k: float(v) for k, v in weight_stats(weights_of(net)).items()}
    assert flat["near_zero_frac"] == split["near_zero_frac"] > 0
    assert flat["weight_l2"] == pytest.approx(split["weight_l2"], rel=1e-6)


class _Registered:
    """Put extra `Trainer`s in the registry for one test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.patch = monkeypatch

    def __call__(self, *trainers: Trainer) -> None:
        cache = dict(registry_module.available_trainers())
        cache.update({t.name: t for t in trainers})
        self.patch.setattr(registry_module, "_cache", cache)


@pytest.fixture
def register(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Registered]:
    yield _Registered(monkeypatch)


def test_plugin_that_logs_only_its_own_metric_gets_every_insight_metric(
    test_plugin: str,
) -> None:
    spec = ObjectiveSpec(trainer="insight-cnn", metric="val_nll_custom")
    outcome = run_trial(optuna.trial.FixedTrial({}), spec)
    assert outcome.epochs_run == 4
    # the default cadence: every 2nd epoch
    assert ["gap" in r.metrics for r in outcome.history] == [True, False, True, False]
    for record in outcome.history[::2]:
        m = record.metrics
        assert set(m) >= INSIGHT
        assert m["gap"] == pytest.approx(m["val_nll"] - m["train_nll"], abs=1e-6)
        # regtune's forward over the validation loader agrees with the plugin's own loss
        assert m["val_nll"] == pytest.approx(m["val_nll_custom"], rel=1e-5)
        assert 0.0 <= m["val_ece"] <= 1.0 and 0.0 <= m["val_acc"] <= 1.0
        assert m["weight_l2"] > 0 and 0.0 <= m["near_zero_frac"] < 1.0
    # it learns: the metrics are measured on the trained weights, epoch by epoch
    assert outcome.history[2].metrics["val_acc"] > outcome.history[0].metrics["val_acc"]
    assert set(outcome.best_metrics) >= INSIGHT


def test_an_insight_metric_can_be_the_objective(test_plugin: str) -> None:
    assert {"val_nll", "gap", "weight_l2"} <= set(get_trainer("insight-cnn").metrics)
    spec = ObjectiveSpec(trainer="insight-cnn", trainer_config={"max_epochs": 2}, metric="val_ece")
    study = optuna.create_study()
    study.optimize(lambda t: run_trial(t, spec).value, n_trials=1)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [0, 1]


def test_overfitting_shows_as_a_widening_gap(test_plugin: str) -> None:
    # 50 % label noise on few training rows and no regularization: the CNN memorizes them
    spec = ObjectiveSpec(
        trainer="insight-cnn",
        trainer_config={"max_epochs": 25, "n_train": 200, "label_noise": 0.5, "channels": 16},
        search_space=fixed_space(batch_size=16, patience=100),
        metric="val_nll_custom",
    )
    outcome = run_trial(optuna.trial.FixedTrial({}), spec)
    gaps = [r.metrics["gap"] for r in outcome.history if "gap" in r.metrics]
    assert gaps[-1] > gaps[0] + 0.3


def test_the_builtin_module_reports_what_insight_computes_for_it() -> None:
    # Same definitions on both sides: regtune's generic pass over a trained built-in module
    # gives the values the module reported itself.
    module, datamodule = build_mlp(
        "synthetic",
        RegularizationParams(batch_size=32, dropout=0.3),
        SyntheticConfig(n_samples=240, n_features=8, n_informative=4, hidden_sizes=(16,)),
    )
    trainer = pl.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule)
    generic = Insight("classification").compute(trainer, module, present=())
    assert set(generic) == INSIGHT | {"train_acc"}
    for name, value in generic.items():
        assert module.epoch_metrics[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
    assert module.epoch_metrics["val_loss"] == module.epoch_metrics["val_nll"]
    assert module.epoch_metrics["train_eval_loss"] == module.epoch_metrics["train_nll"]
    x, y = datamodule.splits.x_val, datamodule.splits.y_val
    module.eval()
    with torch.no_grad():
        probs = torch.softmax(module(x), 1)
    assert generic["val_ece"] == pytest.approx(expected_calibration_error(probs, y), rel=1e-5)


class _Config(BaseModel):
    max_epochs: int = 3


def _dict_batches_trainer(*, validate_via_net: bool = False) -> Trainer:
    """A classifier whose batches are dicts, declared with a batch_to_xy hook.

    With ``validate_via_net`` its validation_step calls the sub-network, not ``forward``, so
    regtune cannot keep the validation pass's logits and runs its own pass.
    """

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: dict[str, torch.Tensor], idx: int) -> torch.Tensor:
            return F.cross_entropy(self(batch["features"]), batch["label"])

        def validation_step(self, batch: dict[str, torch.Tensor], idx: int) -> None:
            net = self.net if validate_via_net else self
            self.log("val_mine", F.cross_entropy(net(batch["features"]), batch["label"]))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class Data(pl.LightningDataModule):
        def __init__(self) -> None:
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.x = torch.randn(64, 4, generator=g)
            self.y = self.x[:, :3].argmax(1)

        def _loader(self) -> DataLoader[Any]:
            rows = [{"features": a, "label": b} for a, b in zip(self.x, self.y, strict=True)]
            return DataLoader(rows, batch_size=16)  # type: ignore[arg-type]

        def train_dataloader(self) -> DataLoader[Any]:
            return self._loader()

        def val_dataloader(self) -> DataLoader[Any]:
            return self._loader()

    return Trainer(
        name="dict-batches",
        description="test",
        config_model=_Config,
        build=lambda params, config: (Module(), Data()),
        metrics=("val_mine",),
        task="classification",
        batch_to_xy=lambda b: (b["features"], b["label"]),
    )


@pytest.mark.parametrize("validate_via_net", [False, True])
def test_batch_to_xy_hook_reads_other_batch_shapes(
    register: _Registered, validate_via_net: bool
) -> None:
    register(_dict_batches_trainer(validate_via_net=validate_via_net))
    outcome = run_trial(
        optuna.trial.FixedTrial({}), ObjectiveSpec(trainer="dict-batches", metric="val_mine")
    )
    # the epochs the default cadence computes, and the reported epoch (filled when skipped)
    for m in [*(r.metrics for r in outcome.history[::2]), outcome.best_metrics]:
        # train and validation are the same rows here: no gap, the same loss as the module's
        assert m["gap"] == pytest.approx(0.0, abs=1e-6)
        assert m["val_nll"] == pytest.approx(m["val_mine"], rel=1e-5)


def _regression_trainer(**declaration: Any) -> Trainer:
    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Linear(32, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x).squeeze(1)

        def training_step(self, batch: Any, idx: int) -> torch.Tensor:
            x, y = batch
            return F.mse_loss(self(x), y)

        def validation_step(self, batch: Any, idx: int) -> None:
            x, y = batch
            self.log("val_mse", F.mse_loss(self(x), y))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=0.01)

    class Data(pl.LightningDataModule):
        def __init__(self) -> None:
            super().__init__()
            g = torch.Generator().manual_seed(0)
            x = torch.randn(80, 3, generator=g)
            y = x.sum(1) + 0.5 * torch.randn(80, generator=g)
            self.train, self.val = TensorDataset(x[:60], y[:60]), TensorDataset(x[60:], y[60:])

        def train_dataloader(self) -> DataLoader[Any]:
            return DataLoader(self.train, batch_size=8, shuffle=True)

        def val_dataloader(self) -> DataLoader[Any]:
            return DataLoader(self.val, batch_size=20)

    return Trainer(
        name="tiny-regression",
        description="test",
        config_model=_Config,
        build=lambda params, config: (Module(), Data()),
        metrics=("val_mse",),
        task="regression",
        **declaration,
    )


def test_regression_gets_the_gap_on_its_loss(register: _Registered) -> None:
    register(_regression_trainer())
    spec = ObjectiveSpec(trainer="tiny-regression", metric="val_mse")
    last = run_trial(optuna.trial.FixedTrial({}), spec).best_metrics
    assert last["val_task_loss"] == pytest.approx(last["val_mse"], rel=1e-5)  # MSE by default
    assert last["gap"] == pytest.approx(last["val_task_loss"] - last["train_task_loss"], abs=1e-6)
    assert "val_ece" not in last and "weight_l2" in last
    # the declared loss is the one measured
    register(_regression_trainer(loss=F.l1_loss))
    l1 = run_trial(optuna.trial.FixedTrial({}), spec).best_metrics
    assert l1["val_task_loss"] != pytest.approx(l1["val_mse"], rel=1e-3)


def test_cadence_computes_every_nth_epoch_unless_the_objective_needs_it(
    test_plugin: str,
) -> None:
    config = {"max_epochs": 4}
    spec = ObjectiveSpec(
        trainer="insight-cnn", trainer_config=config, metric="val_nll_custom", insight_every=2
    )
    history = run_trial(optuna.trial.FixedTrial({}), spec).history
    assert ["gap" in r.metrics for r in history] == [True, False, True, False]
    off = ObjectiveSpec(
        trainer="insight-cnn", trainer_config=config, metric="val_nll_custom", insight_every=0
    )
    assert all(
        "val_ece" not in r.metrics for r in run_trial(optuna.trial.FixedTrial({}), off).history
    )
    needed = ObjectiveSpec(
        trainer="insight-cnn", trainer_config=config, metric="gap", insight_every=0
    )
    assert all("gap" in r.metrics for r in run_trial(optuna.trial.FixedTrial({}), needed).history)
    # the built-in module follows the same cadence
    every = replace(synthetic_spec(max_epochs=3), insight_every=1)
    builtin = run_trial(optuna.trial.FixedTrial({}), every)
    assert all(set(CLASSIFIER_METRICS) <= set(r.metrics) for r in builtin.history)
    sparse = ObjectiveSpec(
        trainer="synthetic-mlp",
        trainer_config=synthetic_spec(max_epochs=3).trainer_config,
        insight_every=2,
    )
    assert [
        "val_ece" in r.metrics for r in run_trial(optuna.trial.FixedTrial({}), sparse).history
    ] == [
        True,
        False,
        True,
    ]


def test_the_metrics_leave_the_training_unchanged(test_plugin: str) -> None:
    # the extra passes iterate DataLoaders, which draw from torch's generator: restored after
    def curve(every: int) -> list[float]:
        trial = optuna.trial.FixedTrial({})
        trial.set_user_attr("train_seed", 3)
        spec = ObjectiveSpec(
            trainer="insight-cnn",
            trainer_config={"max_epochs": 3, "n_train": 300},
            search_space=fixed_space(dropout=0.3, batch_size=32),
            metric="val_nll_custom",
            insight_every=every,
        )
        return [r.metrics["val_nll_custom"] for r in run_trial(trial, spec).history]

    assert curve(1) == curve(0)


def _cnn_trial(every: int | None, report_epoch: Literal["best", "last"], epochs: int) -> Any:
    # 50 % label noise on 200 rows: validation NLL falls to epoch 3, then rises at epoch 4
    trial = optuna.trial.FixedTrial({})
    trial.set_user_attr("train_seed", 5)
    spec = ObjectiveSpec(
        trainer="insight-cnn",
        trainer_config={
            "max_epochs": epochs,
            "n_train": 200,
            "label_noise": 0.5,
            "learning_rate": 0.03,
        },
        search_space=fixed_space(batch_size=16, patience=100),
        metric="val_nll_custom",
        insight_every=every,
        report_epoch=report_epoch,
    )
    return run_trial(trial, spec)


@pytest.mark.parametrize(("report_epoch", "epochs"), [("best", 5), ("last", 4)])
def test_a_skipped_reported_epoch_gets_its_own_metrics_after_training(
    test_plugin: str, report_epoch: Literal["best", "last"], epochs: int
) -> None:
    # The default cadence skips odd epochs; the reported one (epoch 3: the best of 5, before
    # the last; or the last of 4) still gets the metrics cadence 1 gives it, on its weights.
    sparse = _cnn_trial(None, report_epoch, epochs)
    dense = _cnn_trial(1, report_epoch, epochs)
    curve = [r.metrics["val_nll_custom"] for r in sparse.history]
    assert curve == [r.metrics["val_nll_custom"] for r in dense.history]  # same training
    assert ["gap" in r.metrics for r in sparse.history] == [e % 2 == 0 for e in range(epochs)]
    assert sparse.best_epoch == dense.best_epoch == 3
    assert "gap" not in sparse.history[3].metrics  # the history stays as the observer got it
    expected = dense.history[3].metrics
    for name in INSIGHT | {"train_acc"}:
        assert sparse.best_metrics[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-6)
    assert sparse.best_metrics["val_nll_custom"] == expected["val_nll_custom"]


def test_the_default_cadence_fills_the_builtin_modules_best_epoch() -> None:
    spec = replace(
        synthetic_spec(max_epochs=2), search_space=fixed_space(dropout=0.2, patience=100)
    )
    sparse = run_trial(optuna.trial.FixedTrial({}), spec)
    dense = run_trial(optuna.trial.FixedTrial({}), replace(spec, insight_every=1))
    assert "val_ece" not in sparse.history[1].metrics
    assert sparse.best_epoch == dense.best_epoch == 1
    for name in ("gap", "val_ece", "near_zero_frac", "weight_l2", "train_nll"):
        assert sparse.best_metrics[name] == pytest.approx(
            dense.best_metrics[name], rel=1e-5, abs=1e-6
        ), name


def test_the_default_cadence_is_every_2nd_epoch_and_every_epoch_under_ddp(
    test_plugin: str,
) -> None:
    # a DDP trial gets no after-training fill of a skipped reported epoch: every epoch there
    definition = get_trainer("insight-cnn")
    module = object()
    spec = ObjectiveSpec(trainer="insight-cnn", metric="val_nll_custom")
    assert _insight_for(definition, spec, module).every == 2
    assert _insight_for(definition, replace(spec, devices=2), module).every == 1
    # a cadence set by the study (or the trainer) is kept
    assert _insight_for(definition, replace(spec, devices=2, insight_every=3), module).every == 3
    assert _insight_for(replace(definition, insight_every=4), spec, module).every == 4


def test_a_declared_classifier_without_forward_is_a_clear_error(test_plugin: str) -> None:
    tiny = get_trainer("test-plugin-lightning")  # its module has no forward()
    declared = Trainer(
        name="no-forward",
        description="test",
        config_model=tiny.config_model,
        build=tiny.build,
        metrics=tiny.metrics,
        task="classification",
    )
    cache = dict(registry_module.available_trainers())
    cache["no-forward"] = declared
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry_module, "_cache", cache)
        with pytest.raises(TypeError, match="defines no forward"):
            run_trial(optuna.trial.FixedTrial({}), ObjectiveSpec(trainer="no-forward"))


def test_bad_declarations_are_refused() -> None:
    def build(params: RegularizationParams, config: Any) -> tuple[Any, Any]:
        raise AssertionError

    with pytest.raises(ValueError, match="task must be"):
        Trainer(name="x", description="", config_model=_Config, build=build, task="ranking")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="loss= is for task='regression'"):
        Trainer(
            name="x",
            description="",
            config_model=_Config,
            build=build,
            task="classification",
            loss=F.l1_loss,
        )
    with pytest.raises(ValueError, match="insight_every"):
        Trainer(name="x", description="", config_model=_Config, build=build, insight_every=-1)


def test_a_regression_output_column_is_compared_with_its_targets_not_broadcast() -> None:
    """A (n, 1) output against (n,) targets is one column: before, F.mse_loss broadcast it to
    (n, n) and val_task_loss and gap were wrong (6.80 where the model's own MSE was 3.34)."""
    pred, y = torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([1.0, 2.0, 3.0])
    assert insight_module.regression_loss(pred, y).item() == pytest.approx(1 / 3)
    assert insight_module.regression_loss(pred.squeeze(-1), y.unsqueeze(-1)).item() == (
        pytest.approx(1 / 3)
    )
    with pytest.raises(ValueError, match=r"shape \(3, 2\) but the targets \(3,\)"):
        insight_module.regression_loss(torch.zeros(3, 2), y)


def test_the_training_subset_keeps_to_the_rows_the_loader_samples() -> None:
    """A loader whose sampler picks the training rows of a shared set (SubsetRandomSampler):
    the train metrics' subset comes from those rows only (before: evenly over the whole set,
    validation rows included); a custom batch sampler is not second-guessed."""
    from torch.utils.data import BatchSampler, SequentialSampler, SubsetRandomSampler

    data = TensorDataset(torch.arange(400.0).unsqueeze(1), torch.zeros(400))
    picked = DataLoader(data, batch_size=32, sampler=SubsetRandomSampler(range(300)))
    batches = insight_module._subset_batches(picked, 256, 64)
    assert batches is not None
    rows = torch.cat([x for x, _ in batches]).squeeze(1)
    assert len(rows) == 256 and int(rows.max()) < 300
    plain = insight_module._subset_batches(DataLoader(data, batch_size=32), 256, 64)
    assert plain is not None and int(torch.cat([x for x, _ in plain]).max()) >= 300

    class Pairs(BatchSampler):
        pass

    custom = DataLoader(data, batch_sampler=Pairs(SequentialSampler(data), 2, False))
    assert insight_module._subset_batches(custom, 256, 64) is None
