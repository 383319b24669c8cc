"""The baseline gate on fixed numbers: a one-sided Welch test with repeats, single runs without."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from service.spec import ObjectiveConfig
from service.tune import command, output_schema
from service.tune.command import TUNE_CONFIRM, _Finish, _Run, with_tune_confirm
from service.tune.errors import TuneError
from service.tune.gate import GateOptions, evaluate, welch_worsening
from service.tune.output import load_previous
from service.tune.summary import render_summary
from tests.tune.conftest import load_valid_output, tiny_spec, tune, tune_in_process, write_spec

BASE = (1.70, 1.71, 1.72, 1.71, 1.70)


def _gate(
    baseline: tuple[float, ...] | None,
    new: tuple[float, ...] | None,
    *,
    best: float | None = None,
    direction: str = "minimize",
    max_regression: float = 0.01,
    alpha: float = 0.05,
) -> Any:
    """The baseline check of `new` against `baseline` (best values: the first run of each)."""
    options = GateOptions(
        baseline_value=baseline[0] if baseline else 1.7,
        max_regression=max_regression,
        alpha=alpha,
        baseline_values=baseline,
    )
    value = best if best is not None else (new[0] if new else None)
    verdict = evaluate(value, "val_loss", direction, options, new)
    (check,) = verdict.checks
    assert check.name == "baseline" and check.passed == verdict.passed
    return check


def test_equal_samples_pass_with_p_one_half() -> None:
    check = _gate(BASE, BASE)
    assert check.passed
    assert check.test.worsening == pytest.approx(0.0, abs=1e-12)
    assert check.test.p_value == pytest.approx(0.5)
    assert check.test.interval_low < 0 < check.test.interval_high


def test_clear_regression_fails() -> None:
    new = (1.80, 1.81, 1.79, 1.82, 1.80)
    check = _gate(BASE, new)
    assert not check.passed
    assert check.test.p_value < 1e-6
    assert check.test.interval_low > 0.01  # even the interval's best case is worse
    assert "regressed" in check.message and "p = " in check.message
    assert check.value == pytest.approx(1.804) and check.limit == pytest.approx(1.718)


def test_a_difference_within_noise_passes_where_single_runs_fail() -> None:
    # the new mean is worse by 0.016 (> max regression 0.01), but the runs spread by ~0.03
    noisy_base = (1.70, 1.74, 1.72, 1.68, 1.76)
    noisy_new = (1.76, 1.70, 1.75, 1.72, 1.75)
    check = _gate(noisy_base, noisy_new)
    assert check.test.worsening == pytest.approx(0.016)
    assert check.test.p_value > 0.05
    assert check.passed and "within noise" in check.message
    # the same first runs judged alone (today's gate): 1.76 > 1.70 + 0.01 fails
    single = _gate(noisy_base[:1], noisy_new[:1])
    assert not single.passed and single.test is None


def test_welch_p_value_and_interval_match_the_textbook_numbers() -> None:
    # means 4 and 2, variances 1 and 1, n 3 and 3: t = 2 / sqrt(2/3) = 2.449, Welch df = 4;
    # one-sided p = P(T_4 > 2.449) = 0.0352; 90 % interval 2 +- 2.1318 * 0.8165
    test = welch_worsening([3, 4, 5], [1, 2, 3], maximize=False, alpha=0.05)
    assert test.p_value == pytest.approx(0.0352, abs=1e-4)
    assert test.confidence == pytest.approx(0.90)
    assert (test.interval_low, test.interval_high) == pytest.approx((0.2594, 3.7406), abs=1e-3)
    # maximizing, the same numbers mirrored are the same test
    mirrored = welch_worsening([1, 2, 3], [3, 4, 5], maximize=True, alpha=0.05)
    assert mirrored.p_value == pytest.approx(test.p_value)
    assert mirrored.worsening == pytest.approx(2.0)


def test_alpha_and_max_regression_both_must_be_exceeded() -> None:
    new, base = (3.0, 4.0, 5.0), (1.0, 2.0, 3.0)  # worse by 2, p = 0.035
    assert not _gate(base, new, max_regression=0.0, alpha=0.05).passed
    assert _gate(base, new, max_regression=0.0, alpha=0.01).passed  # not significant at 0.01
    assert _gate(base, new, max_regression=2.5, alpha=0.05).passed  # within the tolerance


def test_maximize_flags_a_lower_mean() -> None:
    base = (0.90, 0.91, 0.90, 0.91)
    assert not _gate(base, (0.80, 0.81, 0.80, 0.81), direction="maximize").passed
    check = _gate(base, (0.95, 0.96, 0.95, 0.96), direction="maximize")
    assert check.passed and check.op == ">=" and check.test.worsening < 0


def test_zero_spread_on_both_sides_is_an_exact_difference() -> None:
    assert not _gate((1.0, 1.0), (1.5, 1.5), max_regression=0.1).passed
    check = _gate((1.0, 1.0), (1.0, 1.0))
    assert check.passed and check.test.p_value == 1.0


def test_runs_without_a_finite_value_are_left_out() -> None:
    check = _gate(BASE, (1.80, float("inf"), 1.81, float("nan"), 1.79))
    assert not check.passed and check.test.n == 3
    assert _gate(BASE, (1.80, float("inf"))).test is None  # one finite run: single runs


@pytest.mark.parametrize(
    ("baseline", "new"),
    [
        (None, (1.80, 1.81, 1.79)),  # the baseline has no repeats
        ((1.70,), (1.80, 1.81, 1.79)),  # one value is a single run
        (BASE, None),  # the new run has no repeats
        (BASE, (1.75,)),
    ],
)
def test_single_runs_on_either_side_keep_the_old_rule(
    baseline: tuple[float, ...] | None, new: tuple[float, ...] | None
) -> None:
    base_value = baseline[0] if baseline else 1.7
    for best, passed in ((base_value + 0.009, True), (base_value + 0.011, False)):
        check = _gate(baseline, new, best=best)
        assert check.test is None
        assert (check.op, check.value, check.passed) == ("<=", best, passed)
        assert check.limit == pytest.approx(base_value + 0.01)
        # a side with repeats is compared by its best single run, and the message says so
        assert check.message.startswith(
            f"val_loss best single run vs baseline's {base_value:.6g} (max regression"
        )
        assert (
            "test"
            not in evaluate(  # the JSON of a single-run check keeps its old keys
                best, "val_loss", "minimize", GateOptions(baseline_value=base_value), new
            ).to_json()["checks"][0]
        )


@pytest.mark.parametrize("alpha", ["0", "0.6", "-0.1", "nan"])
def test_bad_alpha_exits_2_naming_the_option(
    tmp_path: Path, alpha: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec())
    (tmp_path / "base.json").write_text(json.dumps(_baseline_doc(BASE)))
    result = tune_in_process(
        tmp_path, str(spec), "--baseline", "base.json", "--alpha", alpha, monkeypatch=monkeypatch
    )
    assert result.returncode == 2, result.stderr
    assert "--alpha" in result.stderr and "must be in (0, 0.5]" in result.stderr
    assert "Traceback" not in result.stderr


def test_alpha_without_baseline_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec())
    result = tune_in_process(tmp_path, str(spec), "--alpha", "0.1", monkeypatch=monkeypatch)
    assert result.returncode == 2 and "--alpha needs --baseline" in result.stderr


def _baseline_doc(values: tuple[float, ...] | None, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema_version": 1,
        "study_name": "main-branch",
        "metric": "val_loss",
        "direction": "minimize",
        "best_value": values[0] if values else 1.7,
        "best_params": {},
    }
    if values is not None:
        doc["best"] = {"confirmation": {"n": len(values), "values": list(values)}}
    return {**doc, **extra}


def test_baseline_file_repeats_are_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "base.json"
    path.write_text(json.dumps(_baseline_doc(BASE)))
    assert load_previous(path, "--baseline").values == BASE
    path.write_text(json.dumps(_baseline_doc(None)))
    assert load_previous(path, "--baseline").values is None
    for bad in (["x", 1.0], [1.0, None], "1.0", list(range(1001))):
        path.write_text(json.dumps(_baseline_doc(None, best={"confirmation": {"values": bad}})))
        with pytest.raises(TuneError) as caught:
            load_previous(path, "--baseline")
        assert caught.value.code == 2 and "best.confirmation.values" in caught.value.message


def test_a_confirmed_mean_never_meets_the_other_sides_luckiest_run() -> None:
    """One side with repeats, the other a single run: both are compared by their best single
    search run (before, the new mean 0.3058 met the baseline's single best 0.300: a false
    alarm on the same config, and the reverse let a regression through)."""
    new = (0.300, 0.312, 0.305, 0.309, 0.303)
    mean = statistics.fmean(new)
    plain = GateOptions(baseline_value=0.300)
    verdict = evaluate(mean, "val_loss", "minimize", plain, new, single=0.300)
    assert verdict.passed and verdict.checks[0].value == 0.300
    # the baseline confirmed (mean 0.305, its search run 0.296), the new run a single 0.300
    confirmed = GateOptions(baseline_value=0.305, baseline_values=(0.296, 0.31, 0.309),
                            baseline_single=0.296)  # fmt: skip
    (check,) = evaluate(0.300, "val_loss", "minimize", confirmed).checks
    assert (check.passed, check.limit) == (False, 0.296)
    assert check.message.startswith("val_loss best single run vs baseline's 0.296")
    # two single runs: the rule and the message of the first release
    (check,) = evaluate(0.305, "val_loss", "minimize", plain).checks
    assert not check.passed and check.message.startswith("val_loss vs baseline 0.3 ")


def test_more_failed_runs_than_the_baseline_fail_the_gate() -> None:
    """A best config whose repeats diverged on 4 of 5 runs is not judged by its one finite run."""
    options = GateOptions(baseline_value=0.305, baseline_values=BASE)
    verdict = evaluate(0.296, "val_loss", "minimize", options, (0.296,), failed=4)
    assert not verdict.passed
    failed = next(c for c in verdict.checks if c.name == "failed_runs")
    assert (failed.value, failed.limit, failed.passed) == (4, 0, False)
    assert "4 of the best config's runs failed" in failed.message
    # as many as the baseline's: only the value is judged
    same = GateOptions(baseline_value=1.7, baseline_values=BASE, baseline_failed=1)
    checks = evaluate(1.7, "val_loss", "minimize", same, BASE, failed=1).checks
    assert [c.name for c in checks] == ["baseline"]


def test_baseline_single_run_and_failed_runs_are_read(tmp_path: Path) -> None:
    path = tmp_path / "base.json"
    confirmation: dict[str, Any] = {"n": 3, "values": [0.31, 0.30, 0.32], "failed": [7, 9]}
    best: dict[str, Any] = {
        "confirmation": confirmation,
        "single_run": {"trial_number": 4, "value": 0.29},
    }
    path.write_text(json.dumps(_baseline_doc(None, best_value=0.31, best=best)))
    previous = load_previous(path, "--baseline")
    assert (previous.single, previous.failed) == (0.29, 2)
    # no single_run: the winner's own search run (its first value); older files: no `failed`
    del best["single_run"], confirmation["failed"]
    path.write_text(json.dumps(_baseline_doc(None, best_value=0.31, best=best)))
    again = load_previous(path, "--baseline")
    assert (again.single, again.failed) == (0.31, 0)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('"best_value": NaN', "best_value must be a finite number"),
        ('"best_value": Infinity', "best_value must be a finite number"),
        ('"best_value": 1' + "0" * 400, "best_value must be a finite number"),
        ('"best": {"confirmation": {"values": [1' + "0" * 400 + "]}}", "best.confirmation.values"),
        ('"best": {"single_run": {"value": "x"}}', "best.single_run.value"),
        ('"best": {"confirmation": {"values": [1, 2], "failed": 3}}', "best.confirmation.failed"),
    ],
)
def test_a_baseline_with_a_value_no_gate_can_use_exits_2_naming_it(
    tmp_path: Path, text: str, field: str
) -> None:
    """Before, NaN/Infinity fixed the verdict in advance and a huge integer was a traceback."""
    doc = json.dumps({k: v for k, v in _baseline_doc(None).items() if k != "best_value"})
    path = tmp_path / "base.json"
    path.write_text(doc[:-1] + ", " + text + "}")
    with pytest.raises(TuneError) as caught:
        load_previous(path, "--baseline")
    assert caught.value.code == 2 and field in caught.value.message


def _confirmation(values: list[float]) -> dict[str, Any]:
    """/best's confirmation block for `values` (mean, std and a rough interval)."""
    mean, std = statistics.fmean(values), statistics.stdev(values)
    return {"n": len(values), "mean": mean, "std": std, "ci95_low": mean - std,
            "ci95_high": mean + std, "values": values,
            "trial_numbers": list(range(len(values)))}  # fmt: skip


