"""sweep index: the stale-trial sweep finds running trials without visiting every study

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 23:50:00+00:00

The sweep (`service.worker.stale`) used to visit every queued or running study each time (one
Optuna `load_study` and a few queries per study: 300 queued studies made a sweep take 4.3 s on
SQLite). It now starts from queries over the trials in state ``running`` and the ``claimed``
ones older than the grace period, whatever study they belong to; this index keeps both range
scans however many finished trials the database holds.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_regtune_trials_state_claimed", "regtune_trials", ["state", "claimed_at"])


def downgrade() -> None:
    op.drop_index("ix_regtune_trials_state_claimed", table_name="regtune_trials")
