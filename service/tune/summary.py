"""The markdown summary written by `--summary FILE` (for a PR comment or `$GITHUB_STEP_SUMMARY`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.tune.errors import ExitCode, TuneError

__all__ = ["render_summary", "write_summary"]

_VERDICT = {
    ExitCode.PASSED: "✅ passed",
    ExitCode.GATE_FAILED: "❌ threshold or baseline missed",
    ExitCode.USAGE: "⚠️ invalid input",
    ExitCode.STUDY_FAILED: "⚠️ study did not finish",
    ExitCode.SERVER: "⚠️ server problem",
}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _tests(checks: list[dict[str, Any]]) -> list[str]:
    """The statistical baseline check: both samples, the worsening, its interval, p and alpha."""
    lines: list[str] = []
    for c in checks:
        t = c.get("test")
        if not t:
            continue
        verdict = "regression" if not c["passed"] else "no regression shown"
        tolerance = _fmt(abs(c["limit"] - t["baseline_mean"]))  # the max regression
        lines += [
            "",
            f"| {c['name']}: one-sided Welch t-test | |",
            "|---|---|",
            f"| new | mean {_fmt(t['mean'])}, sd {_fmt(t['std'])}, n {t['n']} |",
            f"| baseline | mean {_fmt(t['baseline_mean'])}, sd {_fmt(t['baseline_std'])}, "
            f"n {t['baseline_n']} |",
            f"| worse by | {t['worsening']:+.6g}, {t['confidence']:.0%} interval "
            f"[{_fmt(t['interval_low'])}, {_fmt(t['interval_high'])}] |",
            f"| p-value | **{t['p_value']:.3g}** (alpha {_fmt(t['alpha'])}) |",
            f"| rule | regression when worse by more than {tolerance} and p < alpha: {verdict} |",
        ]
    return lines


def _confirmation_rows(best: dict[str, Any]) -> list[str]:
    """The best config's runs (confirmation) and the best single run, as summary rows."""
    rows: list[str] = []
    conf = best.get("confirmation")
    if conf:
        rows.append(
            f"| confirmed | mean {_fmt(conf['mean'])} ± {_fmt(conf['std'])} over {conf['n']} "
            f"runs, 95 % interval [{_fmt(conf['ci95_low'])}, {_fmt(conf['ci95_high'])}]"
            + (f"; {len(conf['failed'])} failed, not in the mean" if conf.get("failed") else "")
            + " |"
        )
    single = best.get("single_run")
    if single:
        rows.append(
            f"| best single run | {_fmt(single['value'])} (trial {single['trial_number']}) |"
        )
    return rows


_REFERENCE_KEYS = ("gap", "val_ece", "near_zero_frac", "weight_l2")


def _reference_table(doc: dict[str, Any]) -> list[str]:
    """The tuned best beside the reference run (regularization off), when there is one."""
    ref = (doc.get("best") or {}).get("reference")
    if not ref or ref.get("state") != "complete":
        return []
    tuned_metrics = doc.get("best_metrics") or {}
    rows = [(doc["metric"], doc.get("best_value"), ref.get("value"))]
    rows += [(k, tuned_metrics.get(k), ref.get(k)) for k in _REFERENCE_KEYS]
    tuned_test, ref_test = doc.get("test_metrics") or {}, ref.get("test_metrics") or {}
    rows += [(k, tuned_test[k], ref_test[k]) for k in sorted(set(tuned_test) & set(ref_test))]
    lines = ["", "| what regularization bought | tuned | regularization off |", "|---|---|---|"]
    return lines + [f"| {name} | {_fmt(t)} | {_fmt(r)} |" for name, t, r in rows]


def render_summary(doc: dict[str, Any]) -> str:
    """A markdown report of one output document: verdict, checks, best params, test metrics."""
    code = ExitCode(doc["gate"]["exit_code"])
    lines = [
        f"### regtune: `{doc['study_name']}` — {_VERDICT[code]}",
        "",
        "| | |",
        "|---|---|",
        f"| objective | `{doc['metric']}` ({doc['direction']}) |",
        f"| best value | **{_fmt(doc['best_value'])}** (trial {_fmt(doc['best_trial_number'])}) |",
    ]
    lines += _confirmation_rows(doc.get("best") or {})
    baseline = doc.get("baseline")
    if baseline and baseline.get("best_value") is not None and doc["best_value"] is not None:
        delta = doc["best_value"] - baseline["best_value"]
        lines.append(
            f"| baseline | {_fmt(baseline['best_value'])} (Δ {delta:+.6g}, "
            f"`{_cell(baseline['study_name'])}`) |"
        )
    counts = doc["counts"]
    lines += [
        f"| trials | {counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['failed']} failed (budget {counts['n_trials']}) |",
        f"| status | {doc['status']}"
        + (f": {_cell(doc['status_reason'])}" if doc.get("status_reason") else "")
        + " |",
        f"| wall time | {doc['wall_time_s']:.1f} s |",
    ]
    checks = doc["gate"]["checks"]
    if checks:
        lines += ["", "| check | limit | value | result |", "|---|---|---|---|"]
        for c in checks:
            mark = "✅" if c["passed"] else "❌"
            lines.append(
                f"| {c['name']} | {c['op']} {_fmt(c['limit'])} | {_fmt(c['value'])} | {mark} |"
            )
    lines += _tests(checks)
    params = doc.get("best_params") or {}
    if params:
        lines += ["", "| parameter | best |", "|---|---|"]
        lines += [f"| {name} | {_fmt(value)} |" for name, value in params.items()]
    for title, key in (("validation (best epoch)", "best_metrics"), ("test", "test_metrics")):
        metrics = doc.get(key) or {}
        if metrics:
            lines += ["", f"| {title} metric | value |", "|---|---|"]
            lines += [f"| {name} | {_fmt(value)} |" for name, value in sorted(metrics.items())]
    lines += _reference_table(doc)
    lines += ["", f"<sub>regtune {doc['regtune_version']}, study {doc['study_id']}</sub>", ""]
    return "\n".join(lines)


def write_summary(path: str | Path, doc: dict[str, Any]) -> None:
    try:
        Path(path).write_text(render_summary(doc))
    except OSError as exc:
        raise TuneError(ExitCode.USAGE, f"cannot write {path}: {exc.strerror}") from None
