"""bench/search_efficiency.py: same spec and data for every arm, honest sample accounting."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import optuna
import pytest
import search_efficiency as se

from service.studies import extras
from service.studies.confirmation import ConfigRuns, rank_by_mean
from service.studies.extras import confirm_seed
from trainers import run_trial

TINY_EPOCHS = 2


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every call of run_trial made by the arms: the spec, the distributions, the epochs run."""
    calls: list[dict[str, Any]] = []

    def spy(trial: optuna.trial.BaseTrial, spec: Any, observer: Any = None) -> Any:
        call: dict[str, Any] = {"spec": spec}
        calls.append(call)
        try:
            outcome = run_trial(trial, spec, observer)
        finally:
            call["distributions"] = dict(trial.distributions)
            call["params"] = dict(trial.params)
            call["epochs_run"] = trial.user_attrs.get("epochs_run")
        return outcome

    monkeypatch.setattr(se, "run_trial", spy)
    return calls


def test_the_three_arms_train_the_same_spec_data_and_space(
    recorded: list[dict[str, Any]],
) -> None:
    spec = se.study_spec("digits-noisy", max_epochs=TINY_EPOCHS)
    rows = se.train_rows(spec)
    seen = {}
    for name, arm in se.ARMS.items():
        start = len(recorded)
        arm(spec, 0, rows, 2, math.inf)
        seen[name] = recorded[start:]
    specs = {repr(c["spec"]) for calls in seen.values() for c in calls}
    assert len(specs) == 1  # one ObjectiveSpec: same trainer, config (label noise), space, metric
    only = recorded[0]["spec"]
    assert only.trainer_config["label_noise"] == 0.4
    assert only.trainer_config["max_epochs"] == TINY_EPOCHS
    spaces = {repr(sorted(c["distributions"].items())) for c in recorded}
    assert len(spaces) == 1
    assert set(recorded[0]["distributions"]) == set(spec.search_space.searched())


def test_samples_are_epochs_times_training_rows_pruned_trials_included(
    recorded: list[dict[str, Any]],
) -> None:
    spec = se.study_spec("digits-noisy", max_epochs=TINY_EPOCHS)
    rows = se.train_rows(spec)
    # digits: 1,797 rows, 20 % validation and 20 % test -> about 60 % train
    assert 1000 < rows < 1100
    sampler = optuna.samplers.RandomSampler(seed=0)
    run = se.run_arm(spec, sampler, optuna.pruners.NopPruner(), rows, n_trials=2)
    assert run.samples == sum(c["epochs_run"] for c in recorded) * rows
    assert run.samples == 2 * TINY_EPOCHS * rows  # patience >= 2: no early stop in 2 epochs

    recorded.clear()
    # prunes every trial at its first report: each costs exactly one epoch
    pruner = optuna.pruners.ThresholdPruner(upper=0.0)
    run = se.run_arm(spec, optuna.samplers.RandomSampler(seed=1), pruner, rows, n_trials=3)
    assert run.n_pruned == 3
    assert [c["epochs_run"] for c in recorded] == [1, 1, 1]
    assert run.samples == 3 * rows
    assert run.curve == [(rows, math.inf), (2 * rows, math.inf), (3 * rows, math.inf)]


def test_budget_stops_an_arm_at_the_first_trial_past_it() -> None:
    spec = se.study_spec("digits-noisy", max_epochs=TINY_EPOCHS)
    rows = se.train_rows(spec)
    sampler = optuna.samplers.RandomSampler(seed=0)
    run = se.run_arm(
        spec, sampler, optuna.pruners.NopPruner(), rows, n_trials=50, sample_budget=rows * 3
    )
    assert run.n_trials == 2  # 2 epochs each: the second trial crosses 3 epochs' worth


def test_anytime_curve_queries() -> None:
    run = se.ArmRun(curve=[(100, 2.0), (200, 1.5), (300, 1.5), (400, 1.0)])
    assert run.best_at(50) == math.inf
    assert run.best_at(250) == 1.5
    assert run.best_at(math.inf) == 1.0
    assert run.samples_to_reach(1.5) == 200
    assert run.samples_to_reach(1.2) == 400
    assert run.samples_to_reach(0.5) == math.inf
    assert [run.trials_within(s) for s in (50, 100, 250, math.inf)] == [0, 1, 2, 4]


