"""Client commands: submit, status, best, cancel (HTTP to the API), and presets.

They talk to ``--server`` (default ``REGTUNE_SERVER_URL``) with ``--token`` (``REGTUNE_TOKEN``)
as a Bearer token. Human output by default, ``--format json`` for scripts.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from service.cli._common import (
    FormatOpt,
    OutputFormat,
    ServerOpt,
    TokenOpt,
    app,
    fail,
    print_json,
    settings_from,
)
from service.client import ApiClient, ClientError
from service.presets.cli import print_presets
from service.spec import SpecFileError, load_spec_file

__all__ = ["best", "cancel", "presets", "status", "submit"]


def _client(server: str | None, token: str | None) -> ApiClient:
    settings = settings_from()
    secret = token or (settings.token.get_secret_value() if settings.token else None)
    return ApiClient(server or settings.server_url, secret)


def _call(server: str | None, token: str | None, method: str, *args: Any) -> dict[str, Any]:
    try:
        with _client(server, token) as client:
            result: dict[str, Any] = getattr(client, method)(*args)
            return result
    except ClientError as exc:
        fail(str(exc))


# a study's id or its name (all-digit names are refused at submit: digits are an id)
StudyArg = Annotated[str, typer.Argument(metavar="STUDY", help="study id or name")]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def _progress_line(study: dict[str, Any]) -> str:
    p = study.get("progress") or {}
    return (
        f"{p.get('finished', 0)}/{p.get('n_trials', '?')} finished "
        f"({p.get('complete', 0)} complete, {p.get('pruned', 0)} pruned), "
        f"{p.get('failed', 0)} failed, {p.get('running', 0)} running"
    ) + (
        f"; extra runs (reference, confirmation) {p.get('extra_finished', 0)}/{p['extra']}"
        if p.get("extra")
        else ""
    )


def _print_study(study: dict[str, Any]) -> None:
    typer.echo(f"study {study['id']} {study['name']!r} ({study.get('trainer')}): {study['status']}")
    typer.echo(f"  progress: {_progress_line(study)}")
    if study.get("best_value") is not None:
        typer.echo(
            f"  best:     {study.get('metric')} = {_fmt(study['best_value'])} "
            f"(trial {study.get('best_trial_number')}, {study.get('direction')})"
        )
    if study.get("error"):
        typer.echo(f"  note:     {study['error']}")


@app.command()
def submit(
    spec: Annotated[str, typer.Argument(help="study spec file (YAML or JSON)")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Submit a study spec; prints the new study's id."""
    try:
        body = load_spec_file(spec)
    except SpecFileError as exc:
        fail(str(exc))
    study = _call(server, token, "submit", body)
    if format == OutputFormat.json:
        print_json(study)
    else:
        typer.echo(f"submitted study {study['id']} {study['name']!r}: {study['status']}")


@app.command()
def status(
    study_id: StudyArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Show a study's status, progress and best value."""
    study = _call(server, token, "study", study_id)
    if format == OutputFormat.json:
        print_json(study)
    else:
        _print_study(study)


@app.command()
def best(
    study_id: StudyArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Show the best trial: its regularization parameters and metrics."""
    result = _call(server, token, "best", study_id)
    if format == OutputFormat.json:
        print_json(result)
        return
    final = "final" if result.get("final") else "may still improve"
    typer.echo(
        f"study {result['study_id']} {result['study']!r} ({result['status']}, {final}): "
        f"best {result['metric']} = {_fmt(result['value'])} at trial {result['trial_number']}"
    )
    typer.echo("  params:")
    for name, value in (result.get("params") or {}).items():
        typer.echo(f"    {name:<16}{_fmt(value)}")
    typer.echo(f"  best epoch: {_fmt(result.get('best_epoch'))} of {result.get('epochs_run')}")
    for title, key in (("metrics", "metrics"), ("test metrics", "test_metrics")):
        metrics = result.get(key)
        if metrics:
            typer.echo(f"  {title}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()))
    _print_tradeoffs(result)
    _print_confirmation(result)
    _print_reference(result)


def _failed_note(conf: dict[str, Any]) -> str:
    """ "; N failed (trials ...)" when some repeats failed, else nothing."""
    failed = conf.get("failed") or []
    if not failed:
        return ""
    return f"; {len(failed)} failed (trials {', '.join(str(n) for n in failed)}), not in the mean"


def _print_confirmation(result: dict[str, Any]) -> None:
    """The winning config's runs (mean, spread, 95 % interval) and the single-run best."""
    conf = result.get("confirmation")
    if conf:
        typer.echo(
            f"  confirmed over {conf['n']} runs (trials "
            + ", ".join(str(n) for n in conf["trial_numbers"])
            + f"): mean {_fmt(conf['mean'])}, std {_fmt(conf['std'])}, "
            f"95 % interval [{_fmt(conf['ci95_low'])}, {_fmt(conf['ci95_high'])}]"
            + _failed_note(conf)
        )
    single = result.get("single_run")
    if single:
        typer.echo(
            f"  best single run: trial {single['trial_number']} = {_fmt(single['value'])} "
            "(ranked below on its mean)"
        )


_REFERENCE_KEYS = ("value", "gap", "val_ece", "near_zero_frac", "weight_l2")


def _print_reference(result: dict[str, Any]) -> None:
    """The reference run (regularization off) beside the tuned best."""
    ref = result.get("reference")
    if not ref:
        return
    typer.echo(
        f"  reference run, regularization off (trial {ref['trial_number']}, {ref['state']}):"
    )
    tuned = {"value": result.get("value"), **(result.get("metrics") or {})}
    for key in _REFERENCE_KEYS:
        label = result["metric"] if key == "value" else key
        typer.echo(f"    {label:<16}{_fmt(ref.get(key)):<12} tuned {_fmt(tuned.get(key))}")
    ref_test, tuned_test = ref.get("test_metrics") or {}, result.get("test_metrics") or {}
    for key in sorted(set(ref_test) & set(tuned_test)):
        typer.echo(f"    {key:<16}{_fmt(ref_test[key]):<12} tuned {_fmt(tuned_test[key])}")


def _print_tradeoffs(result: dict[str, Any]) -> None:
    """Constraints' verdict on the best trial, and the Pareto set of several objectives."""
    if result.get("feasible") is False:
        typer.echo("  infeasible: no trial satisfies the study's constraints")
    pareto = result.get("pareto")
    if not pareto:
        return
    objectives = result.get("objectives") or []
    names = ", ".join(f"{o['metric']} ({o['direction']})" for o in objectives)
    typer.echo(f"  Pareto set ({len(pareto)} trials; {names}):")
    for member in pareto:
        values = ", ".join(_fmt(v) for v in member.get("values") or [])
        mark = "" if member.get("feasible") is not False else "  infeasible"
        typer.echo(f"    trial {member['number']:<6} {values}{mark}")


@app.command()
def cancel(
    study_id: StudyArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Cancel a study: no new trials; running ones stop at their next epoch."""
    study = _call(server, token, "cancel", study_id)
    if format == OutputFormat.json:
        print_json(study)
    else:
        typer.echo(f"study {study['id']} {study['name']!r}: {study['status']}")


@app.command()
def presets(format: FormatOpt = OutputFormat.text) -> None:
    """List the named search-space presets a spec can use (search_space: {preset: NAME})."""
    print_presets(as_json=format == OutputFormat.json)
