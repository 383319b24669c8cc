"""`regtune tune SPEC`: run (or submit) a study, follow it, write the best settings, gate on them.

Exit codes are the CI contract (see `ExitCode` and docs/ci.md). Every failure is one
``error: ...`` line on stderr, never a traceback.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from service.config import Settings
from service.spec import ObjectiveConfig, SpecFileError, StudySpec, load_spec_file
from service.tune.errors import ExitCode, TuneError
from service.tune.gate import DEFAULT_ALPHA, GateOptions, Verdict, alpha_error, evaluate
from service.tune.local import LocalStudy, database_url
from service.tune.output import (
    BestRuns,
    Previous,
    best_runs,
    build_output,
    load_previous,
    write_json,
)
from service.tune.progress import Reporter, make_reporter
from service.tune.remote import RemoteStudy
from service.tune.summary import write_summary
from service.tune.warm import warm_start_params
from service.tune.watch import StudySource, TimedOut, watch
from trainers import SearchSpace
from trainers.best import maximizes

__all__ = ["TuneOptions", "run_tune", "tune_command"]


@dataclass
class TuneOptions:
    """Everything `regtune tune` was asked to do (validated by `run_tune`)."""

    spec: str
    server: str | None = None
    token: str | None = None
    local: bool = False
    workers: int = 1
    db: str | None = None
    name: str | None = None
    output: str | None = None
    summary: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    baseline: str | None = None
    max_regression: float | None = None
    alpha: float | None = None  # the baseline test's level when both sides have repeats
    warm_start: str | None = None
    timeout: float | None = None
    poll_interval: float = 1.0
    tty: bool | None = None
    # the objective the thresholds and the baseline judge (default: the spec's first)
    gate_metric: str | None = None


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise _usage(f"settings: {exc.errors()[0]['msg']}") from None


def _configured_server() -> str | None:
    """``REGTUNE_SERVER_URL`` (or ``.env``) when it is set: then tune runs on that server."""
    settings = _settings()
    return settings.server_url if "server_url" in settings.model_fields_set else None


def _echo_err(message: str) -> None:
    typer.echo(message, err=True)


def _usage(message: str) -> TuneError:
    return TuneError(ExitCode.USAGE, message)


def _spec_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def _load_body(opts: TuneOptions) -> dict[str, Any]:
    try:
        body = load_spec_file(opts.spec)
    except SpecFileError as exc:
        raise _usage(f"SPEC: {exc}") from None
    if opts.name:
        body["name"] = opts.name
    return body


def _check_usage(opts: TuneOptions) -> None:
    if opts.local and opts.server:
        raise _usage("--local and --server exclude each other")
    if opts.max_regression is not None and opts.baseline is None:
        raise _usage("--max-regression needs --baseline")
    if opts.max_regression is not None and opts.max_regression < 0:
        raise _usage("--max-regression must be >= 0 (an absolute tolerance)")
    if opts.alpha is not None and opts.baseline is None:
        raise _usage("--alpha needs --baseline")
    if opts.alpha is not None and (why := alpha_error(opts.alpha)):
        raise _usage(f"--alpha {opts.alpha:g}: {why}")
    low, high = opts.min_score, opts.max_score
    if low is not None and high is not None and low > high:
        raise _usage("--min-score is greater than --max-score: no result can pass")
    for option, path in (("--output", opts.output), ("--summary", opts.summary)):
        folder = Path(path).parent if path else None
        if folder is not None and not (folder.is_dir() and os.access(folder, os.W_OK)):
            # found before the study runs, not after it (the files are written last)
            raise _usage(f"{option} {path}: folder {str(folder)!r} is missing or not writable")


def _check_previous(prev: Previous, option: str, objective: ObjectiveConfig) -> None:
    if (prev.metric, prev.direction) != (objective.metric, objective.direction):
        raise _usage(
            f"{option} {prev.path}: it optimized {prev.metric} ({prev.direction}) but this study "
            f"optimizes {objective.metric} ({objective.direction})"
        )


# What `regtune tune` adds to a single-objective spec that has no `confirm` key: the best
# configuration re-trained 4 more times (5 runs), so the output JSON carries repeats and the
# next run's `--baseline` gate can test the difference instead of comparing two single runs
# (docs/benchmarks.md: 5 runs a side took the gate's false alarms from 29 % to 5 % in "Gate
# reliability"; re-ranking several configs did not pick better ones at equal compute in
# "Search efficiency", hence top_k 1). `confirm: null` in the spec turns it off.
TUNE_CONFIRM: dict[str, int] = {"top_k": 1, "repeats": 4}


def with_tune_confirm(
    body: dict[str, Any], objectives: list[ObjectiveConfig] | None
) -> dict[str, Any]:
    """`body` with `TUNE_CONFIRM` when it says nothing about `confirm` and has one objective."""
    if "confirm" in body or (objectives is not None and len(objectives) > 1):
        return body
    return {**body, "confirm": dict(TUNE_CONFIRM)}


def _objectives(body: dict[str, Any]) -> list[ObjectiveConfig] | None:
    """The spec's objectives in order (None when they are invalid)."""
    raw = body.get("objective") or {}
    try:
        entries = raw if isinstance(raw, list) else [raw]
        return [ObjectiveConfig.model_validate(entry) for entry in entries] or None
    except ValidationError:
        return None  # the spec itself is refused below (locally or by the server)