def _fake_run(values: list[float] | None) -> _Run:
    study = {"id": 7, "name": "pr", "trainer": "digits-mlp", "status": "completed",
             "error": None, "metric": "val_loss", "direction": "minimize",
             "progress": {"n_trials": 4, "complete": 4, "pruned": 0, "failed": 0}}  # fmt: skip
    best = {"value": values[0] if values else 1.75, "trial_number": 2, "params": {},
            "metrics": {}, "test_metrics": None, "best_epoch": 3,
            "confirmation": _confirmation(values) if values else None,
            "objectives": [{"metric": "val_loss", "direction": "minimize"}],
            "feasible": None, "pareto": None}  # fmt: skip
    return _Run(_Finish(study), best, None, "local")


@pytest.mark.parametrize(
    ("new", "code", "tested"),
    [
        ([1.80, 1.81, 1.79, 1.82, 1.80], 1, True),  # a clear regression
        ([1.70, 1.72, 1.71, 1.70, 1.71], 0, True),  # no change
        (None, 1, False),  # a single run of 1.75 > 1.70 + 0.01: today's rule
    ],
)
def test_tune_gates_the_run_values_and_reports_the_test(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    new: list[float] | None,
    code: int,
    tested: bool,
) -> None:
    monkeypatch.setattr(command, "_run_local", lambda *_: _fake_run(new))
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec(name="pr"))
    (tmp_path / "base.json").write_text(json.dumps(_baseline_doc(BASE)))
    args = ("--baseline", "base.json", "--max-regression", "0.01", "--alpha", "0.05")
    result = tune_in_process(
        tmp_path, str(spec), *args, "-o", "out.json", "--summary", "s.md", monkeypatch=monkeypatch
    )
    assert result.returncode == code, result.stderr
    doc = json.loads((tmp_path / "out.json").read_text())
    jsonschema.Draft202012Validator(output_schema()).validate(doc)
    (check,) = doc["gate"]["checks"]
    summary = (tmp_path / "s.md").read_text()
    assert summary == render_summary(doc)
    if tested:
        assert check["test"]["test"] == "welch_one_sided" and check["test"]["n"] == 5
        assert "p = " in result.stdout and "% interval" in result.stdout
        assert "p-value" in summary and "90% interval" in summary
    else:
        assert "test" not in check and "p-value" not in summary


