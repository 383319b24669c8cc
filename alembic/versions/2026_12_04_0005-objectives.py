"""objectives: every objective's value and the constraints' verdict per trial, in the view too

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 04:00:00+00:00

Written by hand. ``values`` (JSON list of floats) holds each objective's best-epoch value in the
spec's order (the first equals ``value``); ``feasible`` is true when every constraint of the spec
holds at the best epoch, false when one is broken, NULL when the study has no constraints. The
view is dropped and recreated with both (quoted: VALUES is an SQL keyword).
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_VIEW_HEAD = """
CREATE VIEW regtune_trial_results AS
SELECT
    s.id AS study_id,
    s.name AS study,
    s.trainer AS trainer,
    s.metric AS metric,
    s.direction AS direction,
    t.number AS trial,
    t.state AS state,
"""
_VIEW_COLUMNS_0005 = """
    t."values" AS "values",
    t.feasible AS feasible,
"""
_VIEW_COLUMNS_0004 = """
    t.role AS role,
    t.repeat_of AS repeat_of,
    t.train_seed AS train_seed,
    t.val_nll AS val_nll,
    t.near_zero_frac AS near_zero_frac,
    t.weight_l2 AS weight_l2,
"""
_VIEW_COLUMNS_0001 = """
    t.weight_decay AS weight_decay,
    t.l1 AS l1,
    t.dropout AS dropout,
    t.label_smoothing AS label_smoothing,
    t.batch_size AS batch_size,
    t.patience AS patience,
    t.value AS value,
    t.best_epoch AS best_epoch,
    t.epochs_run AS epochs_run,
    t.val_loss AS val_loss,
    t.val_acc AS val_acc,
    t.val_ece AS val_ece,
    t.gap AS gap,
    t.train_loss AS train_loss,
"""
_VIEW_TAIL = """
    t.duration_s AS duration_s,
    t.started_at AS started_at,
    t.finished_at AS finished_at
FROM regtune_trials AS t
JOIN regtune_studies AS s ON s.id = t.study_id
"""

# Frozen here on purpose (a later change to the view is a new migration).
TRIAL_RESULTS_VIEW = (
    _VIEW_HEAD.rstrip("\n")
    + _VIEW_COLUMNS_0005.rstrip("\n")
    + _VIEW_COLUMNS_0004.rstrip("\n")
    + _VIEW_COLUMNS_0001.rstrip("\n")
    + _VIEW_TAIL
)
TRIAL_RESULTS_VIEW_0004 = (
    _VIEW_HEAD.rstrip("\n")
    + _VIEW_COLUMNS_0004.rstrip("\n")
    + _VIEW_COLUMNS_0001.rstrip("\n")
    + _VIEW_TAIL
)


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS regtune_trial_results")
    op.add_column("regtune_trials", sa.Column("values", sa.JSON(), nullable=True))
    op.add_column("regtune_trials", sa.Column("feasible", sa.Boolean(), nullable=True))
    op.execute(TRIAL_RESULTS_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS regtune_trial_results")
    op.drop_column("regtune_trials", "feasible")
    op.drop_column("regtune_trials", "values")
    op.execute(TRIAL_RESULTS_VIEW_0004)