def _gate_objective(
    objectives: list[ObjectiveConfig] | None, opts: TuneOptions
) -> ObjectiveConfig | None:
    """The objective the gate judges: `--gate-metric` (one of the spec's objectives) or the
    first; raises a usage error for another metric."""
    if objectives is None:
        return None
    if opts.gate_metric is None:
        return objectives[0]
    for objective in objectives:
        if objective.metric == opts.gate_metric:
            return objective
    names = ", ".join(o.metric for o in objectives)
    raise _usage(f"--gate-metric {opts.gate_metric}: not an objective of the spec ({names})")


def gate_value(best: dict[str, Any], metric: str) -> tuple[float | None, str | None]:
    """(best value, direction) of objective `metric` in a /best document.

    The first objective's is `value`; another one's is the best of it over the Pareto set
    (which holds every objective's best feasible trial). (None, None) when `metric` is not an
    objective of the study.
    """
    objectives = best.get("objectives") or [
        {"metric": best.get("metric"), "direction": best.get("direction")}
    ]
    names = [o.get("metric") for o in objectives]
    if metric not in names:
        return None, None
    index = names.index(metric)
    direction = str(objectives[index].get("direction"))
    if index == 0:
        return best.get("value"), direction
    values = [m["values"][index] for m in best.get("pareto") or [] if len(m["values"]) > index]
    if not values:
        return None, direction
    return (max(values) if maximizes(direction) else min(values)), direction


@dataclass
class _Finish:
    """How following the study ended, before the gate."""

    study: dict[str, Any]
    code: ExitCode | None = None  # set when the run cannot reach a verdict
    reason: str | None = None


@dataclass
class _Run:
    """What running (or submitting) the study gave, for the verdict and the output file."""

    finish: _Finish
    best: dict[str, Any] | None
    enqueued: dict[str, Any] | None  # the warm-start parameters evaluated first
    mode: str  # "local" or "server"
    server: str | None = None  # the server's URL in server mode


