"""bench/sampler_regret.py: normalized regret against a hand-made table with a known optimum."""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
import pytest
import sampler_regret as sr


def tiny_table() -> sr.Table:
    # 2 x 2 grid; seed-means: (0,0)=4, (0,1)=3, (1,0)=2, (1,1)=1 -> f* = 1, median = 2.5
    values: dict[tuple[int, ...], np.ndarray] = {
        (0, 0): np.array([4.0, 4.0]),
        (0, 1): np.array([2.0, 4.0]),  # noisy: a lucky seed observes 2.0
        (1, 0): np.array([2.0, 2.0]),
        (1, 1): np.array([1.0, 1.0]),
    }
    return sr.Table(
        name="tiny",
        space={"alpha": [1e-4, 1e-2], "act": ["relu", "tanh"]},
        numeric={"alpha"},
        values=values,
    )


def test_regret_is_zero_at_the_optimum_and_one_at_the_median() -> None:
    table = tiny_table()
    assert table.f_star == 1.0
    assert table.f_median == 2.5
    assert table.regret((1, 1)) == 0.0
    assert table.regret((1, 0)) == pytest.approx(1 / 1.5)
    assert table.regret((0, 0)) == pytest.approx(3 / 1.5)


def test_distributions_index_numeric_grids_and_keep_strings_categorical() -> None:
    dists = tiny_table().distributions()
    assert dists["alpha"] == optuna.distributions.IntDistribution(0, 1)
    assert dists["act"] == optuna.distributions.CategoricalDistribution(["relu", "tanh"])
    assert tiny_table().config_of({"alpha": 1, "act": "tanh"}) == (1, 1)


def test_regret_curve_follows_the_best_observed_config() -> None:
    table = tiny_table()
    order = [{"alpha": 0, "act": "relu"}, {"alpha": 1, "act": "relu"}, {"alpha": 1, "act": "tanh"}]

    class Scripted(optuna.samplers.RandomSampler):
        def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
            return order[trial.number][name]

    curve = sr.regret_curve(table, Scripted(), n_trials=3, seed=0)
    assert curve == pytest.approx([2.0, 1 / 1.5, 0.0])
    assert sr.at_fraction(curve, 0.25) == curve[0]
    assert sr.at_fraction(curve, 0.5) == curve[1]  # round(1.5) = 2 trials
    assert sr.at_fraction(curve, 1.0) == curve[-1]


def test_incumbent_is_chosen_by_observation_but_scored_by_the_mean() -> None:
    table = tiny_table()
    order = [{"alpha": 0, "act": "tanh"}, {"alpha": 1, "act": "relu"}]

    class Scripted(optuna.samplers.RandomSampler):
        def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
            return order[trial.number][name]

    # (0, 1) has mean 3 but observes 2.0 or 4.0; (1, 0) always observes 2.0 (mean 2).
    # Lucky first observation: the tie keeps (0, 1) as incumbent -> regret (3 - 1) / 1.5.
    # Unlucky: (1, 0) becomes the incumbent -> regret (2 - 1) / 1.5.
    finals = set()
    for seed in range(8):
        lucky = table.values[(0, 1)][np.random.default_rng(seed).integers(2)] == 2.0
        curve = sr.regret_curve(table, Scripted(), n_trials=2, seed=seed)
        assert curve[-1] == pytest.approx(2 / 1.5 if lucky else 1 / 1.5)
        finals.add(lucky)
    assert finals == {True, False}  # both cases exercised


def test_main_prints_ratio_last(capsys: pytest.CaptureFixture[str], monkeypatch: Any) -> None:
    monkeypatch.setattr(sr, "load_table", lambda name: tiny_table())
    monkeypatch.setattr(
        "sys.argv", ["sampler_regret.py", "--seeds", "2", "--trials", "4", "--tables", "tiny"]
    )
    sr.main()
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("ratio: ")
    assert "regtune default" in "\n".join(lines)
