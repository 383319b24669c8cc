"""trial sort indexes: page a study's trials by value without sorting the whole study

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 03:05:00+00:00

Written by hand (autogenerate does not reflect expression indexes). `GET
/api/v1/studies/{id}/trials?sort=value|-value` orders by ``value IS NULL, value [DESC], number``
(trials without a value last in both directions). Without a matching index PostgreSQL sorts every
trial row of the study for each page (a 10,000-trial study: ~50 ms, spilling to disk, measured by
bench/api_latency.py); with these two the page is an index range scan. Both are expression
indexes, which PostgreSQL and SQLite (>= 3.9) support with the same DDL. ``-value`` needs its own
index because its columns mix ascending and descending order.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_regtune_trials_study_value_sort",
        "regtune_trials",
        ["study_id", sa.text("(value IS NULL)"), "value", "number"],
    )
    op.create_index(
        "ix_regtune_trials_study_value_desc_sort",
        "regtune_trials",
        ["study_id", sa.text("(value IS NULL)"), sa.text("value DESC"), "number"],
    )


def downgrade() -> None:
    op.drop_index("ix_regtune_trials_study_value_desc_sort", table_name="regtune_trials")
    op.drop_index("ix_regtune_trials_study_value_sort", table_name="regtune_trials")