def _follow(source: StudySource, created: dict[str, Any], opts: TuneOptions, where: str) -> _Finish:
    reporter: Reporter = make_reporter(opts.tty)
    n = created["progress"]["n_trials"]
    reporter.start(
        created,
        f"study {created['id']} {created['name']!r} ({where}): {n} trials of "
        f"{created['trainer']}, {created['direction']} {created['metric']}",
    )
    deadline = time.monotonic() + opts.timeout if opts.timeout else None
    try:
        final = watch(source, reporter, deadline, opts.poll_interval)
    except TimedOut:
        reporter.stop()
        source.cancel()
        return _Finish(
            source.study(),
            ExitCode.STUDY_FAILED,
            f"timed out after {opts.timeout:g} s (--timeout); the study was cancelled",
        )
    except KeyboardInterrupt:
        reporter.stop()
        source.cancel()
        reason = "interrupted; the study was cancelled"
        return _Finish(source.study(), ExitCode.STUDY_FAILED, reason)
    finally:
        reporter.stop()
    if final["status"] != "completed":
        why = f": {final['error']}" if final.get("error") else ""
        return _Finish(final, ExitCode.STUDY_FAILED, f"the study ended {final['status']}{why}")
    return _Finish(final)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    # a cancelled CI job gets SIGTERM: treat it like Ctrl-C so the study is cancelled too
    raise KeyboardInterrupt


def run_tune(opts: TuneOptions) -> ExitCode:
    """Run the whole job; returns the exit code. Raises `TuneError` for early failures."""
    started = datetime.now(UTC)
    _check_usage(opts)
    body = _load_body(opts)
    objectives = _objectives(body)
    body = with_tune_confirm(body, objectives)
    objective = objectives[0] if objectives else None
    gated = _gate_objective(objectives, opts)
    if opts.baseline and gated is not None and objective is not None and gated != objective:
        raise _usage("--baseline compares the first objective; leave --gate-metric out")
    baseline = load_previous(opts.baseline, "--baseline") if opts.baseline else None
    warm = load_previous(opts.warm_start, "--warm-start") if opts.warm_start else None
    for prev, option in ((baseline, "--baseline"), (warm, "--warm-start")):
        if prev is not None and objective is not None:
            _check_previous(prev, option, objective)
    if baseline is not None and baseline.value is None:
        raise _usage(f"--baseline {baseline.path}: it has no best value (no trial completed)")
    gate = GateOptions(
        min_score=opts.min_score,
        max_score=opts.max_score,
        baseline_value=baseline.value if baseline else None,
        baseline_path=baseline.path if baseline else None,
        max_regression=opts.max_regression or 0.0,
        alpha=DEFAULT_ALPHA if opts.alpha is None else opts.alpha,
        baseline_values=baseline.values if baseline else None,
        baseline_single=baseline.single if baseline else None,
        baseline_failed=baseline.failed if baseline else 0,
    )
    server = opts.server or (None if opts.local else _configured_server())
    previous_handler = signal.signal(signal.SIGTERM, _interrupt)
    try:
        run = _run_server(opts, server, body, warm) if server else _run_local(opts, body, warm)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    return _conclude(opts, run, started, gate, baseline)


def _run_local(opts: TuneOptions, body: dict[str, Any], warm: Previous | None) -> _Run:
    try:
        spec = StudySpec.model_validate(body)
    except ValidationError as exc:
        raise _usage(f"invalid spec {opts.spec}: {_spec_errors(exc)}") from None
    enqueued = _warm_params(warm, spec.search_space)
    if enqueued:
        spec = spec.model_copy(update={"enqueue": [enqueued, *spec.enqueue]})
    with tempfile.TemporaryDirectory(prefix="regtune-tune-") as tmp:
        local = LocalStudy(database_url(opts.db, Path(tmp)), Path(tmp))
        try:
            local.migrate()
            created = local.create(spec)
            local.start_workers(opts.workers)
            try:
                finish = _follow(local, created, opts, f"local, {opts.workers} worker(s)")
            except TuneError as exc:
                local.cancel()
                finish = _Finish(local.study(), exc.code, exc.message)
            if finish.code is not None:
                tail = local.log_tail()
                if tail and finish.study["status"] == "failed":
                    _echo_err(tail)
            best = local.best()
        except KeyboardInterrupt:
            if local.study_id is None:
                raise TuneError(
                    ExitCode.STUDY_FAILED, "interrupted before the study started"
                ) from None
            local.cancel()
            finish, best = _Finish(local.study(), ExitCode.STUDY_FAILED, "interrupted"), None
        finally:
            local.close()
    return _Run(finish, best, enqueued, "local")


