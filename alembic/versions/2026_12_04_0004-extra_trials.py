"""extra trials: a trial's role (search, reference, confirm), its training seed, and the
regularization metrics every trainer now yields, as columns and in the regtune_trial_results view

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 03:40:00+00:00

Written by hand. ``role`` tells the search trials (the ``n_trials`` budget) from the reference
run (regularization off) and the confirmation repeats (a search trial's config re-trained with a
new seed, ``repeat_of`` = that trial's number); existing rows are search trials. ``train_seed``
is the seed the trainer ran with (BIGINT: Lightning seeds go up to 2**32 - 1).
``near_zero_frac``, ``weight_l2`` and ``val_nll`` are copied from the best epoch's metrics like
``val_ece``. On regtune_studies, ``n_extra`` is the number of extra runs planned beyond
``n_trials`` (reference + confirmation; 0 for studies from before) and ``n_extra_finished`` how
many of them finished. The view is dropped and recreated with them (a view's column list is
fixed when it is created, on SQLite and PostgreSQL alike).
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
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
    t.state AS state,"""
_VIEW_PARAMS = """
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
    t.train_loss AS train_loss,"""
_VIEW_TAIL = """
    t.duration_s AS duration_s,
    t.started_at AS started_at,
    t.finished_at AS finished_at
FROM regtune_trials AS t
JOIN regtune_studies AS s ON s.id = t.study_id
"""
_ROLE = """
    t.role AS role,
    t.repeat_of AS repeat_of,
    t.train_seed AS train_seed,"""
_METRICS = """
    t.val_nll AS val_nll,
    t.near_zero_frac AS near_zero_frac,
    t.weight_l2 AS weight_l2,"""

# Frozen here on purpose (a later change to the view is a new migration).
TRIAL_RESULTS_VIEW = _VIEW_HEAD + _ROLE + _VIEW_PARAMS + _METRICS + _VIEW_TAIL
TRIAL_RESULTS_VIEW_0001 = _VIEW_HEAD + _VIEW_PARAMS + _VIEW_TAIL

NEW_FLOAT_COLUMNS = ("val_nll", "near_zero_frac", "weight_l2")
STUDY_COLUMNS = ("n_extra", "n_extra_finished")


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS regtune_trial_results")
    op.add_column(
        "regtune_trials",
        sa.Column("role", sa.String(length=16), server_default="search", nullable=False),
    )
    op.add_column("regtune_trials", sa.Column("train_seed", sa.BigInteger(), nullable=True))
    op.add_column("regtune_trials", sa.Column("repeat_of", sa.Integer(), nullable=True))
    for name in NEW_FLOAT_COLUMNS:
        op.add_column("regtune_trials", sa.Column(name, sa.Float(), nullable=True))
    for name in STUDY_COLUMNS:
        op.add_column(
            "regtune_studies",
            sa.Column(name, sa.Integer(), server_default="0", nullable=False),
        )
    op.create_index("ix_regtune_trials_study_role", "regtune_trials", ["study_id", "role"])
    op.execute(TRIAL_RESULTS_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS regtune_trial_results")
    op.drop_index("ix_regtune_trials_study_role", table_name="regtune_trials")
    for name in reversed(STUDY_COLUMNS):
        op.drop_column("regtune_studies", name)
    for name in (*reversed(NEW_FLOAT_COLUMNS), "repeat_of", "train_seed", "role"):
        op.drop_column("regtune_trials", name)
    op.execute(TRIAL_RESULTS_VIEW_0001)