def test_tune_repeats_the_best_config_unless_the_spec_says_otherwise() -> None:
    one = [ObjectiveConfig(metric="val_loss", direction="minimize")]
    assert with_tune_confirm({"name": "x"}, one)["confirm"] == {"top_k": 1, "repeats": 4}
    assert with_tune_confirm({"name": "x"}, None)["confirm"] == TUNE_CONFIRM  # default objective
    off = {"name": "x", "confirm": None}
    assert with_tune_confirm(off, one) == off  # `confirm: null` turns it off
    own = {"name": "x", "confirm": {"top_k": 3, "repeats": 2}}
    assert with_tune_confirm(own, one) == own
    two = [*one, ObjectiveConfig(metric="val_ece", direction="minimize")]
    assert "confirm" not in with_tune_confirm({"name": "x"}, two)  # confirm needs one objective


@pytest.mark.slow  # two local tune runs with confirmation (1-3 min on a loaded 2-core VM)
def test_a_confirmed_main_run_is_the_baseline_of_a_confirmed_pr_run(tmp_path: Path) -> None:
    """End to end with tune's default repeats (the spec has no `confirm` key): the main
    branch's output JSON carries 5 runs of its best config; the PR's run is judged against them
    with the Welch test (the same spec: no regression)."""
    confirmed = tiny_spec(name="main")
    del confirmed["confirm"]
    spec = write_spec(tmp_path / "spec.yaml", confirmed)
    main = tune(tmp_path, str(spec), "--output", "main.json")
    assert main.returncode == 0, main.stderr
    baseline = load_valid_output(tmp_path / "main.json")
    assert len(baseline["best"]["confirmation"]["values"]) == 5  # the search run + 4 repeats

    pr = tune(
        tmp_path, str(spec), "--name", "pr", "--output", "pr.json",
        "--baseline", "main.json", "--alpha", "0.05",
    )  # fmt: skip
    doc = load_valid_output(tmp_path / "pr.json")
    (check,) = doc["gate"]["checks"]
    assert check["test"]["n"] == check["test"]["baseline_n"] == 5
    assert check["test"]["baseline_mean"] == pytest.approx(baseline["best"]["confirmation"]["mean"])
    # the same spec and seeds re-train to the same values: no worsening, no regression
    assert check["test"]["worsening"] == pytest.approx(0.0, abs=1e-6)
    assert pr.returncode == 0, pr.stderr
    assert check["passed"] and "p = " in pr.stdout