def _warm_params(warm: Previous | None, space: SearchSpace) -> dict[str, Any] | None:
    """The previous best's parameters this search space can evaluate (warnings for the rest)."""
    if warm is None:
        return None
    params, notes = warm_start_params(warm.params, space)
    for note in notes:
        _echo_err(f"warning: --warm-start: {note}")
    return params or None


def _run_server(
    opts: TuneOptions, server: str, body: dict[str, Any], warm: Previous | None
) -> _Run:
    enqueued: dict[str, Any] | None = None
    if warm is not None:
        try:
            space = SearchSpace.model_validate(body.get("search_space") or {})
        except ValidationError as exc:
            raise _usage(f"invalid spec {opts.spec}: {_spec_errors(exc)}") from None
        enqueued = _warm_params(warm, space)
        if enqueued:  # the server evaluates these first (spec field `enqueue`)
            body = {**body, "enqueue": [enqueued, *(body.get("enqueue") or [])]}
    # --token or REGTUNE_TOKEN, else `.env`'s (as `regtune submit` reads it)
    configured = _settings().token
    token = opts.token or (configured.get_secret_value() if configured else None)
    remote = RemoteStudy(server, token)
    try:
        created = remote.submit(body)
        try:
            finish = _follow(remote, created, opts, server)
        except KeyboardInterrupt:
            remote.cancel()
            finish = _Finish(remote.study(), ExitCode.STUDY_FAILED, "interrupted")
        best = remote.best()
    finally:
        remote.close()
    return _Run(finish, best, enqueued, "server", server)


def _runs(best: dict[str, Any] | None) -> BestRuns:
    """The runs behind the new best (`output.best_runs`)."""
    try:
        return best_runs(best)
    except ValueError:
        return BestRuns(None, None, 0)  # not the shape /best documents: gate on the value


def _conclude(
    opts: TuneOptions, run: _Run, started: datetime, gate: GateOptions, baseline: Previous | None
) -> ExitCode:
    finish, best = run.finish, run.best
    study = finish.study
    metric, direction = opts.gate_metric or study["metric"], study["direction"]
    value = None
    if best is not None:
        value, found = gate_value(best, metric)
        direction = found or direction
    runs = _runs(best)
    verdict = evaluate(value, metric, direction, gate, runs.values, runs.single, runs.failed)
    code, reason = finish.code, finish.reason
    if code is None and best is None:
        code, reason = ExitCode.STUDY_FAILED, "no trial completed, so there is no best value"
    if code is None:
        code = ExitCode.PASSED if verdict.passed else ExitCode.GATE_FAILED
    if code != ExitCode.PASSED:
        verdict = Verdict(passed=False, checks=verdict.checks)
    doc = build_output(
        mode=run.mode,
        server=run.server,
        study=study,
        best=best,
        started=started,
        finished=datetime.now(UTC),
        verdict=verdict,
        exit_code=code,
        warm_start=run.enqueued,
        baseline=baseline,
        reason=reason if code == ExitCode.STUDY_FAILED else None,
    )
    counts = doc["counts"]
    typer.echo(
        f"study {study['id']} {study['name']!r} {study['status']}: {counts['complete']} complete, "
        f"{counts['pruned']} pruned, {counts['failed']} failed in {doc['wall_time_s']:.1f} s"
    )
    if best is not None:
        typer.echo(f"best {study['metric']} = {best['value']:.6g} (trial {best['trial_number']})")
        if metric != study["metric"] and value is not None:
            typer.echo(f"best {metric} = {value:.6g} (over the Pareto set)")
    for check in verdict.checks:
        typer.echo(f"  {'ok  ' if check.passed else 'FAIL'} {check.message}")
    if code == ExitCode.GATE_FAILED:
        missed = "; ".join(c.message for c in verdict.checks if not c.passed)
        _echo_err(f"error: gate failed (exit 1): {missed}")
    elif code == ExitCode.STUDY_FAILED:
        _echo_err(f"error: study did not finish (exit 3): {reason}")
    # after the verdict is on the screen: a file that cannot be written (checked at start,
    # `_check_usage`, but a disk may fill) must not hide it
    if opts.output:
        write_json(opts.output, doc)
    if opts.summary:
        write_summary(opts.summary, doc)
    return code