def test_incumbents_are_the_configs_the_arm_would_have_returned() -> None:
    spec = se.study_spec("digits-noisy", max_epochs=TINY_EPOCHS)
    rows = se.train_rows(spec)
    run = se.run_arm(
        spec, optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner(), rows, n_trials=4
    )
    assert run.incumbents[-1][1] == run.best_params
    assert [spent for spent, _ in run.incumbents] == sorted({s for s, _ in run.incumbents})
    assert run.incumbent_at(0) is None
    for spent, params in run.incumbents:
        assert run.incumbent_at(spent) == params
        assert run.best_at(spent) < run.best_at(spent - 1)  # each one was a new best


def test_retrainer_scores_a_config_by_its_mean_over_other_training_seeds(
    recorded: list[dict[str, Any]],
) -> None:
    spec = se.study_spec("digits-noisy", max_epochs=TINY_EPOCHS)
    params = {
        "weight_decay": 1e-3,
        "dropout": 0.2,
        "label_smoothing": 0.1,
        "batch_size": 64,
        "patience": 2,
    }
    retrainer = se.Retrainer(spec, 2)
    value, acc = retrainer(params)
    assert [c["spec"].trainer_config["train_seed"] for c in recorded] == [1001, 1002]
    study_config = dict(se.objective_spec(spec).trainer_config)
    assert study_config.pop("train_seed", None) is None
    for call in recorded:  # everything but the training seed is the study's spec
        config = dict(call["spec"].trainer_config)
        del config["train_seed"]
        assert config == study_config
    direct = [run_trial(optuna.trial.FixedTrial(params), c["spec"]) for c in recorded]
    assert value == pytest.approx(sum(o.value for o in direct) / 2)
    assert retrainer.runs(params) == pytest.approx([o.value for o in direct])
    assert 0.0 < acc <= 1.0
    assert retrainer(dict(params)) == (value, acc)  # cached: no new training
    assert len(recorded) == 2  # the cached call trained nothing
    nothing, no_acc = retrainer(None)
    assert nothing == math.inf and math.isnan(no_acc)


def test_candidate_arm_changes_only_sampler_or_pruner(recorded: list[dict[str, Any]]) -> None:
    spec = se.study_spec("digits-noisy", max_epochs=TINY_EPOCHS)
    name, arm = se.candidate_arm("none", {"pruner": {"name": "none"}})
    assert name == "c' none"
    arm(spec, 0, se.train_rows(spec), 1, math.inf)
    assert recorded[0]["spec"] == se.objective_spec(spec)


def test_finished_within_keeps_complete_trials_finished_inside_the_budget() -> None:
    def trial(epochs: int, state: optuna.trial.TrialState) -> Any:
        return optuna.trial.create_trial(
            state=state,
            value=1.0 if state == optuna.trial.TrialState.COMPLETE else None,
            user_attrs={"epochs_run": epochs},
        )

    complete, pruned = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED
    study = optuna.create_study()
    study.add_trials([trial(3, complete), trial(1, pruned), trial(2, complete), trial(1, complete)])
    # what run_arm records: samples spent after each trial, in finish order (10 rows)
    run = se.ArmRun(curve=[(30, 1.0), (40, 1.0), (60, 1.0), (70, 1.0)], study=study)
    kept = study.trials
    assert se.finished_within(run, 50) == [kept[0]]  # 30, 40, then 60 > 50
    assert se.finished_within(run, 60) == [kept[0], kept[2]]
    assert se.finished_within(run, math.inf) == [kept[0], kept[2], kept[3]]


def _value(trial: optuna.trial.FrozenTrial) -> float:
    assert trial.value is not None
    return trial.value


