"""Response models of the study, trial and trainer endpoints (the OpenAPI schema at /docs)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Optional, TypeVar

from pydantic import AfterValidator, BaseModel, Field, create_model

from service.models import StudyStatus, TrialState
from trainers.params import RegularizationParams

T = TypeVar("T")


def _as_utc(value: datetime) -> datetime:
    # the database stores naive UTC (like Optuna); RFC 3339 needs the offset: "...Z"
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDateTime = Annotated[datetime, AfterValidator(_as_utc)]


class Page(BaseModel, Generic[T]):
    """One page of a list: `items`, the `total` matching the filter, and the page bounds."""

    items: list[T]
    total: int = Field(description="rows matching the filter (all pages)")
    limit: int
    offset: int


class Progress(BaseModel):
    """Trial counts of a study. `finished` (complete + pruned) counts towards `n_trials`."""

    n_trials: int = Field(description="budget.n_trials")
    finished: int
    complete: int
    pruned: int
    failed: int
    running: int
    extra: int = Field(
        0,
        description="runs planned beyond n_trials: the reference run and confirmation repeats "
        "(never counted in n_trials or the counts above, except running)",
    )
    extra_finished: int = Field(0, description="extra runs finished")


def _all_optional(model: type[BaseModel]) -> type[BaseModel]:
    """`model`'s fields (names, order, types, descriptions), each optional with default None."""
    fields: dict[str, Any] = {
        # Optional[...]: mypy refuses `annotation | None` (the annotation is typed as optional)
        name: (Optional[info.annotation], Field(None, description=info.description))  # noqa: UP045
        for name, info in model.model_fields.items()
    }
    return create_model(f"_Optional{model.__name__}", **fields)


# Built from RegularizationParams, so the six parameters are defined once (trainers/params.py)
# and the OpenAPI schema still lists each with its type.
class Params(_all_optional(RegularizationParams)):  # type: ignore[misc]  # a dynamic base
    """The regularization settings of one trial (None while not yet sampled)."""


class TrialSummary(BaseModel):
    """One trial, flattened: parameters, state, objective value and best-epoch metrics."""

    number: int = Field(description="Optuna trial number")
    state: TrialState
    params: Params
    value: float | None = Field(description="objective at the best epoch")
    best_epoch: int | None
    epochs_run: int
    duration_s: float | None
    train_loss: float | None
    val_loss: float | None
    val_acc: float | None
    val_ece: float | None
    gap: float | None
    metrics: dict[str, Any] | None = Field(description="every metric of the best epoch")
    started_at: UtcDateTime | None
    finished_at: UtcDateTime | None
    error: str | None = Field(description="why the trial failed, if it did")
    retry_of: int | None = Field(
        None, description="number of the trial this one retries (its worker died mid-trial)"
    )
    values: list[float] | None = Field(
        None, description="every objective's value at the best epoch, in the spec's order"
    )
    feasible: bool | None = Field(
        None, description="the spec's constraints hold at the best epoch (null: no constraints)"
    )
    role: str = Field("search", description="search, reference or confirm")
    repeat_of: int | None = Field(
        None, description="confirm: the number of the search trial whose config this repeats"
    )
    train_seed: int | None = Field(None, description="the training seed the trainer ran with")
    val_nll: float | None = None
    near_zero_frac: float | None = Field(None, description="share of near-zero weights")
    weight_l2: float | None = Field(None, description="L2 norm of the weights")


class EpochMetrics(BaseModel):
    epoch: int
    metrics: dict[str, Any]


class TrialDetail(TrialSummary):
    """One trial with its learning curves (one entry per epoch) and test metrics."""

    test_metrics: dict[str, Any] | None
    worker: str | None
    epochs: list[EpochMetrics]


class StudySummary(BaseModel):
    """A row of the study list."""

    id: int
    name: str
    trainer: str
    status: StudyStatus
    metric: str
    direction: str
    progress: Progress
    best_value: float | None = Field(
        description="the best trial's value (the best mean of a confirmed config, if any)"
    )
    best_trial_number: int | None
    reference_value: float | None = Field(
        None, description="the reference run's value (regularization off), once complete"
    )
    created_at: UtcDateTime
    started_at: UtcDateTime | None
    finished_at: UtcDateTime | None
    error: str | None


class StudyDetail(StudySummary):
    """A study: its spec (normalized, defaults filled in), progress and best trial."""

    spec: dict[str, Any]
    updated_at: UtcDateTime
    best_trial: TrialSummary | None


class Objective(BaseModel):
    """One objective of a study."""

    metric: str
    direction: str


class ParetoTrial(BaseModel):
    """A trial of the Pareto set: no other (feasible) trial is as good on every objective and
    better on one."""

    number: int
    params: Params
    values: list[float] = Field(description="each objective's best-epoch value, in order")
    metrics: dict[str, Any] | None
    feasible: bool | None


class RunResult(BaseModel):
    """The reference run: the best config retrained with regularization off (weight decay,
    L1, dropout, label smoothing 0; patience max_epochs, so no early stopping; same batch size
    and seed)."""

    trial_number: int | None
    state: TrialState
    params: Params
    value: float | None
    metrics: dict[str, Any] | None
    test_metrics: dict[str, Any] | None
    gap: float | None
    val_ece: float | None
    near_zero_frac: float | None
    weight_l2: float | None


class Confirmation(BaseModel):
    """Every run of the best config (its search trial and its confirmation repeats): n, mean,
    sample standard deviation and the Student-t 95 % interval of the mean."""

    n: int
    mean: float
    std: float | None
    ci95_low: float | None
    ci95_high: float | None
    values: list[float]
    trial_numbers: list[int]
    # repeats whose training failed (diverged, raised): not re-run, not in n or the mean
    failed: list[int] = []


class SingleRun(BaseModel):
    """The best single search trial, when the ranking by mean picked another config."""

    trial_number: int
    value: float


class BestResult(BaseModel):
    """The best trial so far: what a CI job consumes.

    `final` is true once the study ended (completed, failed or cancelled); before that the
    result may still improve. `value`, `trial_number` and the rest are the best trial on the
    first objective among the feasible ones (an infeasible one, `feasible` false, only when no
    trial satisfies the constraints); a study with several objectives also lists its Pareto
    set in `pareto`.
    """

    study_id: int
    study: str
    status: StudyStatus
    final: bool
    metric: str
    direction: str
    value: float
    trial_number: int
    params: Params
    best_epoch: int | None
    epochs_run: int
    metrics: dict[str, Any] | None
    test_metrics: dict[str, Any] | None
    progress: Progress
    objectives: list[Objective] = Field(
        default_factory=list, description="the study's objectives; the first ranks `value`"
    )
    feasible: bool | None = Field(
        None, description="the constraints hold for this trial (null: the study has none)"
    )
    pareto: list[ParetoTrial] | None = Field(
        None,
        description="several objectives: the non-dominated trials (feasible ones when any "
        "trial is feasible), by the first objective, at most 1,000",
    )
    reference: RunResult | None = Field(
        None, description="the reference run (regularization off), once it started"
    )
    confirmation: Confirmation | None = Field(
        None,
        description="with confirmation repeats: the best config by the mean of its runs; "
        "`value` is then that mean and `trial_number` its search trial",
    )
    single_run: SingleRun | None = Field(
        None, description="the best single search trial, when it is not the config ranked best"
    )


class TrainerInfo(BaseModel):
    """A registered trainer: its name, what it logs, and the JSON schema of its config."""

    name: str
    description: str
    metrics: list[str]
    tags: list[str]
    config_schema: dict[str, Any]


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    database: str = Field(examples=["ok"])
    version: str