# --- the typer command ---------------------------------------------------------------------

Opt = typer.Option


def tune_command(
    spec: Annotated[str, typer.Argument(help="study spec file (YAML or JSON)")],
    server: Annotated[
        str | None,
        # \\[: a literal bracket (Rich reads "[env: ...]" as markup and drops it)
        Opt("--server", help="submit to this regtune server \\[env: REGTUNE_SERVER_URL]"),
    ] = None,
    token: Annotated[
        str | None, Opt("--token", envvar="REGTUNE_TOKEN", help="Bearer token", show_default=False)
    ] = None,
    local: Annotated[
        bool, Opt("--local", help="run here with worker processes (default without --server)")
    ] = False,
    workers: Annotated[int, Opt("--workers", min=1, help="local worker processes")] = 1,
    db: Annotated[
        str | None, Opt("--db", help="local database: SQLite file or URL (default: throwaway)")
    ] = None,
    name: Annotated[
        str | None, Opt("--name", help="study name (overrides the spec's; names are unique)")
    ] = None,
    output: Annotated[str | None, Opt("--output", "-o", help="write the result JSON here")] = None,
    summary: Annotated[
        str | None, Opt("--summary", help="write a markdown summary here (PR comments)")
    ] = None,
    min_score: Annotated[
        float | None, Opt("--min-score", help="fail (exit 1) unless best >= X")
    ] = None,
    max_score: Annotated[
        float | None, Opt("--max-score", help="fail (exit 1) unless best <= X")
    ] = None,
    baseline: Annotated[
        str | None, Opt("--baseline", help="a previous output JSON to compare against")
    ] = None,
    max_regression: Annotated[
        float | None,
        Opt("--max-regression", help="allowed worsening vs --baseline (absolute; default 0)"),
    ] = None,
    alpha: Annotated[
        float | None,
        Opt(
            "--alpha",
            help="with repeats on both sides: the one-sided Welch test's level for a "
            "baseline regression, in (0, 0.5] (default 0.05)",
            show_default=False,
        ),
    ] = None,
    warm_start: Annotated[
        str | None, Opt("--warm-start", help="evaluate this previous output's best params first")
    ] = None,
    timeout: Annotated[
        float | None, Opt("--timeout", min=0.001, help="cancel the study after S seconds (exit 3)")
    ] = None,
    poll_interval: Annotated[
        float, Opt("--poll-interval", min=0.05, help="seconds between progress polls", hidden=True)
    ] = 1.0,
    gate_metric: Annotated[
        str | None,
        Opt(
            "--gate-metric",
            help="the objective --min-score/--max-score judge (several objectives; default: "
            "the first; its best over the Pareto set)",
        ),
    ] = None,
) -> None:
    """Tune in CI: run or submit a study, wait, write the best params as JSON, gate on them.

    Exit codes: 0 passed, 1 threshold or baseline missed, 2 invalid spec or usage,
    3 study failed, cancelled or timed out, 4 server unreachable or token refused.
    """
    opts = TuneOptions(
        spec=spec,
        server=server,
        token=token,
        local=local,
        workers=workers,
        db=db,
        name=name,
        output=output,
        summary=summary,
        min_score=min_score,
        max_score=max_score,
        baseline=baseline,
        max_regression=max_regression,
        alpha=alpha,
        warm_start=warm_start,
        timeout=timeout,
        poll_interval=poll_interval,
        gate_metric=gate_metric,
    )
    try:
        code = run_tune(opts)
    except TuneError as exc:
        _echo_err(f"error: {exc.message}")
        raise typer.Exit(int(exc.code)) from None
    except KeyboardInterrupt:
        _echo_err("error: interrupted")
        raise typer.Exit(int(ExitCode.STUDY_FAILED)) from None
    raise typer.Exit(int(code))
