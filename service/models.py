"""The service's own tables (prefixed ``regtune_``); Optuna's tables live beside them.

Trial rows mirror Optuna's trials with flat, indexed columns (the six regularization parameters
and the best epoch's metrics) so the API pages through SQL and people can query it directly.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, InstrumentedAttribute, Mapped, mapped_column

from trainers.params import PARAM_NAMES

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Naive UTC, like Optuna's own timestamps."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class StudyStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (StudyStatus.completed, StudyStatus.failed, StudyStatus.cancelled)


class TrialRole(enum.StrEnum):
    """Why a trial ran: the search (the n_trials budget) or an extra run beside it."""

    search = "search"
    reference = "reference"  # regularization off: what regularization bought
    confirm = "confirm"  # a search trial's config re-trained with a new seed (repeat_of)


class TrialState(enum.StrEnum):
    claimed = "claimed"  # a worker holds a slot; the Optuna trial is being created
    running = "running"
    complete = "complete"
    pruned = "pruned"
    cancelled = "cancelled"  # stopped by a study cancel (Optuna: PRUNED)
    fail = "fail"

    @property
    def is_finished(self) -> bool:
        """Counts towards the study's n_trials."""
        return self in (TrialState.complete, TrialState.pruned)


# Stored as plain strings (no database enum types: Optuna owns several enum names on PostgreSQL).
_STATUS_LEN = 16


class StudyRecord(Base):
    __tablename__ = "regtune_studies"
    __table_args__ = (
        Index("ix_regtune_studies_status_created", "status", "created_at"),
        Index("ix_regtune_studies_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    trainer: Mapped[str] = mapped_column(String(128))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(_STATUS_LEN), default=StudyStatus.queued.value)
    metric: Mapped[str] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(8))
    n_trials: Mapped[int] = mapped_column(Integer)
    # progress counters, recomputed from regtune_trials whenever a trial changes state
    n_complete: Mapped[int] = mapped_column(Integer, default=0)
    n_pruned: Mapped[int] = mapped_column(Integer, default=0)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    n_running: Mapped[int] = mapped_column(Integer, default=0)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    # extra runs beyond n_trials (reference + confirmation): planned at submit, lowered to what
    # the finished search allows (confirm repeats at most its completed trials); and finished
    n_extra: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    n_extra_finished: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    best_value: Mapped[float | None] = mapped_column(Float)
    best_trial_number: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    # deadline from budget.timeout_s, set when the first trial starts
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime)


class TrialRecord(Base):
    __tablename__ = "regtune_trials"
    __table_args__ = (
        # a slot is one unit of the n_trials budget; NULL once a trial failed (slot released)
        UniqueConstraint("study_id", "slot"),
        UniqueConstraint("study_id", "number"),
        Index("ix_regtune_trials_study_state", "study_id", "state"),
        Index("ix_regtune_trials_study_role", "study_id", "role"),
        Index("ix_regtune_trials_study_value", "study_id", "value"),
        # the stale-trial sweep finds running trials (and old claims) of every study at once
        Index("ix_regtune_trials_state_claimed", "state", "claimed_at"),
        # trial pages sorted by value / -value (NULLs last): see migration 0002
        Index(
            "ix_regtune_trials_study_value_sort",
            "study_id",
            text("(value IS NULL)"),
            "value",
            "number",
        ),
        Index(
            "ix_regtune_trials_study_value_desc_sort",
            "study_id",
            text("(value IS NULL)"),
            text("value DESC"),
            "number",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("regtune_studies.id", ondelete="CASCADE"))
    slot: Mapped[int | None] = mapped_column(Integer)
    number: Mapped[int | None] = mapped_column(Integer)  # Optuna trial number
    optuna_trial_id: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(_STATUS_LEN), default=TrialState.claimed.value)
    worker: Mapped[str | None] = mapped_column(String(128))
    retry_of: Mapped[int | None] = mapped_column(Integer)  # number of the trial this retries
    # search | reference | confirm (TrialRole); only search trials use slots of n_trials
    role: Mapped[str] = mapped_column(
        String(_STATUS_LEN), default=TrialRole.search.value, server_default="search"
    )
    train_seed: Mapped[int | None] = mapped_column(BigInteger)  # seeds go up to 2**32 - 1
    repeat_of: Mapped[int | None] = mapped_column(Integer)  # confirm: the repeated trial's number
    # sampled parameters
    weight_decay: Mapped[float | None] = mapped_column(Float)
    l1: Mapped[float | None] = mapped_column(Float)
    dropout: Mapped[float | None] = mapped_column(Float)
    label_smoothing: Mapped[float | None] = mapped_column(Float)
    batch_size: Mapped[int | None] = mapped_column(Integer)
    patience: Mapped[int | None] = mapped_column(Integer)
    # outcome
    value: Mapped[float | None] = mapped_column(Float)  # objective at the best epoch
    best_epoch: Mapped[int | None] = mapped_column(Integer)
    epochs_run: Mapped[int] = mapped_column(Integer, default=0)
    train_loss: Mapped[float | None] = mapped_column(Float)  # best epoch's metrics
    val_loss: Mapped[float | None] = mapped_column(Float)
    val_acc: Mapped[float | None] = mapped_column(Float)
    val_ece: Mapped[float | None] = mapped_column(Float)
    gap: Mapped[float | None] = mapped_column(Float)
    val_nll: Mapped[float | None] = mapped_column(Float)
    near_zero_frac: Mapped[float | None] = mapped_column(Float)
    weight_l2: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # all best-epoch metrics
    test_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # every objective's best-epoch value, in the spec's order (the first is `value`)
    values: Mapped[list[float] | None] = mapped_column(JSON)
    # all constraints hold at the best epoch; NULL when the study has none
    feasible: Mapped[bool | None] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)
    claimed_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)
    duration_s: Mapped[float | None] = mapped_column(Float)


# The regularization parameters, one column each (what summaries and plots read), in the order
# of `trainers.params.PARAM_NAMES`; a column missing for a name fails at import.
TRIAL_PARAM_COLUMNS: tuple[InstrumentedAttribute[Any], ...] = tuple(
    getattr(TrialRecord, name) for name in PARAM_NAMES
)


class TrialEpoch(Base):
    """One epoch of one trial: the learning curves."""

    __tablename__ = "regtune_trial_epochs"

    trial_id: Mapped[int] = mapped_column(
        ForeignKey("regtune_trials.id", ondelete="CASCADE"), primary_key=True
    )
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)


class ApiToken(Base):
    """Bearer tokens; only a SHA-256 hash of the secret is stored."""

    __tablename__ = "regtune_api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(8))  # read | write
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)
