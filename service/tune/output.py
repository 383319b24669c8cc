"""The output JSON of `regtune tune` (``schema_version`` 1; JSON Schema in ``output.schema.json``).

The same document is the baseline (`--baseline`) and warm-start (`--warm-start`) input of a
later run, so reading it back is here too.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from service import __version__
from service.tune.errors import ExitCode, TuneError
from service.tune.gate import Verdict

__all__ = [
    "SCHEMA_VERSION",
    "BestRuns",
    "Previous",
    "best_runs",
    "build_output",
    "confirmation_values",
    "load_previous",
    "output_schema",
    "write_json",
]

SCHEMA_VERSION = 1
SCHEMA_FILE = "output.schema.json"
MAX_REPEATS = 1000  # run values read from a baseline's confirmation (a bound on the file's size)


def output_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the output document, shipped with the package."""
    text = resources.files("service.tune").joinpath(SCHEMA_FILE).read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def build_output(
    *,
    mode: str,
    server: str | None,
    study: dict[str, Any],
    best: dict[str, Any] | None,
    started: datetime,
    finished: datetime,
    verdict: Verdict,
    exit_code: ExitCode,
    warm_start: dict[str, Any] | None,
    baseline: Previous | None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Assemble the document from the final study (API shape) and its best trial (or None);
    `reason`: why tune ended it early (timeout, interrupted), when the study says nothing."""
    progress = study.get("progress") or {}
    return {
        "schema_version": SCHEMA_VERSION,
        "regtune_version": __version__,
        "mode": mode,
        "server": server,
        "study_id": study["id"],
        "study_name": study["name"],
        "trainer": study.get("trainer"),
        "status": study["status"],
        "status_reason": study.get("error") or reason,
        "metric": study["metric"],
        "direction": study["direction"],
        "best_value": best["value"] if best else None,
        "best_trial_number": best["trial_number"] if best else None,
        "best_params": _params(best["params"]) if best else None,
        "best_epoch": best.get("best_epoch") if best else None,
        "best_metrics": best.get("metrics") if best else None,
        "test_metrics": best.get("test_metrics") if best else None,
        # /best's confirmation, single run, reference run and trade-offs, in /best's shape
        "best": {key: best.get(key) for key in _BEST_EXTRAS} if best else None,
        "counts": {
            "n_trials": progress.get("n_trials", 0),
            "complete": progress.get("complete", 0),
            "pruned": progress.get("pruned", 0),
            "failed": progress.get("failed", 0),
        },
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        "wall_time_s": round((finished - started).total_seconds(), 3),
        "warm_start_params": warm_start,
        "baseline": (
            {"path": baseline.path, "study_name": baseline.study_name, "best_value": baseline.value}
            if baseline
            else None
        ),
        "gate": {**verdict.to_json(), "exit_code": int(exit_code)},
    }


_BEST_EXTRAS = (
    "confirmation",
    "single_run",
    "reference",
    # several objectives and constraints: the objectives, the best's feasibility, the Pareto set
    "objectives",
    "feasible",
    "pareto",
)


def _params(params: dict[str, Any]) -> dict[str, Any]:
    # parameters a trainer does not use stay null in the API; they are noise in a CI artifact
    return {k: v for k, v in params.items() if v is not None}


def write_json(path: str | Path, document: dict[str, Any]) -> None:
    try:
        Path(path).write_text(json.dumps(document, indent=2) + "\n")
    except OSError as exc:
        raise TuneError(ExitCode.USAGE, f"cannot write {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class Previous:
    """What a later run needs from a previous output JSON."""

    path: str
    study_name: str
    metric: str
    direction: str
    value: float | None
    params: dict[str, Any]
    # the best config's run values (`best.confirmation.values`); None: single runs
    values: tuple[float, ...] | None = None
    # the best single search run (None: `value`) and the best config's failed runs
    single: float | None = None
    failed: int = 0


def confirmation_values(best: dict[str, Any] | None) -> tuple[float, ...] | None:
    """The run values of a best result's ``confirmation`` (the /best shape), None without one.

    Raises ValueError when they are not a list of at most `MAX_REPEATS` finite numbers.
    """
    confirmation = (best or {}).get("confirmation")
    if confirmation is None:
        return None
    if not isinstance(confirmation, dict):
        raise ValueError("confirmation must be an object")
    values = confirmation.get("values")
    if values is None:
        return None
    if not isinstance(values, list) or len(values) > MAX_REPEATS:
        raise ValueError(f"confirmation.values must be a list of at most {MAX_REPEATS} numbers")
    if not all(_finite_number(v) for v in values):
        raise ValueError("confirmation.values must hold finite numbers only")
    return tuple(float(v) for v in values)


def _finite_number(value: Any) -> bool:
    """A JSON number that is a finite float (not a bool, NaN, Infinity or an int too large)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


@dataclass(frozen=True)
class BestRuns:
    """What the gate reads of a /best result besides its value."""

    values: tuple[float, ...] | None  # the best config's run values; None: a single run
    single: float | None  # the best single search run's value; None: the best value itself
    failed: int  # the best config's runs that failed (confirmation.failed)


def best_runs(best: dict[str, Any] | None) -> BestRuns:
    """The runs behind a /best result: `confirmation_values`; the best single search run
    (``single_run.value`` when the ranking by mean picked another config, else the winner's
    own search run, its first value); how many of its runs failed.

    Raises ValueError (naming the field) when they are not in /best's shape.
    """
    values = confirmation_values(best)
    single = None
    single_run = (best or {}).get("single_run")
    if single_run is not None:
        value = single_run.get("value") if isinstance(single_run, dict) else None
        if value is None or not _finite_number(value):
            raise ValueError("single_run.value must be a finite number")
        single = float(value)
    elif values:
        single = values[0]
    confirmation = (best or {}).get("confirmation")
    failed = confirmation.get("failed") if isinstance(confirmation, dict) else None
    if failed is None:
        failed = []
    if not isinstance(failed, list) or len(failed) > MAX_REPEATS:
        raise ValueError(f"confirmation.failed must be a list of at most {MAX_REPEATS} trials")
    return BestRuns(values, single, len(failed))


def load_previous(path: str | Path, option: str) -> Previous:
    """Read a previous `regtune tune` output (for `option`); raises `TuneError` (exit 2)."""
    p = Path(path)

    def bad(why: str) -> TuneError:
        return TuneError(ExitCode.USAGE, f"{option} {p}: {why}")

    try:
        data = json.loads(p.read_text())
    except OSError as exc:
        raise bad(f"cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise bad(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise bad("not a regtune tune output (expected a JSON object)")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise bad(f"schema_version {version!r} is not supported (this regtune reads 1)")
    for key in ("study_name", "metric", "direction"):
        if not isinstance(data.get(key), str):
            raise bad(f"{key} is missing")
    value = data.get("best_value")
    params = data.get("best_params") or {}
    if value is not None and not _finite_number(value):
        raise bad("best_value must be a finite number or null")
    if not isinstance(params, dict):
        raise bad("best_params must be an object")
    best = data.get("best")
    if best is not None and not isinstance(best, dict):
        raise bad("best must be an object")
    try:
        # `best.confirmation` (the /best shape); a top-level `confirmation` is read as well
        legacy = "confirmation" in data and "confirmation" not in (best or {})
        runs = best_runs(data if best is None or legacy else best)
    except ValueError as exc:
        raise bad(f"best.{exc}") from None
    return Previous(
        path=str(p),
        study_name=data["study_name"],
        metric=data["metric"],
        direction=data["direction"],
        value=float(value) if value is not None else None,
        params=params,
        values=runs.values,
        single=runs.single,
        failed=runs.failed,
    )
