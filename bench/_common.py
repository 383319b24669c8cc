"""Helpers shared by the bench scripts: alternating repeats, medians, tables, the `ratio:` line.

Every bench script prints a table and ends with one line ``ratio: X.XX`` (its headline figure).
Where wall time matters, the arms under comparison run alternately (a, b, a, b, ...) so a change
in machine load hits every arm alike, and the median over repeats is reported.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from service.spec import StudySpec

T = TypeVar("T")

OUT_DIR = Path(__file__).resolve().parent / "out"
"""Plots and raw results (gitignored)."""

# bench/ scripts are run as `python bench/x.py` from the repository root; make the project
# importable in that case too.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


def quiet() -> None:
    """Silence Optuna's INFO logs and Lightning's banners (they would drown the tables)."""
    import logging

    import optuna

    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


def alternate(arms: dict[str, Callable[[int], T]], repeats: int) -> dict[str, list[T]]:
    """Run each arm once per repeat, arms interleaved (a, b, c, a, b, c, ...).

    Each arm gets the repeat index (0-based) so it can vary its seed. Returns every arm's
    results in repeat order.
    """
    results: dict[str, list[T]] = {name: [] for name in arms}
    for i in range(repeats):
        for name, fn in arms.items():
            results[name].append(fn(i))
    return results


def median(values: Sequence[float]) -> float:
    """The median, ignoring NaN; NaN when nothing is left; ``inf`` counts as a value."""
    kept = [v for v in values if not math.isnan(v)]
    return statistics.median(kept) if kept else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation (numpy's default method)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: floats with `digits` significant digits, None/NaN as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "never" if value > 0 else "-inf"
        return f"{value:.{digits}g}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 4) -> str:
    """A plain-text table (markdown pipe syntax, so it pastes into docs/benchmarks.md)."""
    cells = [[fmt(c, digits) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for r in cells:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    return "\n".join(lines)


def ratio_line(value: float) -> str:
    """The headline line every bench script prints last."""
    return f"ratio: {value:.2f}"


def submit_study(url: str, spec: StudySpec) -> int:
    """Store `spec` as a queued study on the database at `url`, as ``POST /api/v1/studies``
    does (the service layer: the regtune row and its Optuna study); the study's id."""
    from service.db import make_engine, make_session_factory, unit_of_work
    from service.studies.optuna_storage import LazyOptunaStorage
    from service.studies.service import create_study

    engine, storage = make_engine(url), LazyOptunaStorage(url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            return create_study(session, storage, spec).id
    finally:
        storage.dispose()
        engine.dispose()


def postgres_admin_url() -> str:
    """The PostgreSQL server the benchmarks create their databases on."""
    return os.environ.get(
        "REGTUNE_BENCH_POSTGRES_URL",
        os.environ.get(
            "REGTUNE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )


@contextmanager
def scratch_postgres(prefix: str) -> Iterator[str]:
    """A uniquely named PostgreSQL database, dropped on exit (also after an error)."""
    import sqlalchemy as sa

    admin = sa.engine.make_url(postgres_admin_url())
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield admin.set(database=name).render_as_string(hide_password=False)
        finally:
            with engine.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()
