"""bench/sampler_regret.py: normalized regret against a hand-made table with a known optimum."""

from __future__ import annotations

import json
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


def test_linear_scale_searches_wide_grids_by_value_and_snaps_to_the_nearest() -> None:
    table = tiny_table()  # alpha spans 1e-4..1e-2: two decades
    dists = table.distributions(linear=True)
    assert dists["alpha"] == optuna.distributions.FloatDistribution(1e-4, 1e-2)
    assert dists["act"] == table.distributions()["act"]  # strings stay categorical
    assert table.config_of({"alpha": 2e-3, "act": "relu"}) == (0, 0)  # nearer 1e-4
    assert table.config_of({"alpha": 6e-3, "act": "relu"}) == (1, 0)  # nearer 1e-2
    narrow = sr.Table(
        name="narrow",
        space={"dropout": [0.1, 0.5]},
        numeric={"dropout"},
        values={(0,): np.array([1.0]), (1,): np.array([2.0])},
    )
    # a grid spanning less than two decades keeps its index distribution
    assert narrow.distributions(linear=True) == narrow.distributions()


def test_a_linear_prior_rarely_samples_the_low_decades() -> None:
    # What the log-scale presets avoid: uniform samples over 1e-8..1 almost never fall below
    # 1e-2, so small weight decays are (nearly) never tried.
    table = sr.Table(
        name="alpha",
        space={"alpha": [1e-8, 1e-6, 1e-4, 1e-2, 1.0]},
        numeric={"alpha"},
        values={(i,): np.array([float(i)]) for i in range(5)},
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    picked = [
        table.config_of(study.ask(table.distributions(linear=True)).params)[0] for _ in range(200)
    ]
    assert sum(i < 3 for i in picked) <= 4  # below ~5e-3: about 0.5 % of uniform draws
    assert sum(i < 3 for i in picked) < sum(i >= 3 for i in picked)


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
    # the summary has mean, median and worst decile at each fraction, for every arm
    header = next(line for line in lines if line.startswith("| sampler "))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells[1:4] == ["@25% mean", "@25% median", "@25% p90"]
    assert cells[-2:] == ["@100% p90", "sampler wall s"]
    rows = [line for line in lines[lines.index(header) + 2 :] if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows] == list(sr.arms())
    assert all(len(r.strip("|").split("|")) == len(cells) for r in rows)


def test_worst_decile_is_the_90th_percentile_over_table_seeds() -> None:
    values = [float(i) for i in range(11)]  # 0..10: 90 % of them at or below 9
    assert sr.worst_decile(values) == pytest.approx(9.0)
    regrets = {"arm": {f: [0.0] * 9 + [1.0] for f in sr.FRACTIONS}}  # one trapped seed in 10
    (row,) = sr.summary_rows(regrets, {"arm": 2.5})
    assert row[0] == "arm"
    for i in range(len(sr.FRACTIONS)):
        mean, median, p90 = row[1 + 3 * i : 4 + 3 * i]
        assert (mean, median) == (pytest.approx(0.1), 0.0)
        assert p90 == pytest.approx(0.1)  # interpolated between the 9th (0) and 10th (1) value
    assert row[-1] == 2.5


def test_arms_and_a_subset_run_in_parallel_processes(
    capsys: pytest.CaptureFixture[str], monkeypatch: Any, tmp_path: Any
) -> None:
    monkeypatch.setattr(sr, "load_table", lambda name: tiny_table())
    out = tmp_path / "regrets.json"
    argv = ["x", "--seeds", "2", "--trials", "3", "--tables", "a", "b", "--jobs", "2"]
    argv += ["--arms", "random", "tpe + 20 % random", "--save", str(out)]
    monkeypatch.setattr("sys.argv", argv)
    sr.main()
    text = capsys.readouterr().out
    assert "tpe (Optuna defaults)" not in text  # only the arms asked for
    saved = json.loads(out.read_text())
    assert set(saved["regrets"]) == {"random", "tpe + 20 % random"}
    assert all(len(v) == 2 * 2 for v in saved["regrets"]["random"].values())  # 2 tables x 2 seeds
    assert text.strip().splitlines()[-1] == "ratio: nan"  # no default arm: no headline
