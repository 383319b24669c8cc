"""The worker's Optuna storage: Optuna's RDBStorage with a one-statement ``report()`` and an
atomic start of a queued trial.

A trial reports its objective metric to Optuna once per epoch (the pruner reads it, and
optuna-dashboard plots it). Optuna's RDBStorage stores each report in an ORM transaction that
loads the trial row, looks for an existing value at that step, then inserts: on small models that
cost about 10 % of a worker's CPU (docs/benchmarks.md, "Worker scaling"). Here the same write is
a single ``INSERT ... SELECT ... WHERE <trial is RUNNING> ON CONFLICT (trial_id, step) DO
UPDATE``: the same rows, the same rule (only a running trial takes values; a later report at a
step overwrites the earlier one, as Optuna's storage does), one round trip.

When the statement inserts nothing (the trial is unknown or already finished), Optuna's own
method runs so the caller gets exactly Optuna's error. Dialects other than PostgreSQL and SQLite
(the two regtune supports) always take Optuna's path.

Starting a queued trial (``ask`` pops a WAITING trial: warm-start points, retries of crashed
trials) is one conditional ``UPDATE ... SET state = RUNNING WHERE state = WAITING``. Optuna reads
the state, then writes it; its ``SELECT ... FOR UPDATE`` makes that safe on PostgreSQL, but
SQLite has no row locks, so two workers could both read WAITING and both start the same trial
(measured: 4 threads popping 40 queued trials started some twice in every run). When the update
changes no row, Optuna's own method runs and gives its answer (False: another worker started it;
its error: the trial has finished).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.trial import TrialState
from sqlalchemy import Executable, bindparam, exists, select, update
from sqlalchemy.dialects import postgresql, sqlite

__all__ = ["WorkerRDBStorage"]

_VALUES = models.TrialIntermediateValueModel.__table__
_TRIALS = models.TrialModel.__table__
_INSERTS: dict[str, Any] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


@functools.cache
def _report_statement(dialect: str) -> Executable:
    """The upsert for `dialect`, built once (its parameters are bound at execution)."""
    running = exists().where(
        _TRIALS.c.trial_id == bindparam("trial_id"), _TRIALS.c.state == TrialState.RUNNING
    )
    row = select(
        bindparam("trial_id", type_=_VALUES.c.trial_id.type),
        bindparam("step", type_=_VALUES.c.step.type),
        bindparam("value", type_=_VALUES.c.intermediate_value.type),
        bindparam("kind", type_=_VALUES.c.intermediate_value_type.type),
    ).where(running)
    stmt = _INSERTS[dialect](_VALUES).from_select(
        ["trial_id", "step", "intermediate_value", "intermediate_value_type"], row
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["trial_id", "step"],
        set_={
            "intermediate_value": stmt.excluded.intermediate_value,
            "intermediate_value_type": stmt.excluded.intermediate_value_type,
        },
    )
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT ... SELECT
    return stmt.returning(_VALUES.c.trial_intermediate_value_id)


class WorkerRDBStorage(RDBStorage):
    """RDBStorage whose ``set_trial_intermediate_value`` is one statement (see module doc)."""

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        if not self._insert_value(trial_id, step, intermediate_value):
            super().set_trial_intermediate_value(trial_id, step, intermediate_value)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        if state == TrialState.RUNNING and values is None and self._start_waiting(trial_id):
            return True
        return super().set_trial_state_values(trial_id, state, values)

    def _start_waiting(self, trial_id: int) -> bool:
        """WAITING -> RUNNING in one statement; False when the trial was not waiting."""
        if self.engine.dialect.name not in _INSERTS:
            return False
        stmt = (
            update(_TRIALS)
            .where(_TRIALS.c.trial_id == trial_id, _TRIALS.c.state == TrialState.WAITING)
            # naive local time, as Optuna's own method stores it
            .values(state=TrialState.RUNNING, datetime_start=datetime.now())
        )
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def _insert_value(self, trial_id: int, step: int, value: float) -> bool:
        """Store the value if the trial is running; False when no row was written (or the
        dialect is not one regtune supports)."""
        dialect = self.engine.dialect.name
        if dialect not in _INSERTS:
            return False
        stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
        params = {"trial_id": trial_id, "step": step, "value": stored, "kind": kind}
        with self.engine.begin() as conn:
            return conn.execute(_report_statement(dialect), params).first() is not None