def test_confirmation_retrains_the_top_k_with_the_products_seeds_and_ranks_by_mean(
    recorded: list[dict[str, Any]],
) -> None:
    spec = se.study_spec("digits-noisy", max_epochs=TINY_EPOCHS)
    rows = se.train_rows(spec)
    run = se.run_arm(
        spec, optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner(), rows, n_trials=4
    )
    assert run.study is not None
    recorded.clear()
    confirmed = se.Confirmer(spec, rows, top_k=2, repeats=2)(run, math.inf)

    best_two = sorted(run.study.trials, key=_value)[:2]
    seeds = {
        (repr(sorted(t.params.items())), confirm_seed(int(t.user_attrs["train_seed"]), j))
        for t in best_two
        for j in range(2)
    }
    trained = {
        (repr(sorted(c["params"].items())), c["spec"].trainer_config["train_seed"])
        for c in recorded
    }
    assert len(recorded) == 4
    assert trained == seeds
    # patience >= 2: no early stop in 2 epochs; the 4 confirmation runs are counted
    assert confirmed.samples == run.samples + 4 * TINY_EPOCHS * rows
    assert confirmed.search_trials == 4
    # the pick: the product's rank_by_mean over each config's search run and its repeats
    configs = []
    for t in best_two:
        repeats = [
            run_trial(
                optuna.trial.FixedTrial(dict(t.params)),
                dataclasses.replace(
                    se.objective_spec(spec),
                    trainer_config={
                        **spec.trainer_config,
                        "train_seed": confirm_seed(int(t.user_attrs["train_seed"]), j),
                    },
                ),
            ).value
            for j in range(2)
        ]
        configs.append(ConfigRuns(trial_number=t.number, values=[_value(t), *repeats]))
    winner = rank_by_mean(configs, maximize=False)[0].trial_number
    assert confirmed.params == run.study.trials[winner].params
    assert confirmed.changed == (winner != best_two[0].number)


def test_confirmation_keeps_its_estimated_cost_inside_the_budget() -> None:
    spec = se.study_spec("digits-noisy", max_epochs=TINY_EPOCHS)
    rows = se.train_rows(spec)
    run = se.run_arm(
        spec, optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner(), rows, n_trials=4
    )
    confirmer = se.Confirmer(spec, rows, top_k=2, repeats=2)
    # 2 epochs per trial; confirming 2 configs twice costs 8 epochs: 2 search trials fit in 12
    confirmed = confirmer(run, 12 * rows)
    assert confirmed.search_trials == 2
    assert confirmed.samples == 12 * rows
    one = confirmer(run, 8 * rows)  # one trial (2 epochs) and its 2 repeats fit in 8 epochs
    assert (one.search_trials, one.samples) == (1, 6 * rows)
    nothing = confirmer(run, 5 * rows)  # not even one trial and its confirmation
    assert nothing.params is None and nothing.samples == 0


