"""SQL behind a study's plots: lean column reads of one study's trials and epochs.

Study lookups and trial pages reuse `service.studies.repository`; only the two reads the plots
need (a few columns of many trials, the epochs of a handful of trials in one query) live here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import TRIAL_PARAM_COLUMNS, TrialEpoch, TrialRecord, TrialRole, TrialState
from trainers.params import PARAM_NAMES

__all__ = ["PlotRow", "epochs_by_trial", "extra_rows", "plot_rows"]


@dataclass(frozen=True)
class PlotRow:
    """The columns of one trial that the plots use."""

    id: int
    number: int
    state: str
    value: float | None
    params: dict[str, float | None]  # every name of PARAM_NAMES (None: not sampled)
    val_ece: float | None
    epochs_run: int
    near_zero_frac: float | None = None  # best epoch's sparsity and weight size
    weight_l2: float | None = None
    values: list[float] | None = None  # every objective's value (several objectives)
    feasible: bool | None = None  # the constraints hold (None: the study has none)
    role: str = TrialRole.search.value
    repeat_of: int | None = None  # a confirm run: the number of the search trial it repeats

    def param(self, name: str) -> float | None:
        value = self.params.get(name)
        return None if value is None else float(value)


_COLUMNS = (
    TrialRecord.id,
    TrialRecord.number,
    TrialRecord.state,
    TrialRecord.value,
    *TRIAL_PARAM_COLUMNS,
    TrialRecord.val_ece,
    TrialRecord.epochs_run,
    TrialRecord.near_zero_frac,
    TrialRecord.weight_l2,
    TrialRecord.values,
    TrialRecord.feasible,
    TrialRecord.role,
    TrialRecord.repeat_of,
)


def _plot_row(row: Any) -> PlotRow:
    return PlotRow(
        id=row.id,
        number=row.number,
        state=row.state,
        value=row.value,
        params={name: row._mapping[name] for name in PARAM_NAMES},
        val_ece=row.val_ece,
        epochs_run=row.epochs_run,
        near_zero_frac=row.near_zero_frac,
        weight_l2=row.weight_l2,
        values=row.values,
        feasible=row.feasible,
        role=row.role,
        repeat_of=row.repeat_of,
    )


def plot_rows(
    session: Session, study_id: int, states: Sequence[str], limit: int
) -> tuple[list[PlotRow], bool]:
    """The newest `limit` numbered search trials in `states`, oldest first; and whether more exist.

    Reference and confirmation runs are left out (they are not sampled points of the search).
    Uses the (study_id, state) index; reads only flat columns (no JSON metrics).
    """
    rows = session.execute(
        select(*_COLUMNS)
        .where(
            TrialRecord.study_id == study_id,
            TrialRecord.number.is_not(None),
            TrialRecord.state.in_(list(states)),
            TrialRecord.role == TrialRole.search.value,
        )
        .order_by(TrialRecord.number.desc())
        .limit(limit + 1)
    ).all()
    truncated = len(rows) > limit
    out = [_plot_row(row) for row in rows[:limit]]
    out.reverse()
    return out, truncated


def extra_rows(session: Session, study_id: int, limit: int) -> list[PlotRow]:
    """The complete reference and confirmation runs (at most `limit`), by trial number."""
    rows = session.execute(
        select(*_COLUMNS)
        .where(
            TrialRecord.study_id == study_id,
            TrialRecord.number.is_not(None),
            TrialRecord.state == TrialState.complete.value,
            TrialRecord.role != TrialRole.search.value,
        )
        .order_by(TrialRecord.number)
        .limit(limit)
    ).all()
    return [_plot_row(row) for row in rows]


def epochs_by_trial(session: Session, trial_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """Per-epoch metrics of a few trials in one query: {trial id: [metrics of epoch 0, 1, ...]}."""
    if not trial_ids:
        return {}
    out: dict[int, list[dict[str, Any]]] = {i: [] for i in trial_ids}
    rows = session.execute(
        select(TrialEpoch.trial_id, TrialEpoch.epoch, TrialEpoch.metrics)
        .where(TrialEpoch.trial_id.in_(list(trial_ids)))
        .order_by(TrialEpoch.trial_id, TrialEpoch.epoch)
    )
    for trial_id, epoch, metrics in rows:
        out[trial_id].append({"epoch": epoch, **(metrics or {})})
    return out