def test_racing_asks_the_products_plan_again_after_each_round(
    recorded: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`confirm.race` in the benchmark is the product's plan: after round 0 the race (here a
    stand-in rule that keeps the first configuration) leaves one config, which alone gets
    repeats 2 and 3; the runs not trained cost nothing."""
    spec = se.study_spec("digits-noisy", max_epochs=TINY_EPOCHS)
    rows = se.train_rows(spec)
    run = se.run_arm(
        spec, optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner(), rows, n_trials=4
    )
    assert run.study is not None
    rounds: list[list[list[float]]] = []

    def keep_first(configs: list[ConfigRuns], maximize: bool) -> list[ConfigRuns]:
        rounds.append([list(c.values) for c in configs])
        return configs[:1]

    monkeypatch.setattr(extras, "race_survivors", keep_first)
    recorded.clear()
    confirmed = se.Confirmer(spec, rows, top_k=2, repeats=3, race=True)(run, math.inf)

    best, second = sorted(run.study.trials, key=_value)[:2]
    repeated = [c["spec"].trainer_config["train_seed"] for c in recorded]
    base = int(best.user_attrs["train_seed"])
    other = int(second.user_attrs["train_seed"])
    assert repeated == [
        confirm_seed(base, 0),
        confirm_seed(other, 0),
        confirm_seed(base, 1),
        confirm_seed(base, 2),
    ]
    # round 0 was decided on each config's search run and its first repeat (the plan is
    # rebuilt, so later rounds' decisions repeat it)
    assert [len(v) for v in rounds[0]] == [2, 2]
    assert rounds[0][0][0] == _value(best) and rounds[0][1][0] == _value(second)
    assert confirmed.samples == run.samples + 4 * TINY_EPOCHS * rows


def test_paired_counts_and_the_headline_event() -> None:
    def seed(a: float, b: float, d: float) -> se.SeedScores:
        values = {"a random": a, "b tpe+median": b, se.CONFIRM_ARM: d}
        return se.SeedScores(values, {}, {}, {})

    scores = [seed(1.0, 1.0, 0.9), seed(1.0, 0.8, 0.9), seed(1.0, 1.2, 1.0), seed(0.5, 1.0, 0.6)]
    assert se.paired(scores, se.CONFIRM_ARM, "a random") == (2, 1, 1)
    assert se.paired(scores, se.CONFIRM_ARM, "b tpe+median") == (3, 1, 0)
    assert [se.beats_both(s) for s in scores] == [True, False, False, False]
    # (d) - (a) per seed: -0.1, -0.1, 0, +0.1; a 95 % Student-t interval over the 4 (t = 3.1824)
    mean, low, high = se.mean_difference(scores, se.CONFIRM_ARM, "a random")
    assert mean == pytest.approx(-0.025)
    assert [low, high] == pytest.approx([-0.177349, 0.127349], abs=1e-5)
    # a config that diverged (inf) leaves its task-seed out; one finite pair is no interval
    diverged = [seed(math.inf, 1.0, 0.9), seed(1.0, 1.0, 0.9)]
    assert all(math.isnan(x) for x in se.mean_difference(diverged, se.CONFIRM_ARM, "a random"))


def test_main_prints_ratio_last_and_its_records_merge_to_the_same_headline(
    capsys: pytest.CaptureFixture[str], monkeypatch: Any, tmp_path: Any
) -> None:
    monkeypatch.setattr(
        "sys.argv",
        [
            "search_efficiency.py",
            "--seeds",
            "1",
            "--trials",
            "3",
            "--max-epochs",
            "2",
            "--tasks",
            "digits-noisy",
            "--score-seeds",
            "1",
            "--confirm",
            "1",
            "1",
            "--also-confirm",
            "2x1",
        ],
    )
    se.main()
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    table = lines.index(
        "## digits-noisy: picks re-trained with 1 training seeds (mean), median and 90th "
        "percentile over 1 seeds"
    )
    arms = [line.split("|")[1].strip() for line in lines[table + 3 : table + 9]]
    assert arms == [*se.ARMS, se.CONFIRM_ARM, se.HALF_ARM, se.confirm_arm_name(2, 1)]
    assert any(
        line.startswith("digits-noisy: d regtune+confirm vs a random: better ") for line in lines
    )
    assert any(line.startswith("digits-noisy: d' confirm 2x1 vs c regtune: ") for line in lines)
    assert lines[-2].startswith(f"{se.HALF_ARM} no worse than (a) at 100 %: ")
    assert lines[-1].startswith("ratio: ")
    assert 0.0 <= float(lines[-1].removeprefix("ratio: ")) <= 1.0

    # the per-seed record reads back: --merge prints the same headline from the log
    log = tmp_path / "run.log"
    log.write_text(out)
    monkeypatch.setattr("sys.argv", ["search_efficiency.py", "--merge", str(log)])
    se.main()
    merged = capsys.readouterr().out.strip().splitlines()
    assert merged[-2:] == lines[-2:]


def _scores(a: float, b: float, d: float, half: float) -> se.SeedScores:
    values = {"a random": a, "b tpe+median": b, "c regtune": d, se.CONFIRM_ARM: d}
    values[se.HALF_ARM] = half
    return se.SeedScores(
        values,
        {name: 0.5 for name in values},
        {name: 1.0 for name in values},
        {se.CONFIRM_ARM: False, se.HALF_ARM: False},
        {"a random": 30},
        {"a random": 0},
    )


def test_merge_counts_each_task_seed_once_across_split_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    first, second = tmp_path / "0.log", tmp_path / "1.log"
    # seed 0: (d) beats both; seed 1 first loses, then a rerun (the later record) wins
    first.write_text(
        "noise\n"
        + se.SEED_LINE
        + _scores(1.0, 1.0, 0.9, 1.0).to_json("digits-noisy", 0)
        + "\n"
        + se.SEED_LINE
        + _scores(1.0, 1.0, 1.1, 1.2).to_json("digits-noisy", 1)
        + "\n"
    )
    second.write_text(
        se.SEED_LINE + _scores(1.0, 1.0, 0.8, 0.9).to_json("digits-noisy", 1) + "\n"
        "[digits-noisy seed 1] other output\n"
    )
    se.merge([str(first), str(second)], n_seeds=5)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "digits-noisy: seeds 0, 1"
    assert any(
        line.startswith("digits-noisy: d regtune+confirm vs a random: better 2, worse 0, equal 0;")
        for line in lines
    )
    assert (
        lines[-2]
        == f"{se.HALF_ARM} no worse than (a) at 100 %: 2/2 task-seeds (target: at least half)"
    )
    assert lines[-1] == "ratio: 1.00"
    empty = tmp_path / "empty.log"
    empty.write_text("nothing scored\n")
    with pytest.raises(SystemExit, match="no 'seed-scores: ' lines"):
        se.merge([str(empty)], 5)
