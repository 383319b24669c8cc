"""The study spec: one document for REST, CLI and YAML/JSON files (see README).

Every number in a spec is finite, every list and free-form mapping bounded (limits below and in
docs/api.md): a hostile spec is a 422 at the field, never a 500, a stalled server or a study no
worker can run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from service.optuna_builders import (
    DEFAULT_GAP_EPOCHS,
    SINGLE_OBJECTIVE_SAMPLERS,
    SpecError,
    check_options,
)
from service.studies.confirmation import RACE_ALPHA
from trainers import PARAM_NAMES, Range, SearchSpace, UnknownTrainerError, get_trainer
from trainers.objective import ObjectiveSpec
from trainers.space import MAX_ABS_INT, NotBool, Number, in_distribution

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"

# Limits of a spec's free-form mappings (`trainer_config`, `sampler.options`, `pruner.options`)
# and of a parsed YAML document: nesting depth, values in all, length of a key.
MAX_JSON_DEPTH = 16
MAX_JSON_VALUES = 10_000
MAX_KEY_LENGTH = 128
# A grid sampler runs every combination of the choices; a worker builds the whole grid.
MAX_GRID_POINTS = 100_000
MAX_ENQUEUE = 100


def _json_problem(value: Any, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """What makes `value` more than a small, finite JSON document, or None.

    Iterative, and stops at the first problem: the check's cost is bounded by the limits, not
    by the document.
    """
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    seen = 0
    while stack:
        item, path, depth = stack.pop()
        seen += 1
        if seen > MAX_JSON_VALUES:
            return f"has more than {MAX_JSON_VALUES} values in all"
        where = f" at {path}" if path else ""
        if isinstance(item, dict | list):
            if depth >= max_depth:
                return f"is nested deeper than {max_depth} levels{where}"
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                if isinstance(item, dict) and not isinstance(key, str):
                    return f"has a key that is not a string{where}: {str(key)[:40]!r}"
                if isinstance(key, str) and (len(key) > MAX_KEY_LENGTH or "\x00" in key):
                    return f"has a key longer than {MAX_KEY_LENGTH} characters or a NUL{where}"
                stack.append((child, f"{path}.{key}" if path else str(key), depth + 1))
        elif isinstance(item, float) and not math.isfinite(item):
            return f"holds a non-finite number{where} (NaN and infinities are not JSON)"
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > MAX_ABS_INT:
            return f"holds an integer of magnitude beyond 2**53{where}"
        elif isinstance(item, str) and "\x00" in item:
            return f"holds a string with a NUL character{where}"
        elif not isinstance(item, str | int | float | bool | None):
            return f"holds a {type(item).__name__}{where}, which JSON cannot represent"
    return None


def _small_json(value: dict[str, Any]) -> dict[str, Any]:
    problem = _json_problem(value)
    if problem is not None:
        raise PydanticCustomError("json_limits", "the mapping {problem}", {"problem": problem})
    return value


FreeForm = Annotated[dict[str, Any], AfterValidator(_small_json)]
"""A free-form mapping (options, trainer config): finite JSON within the limits above."""
ParamName = Annotated[str, StringConstraints(max_length=64)]


class ObjectiveConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metric: str = Field("val_loss", min_length=1, max_length=64)
    direction: Literal["minimize", "maximize"] = "minimize"


MAX_OBJECTIVES = 4
MAX_CONSTRAINTS = 8


def _objective_kind(value: Any) -> str:
    return "several" if isinstance(value, list) else "one"


# `objective` is one {metric, direction} or a list of 1-4 of them (a multi-objective study).
# A callable discriminator validates only the branch the input's shape picks, so a bad entry
# gets one error at its own field (the tags are dropped from `loc` by service.errors).
Objectives = Annotated[
    Annotated[ObjectiveConfig, Tag("one")]
    | Annotated[
        list[ObjectiveConfig], Tag("several"), Field(min_length=1, max_length=MAX_OBJECTIVES)
    ],
    Discriminator(_objective_kind),
]


class ConstraintConfig(BaseModel):
    """A bound on a best-epoch metric; a trial breaking any bound is infeasible."""

    model_config = ConfigDict(extra="forbid")
    metric: str = Field(min_length=1, max_length=64)
    op: Literal["<=", ">="]
    value: NotBool[float] = Field(allow_inf_nan=False)

    def violation(self, metrics: dict[str, float]) -> float:
        """Optuna's constraint value: <= 0 when the bound holds (inf when the metric is absent
        or not finite)."""
        measured = metrics.get(self.metric)
        if measured is None or not math.isfinite(measured):
            return math.inf
        return measured - self.value if self.op == "<=" else self.value - measured


class SamplerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["tpe", "random", "grid", "cmaes", "gp", "qmc", "nsga2"] = "tpe"
    seed: NotBool[int | None] = Field(None, ge=0, le=2**31 - 1)
    # extra keyword arguments for the Optuna sampler (checked by building it at submit)
    options: FreeForm = Field(default_factory=dict)


class PrunerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Default "auto": a percentile pruner (cuts the worst quarter at each epoch) that waits out
    # the shortest early-stopping patience (see service.worker.optimization.build_pruner and
    # docs/benchmarks.md, which compares it with Hyperband and the median rule).
    name: Literal[
        "none",
        "median",
        "percentile",
        "successive_halving",
        "hyperband",
        "patient",
        "threshold",
        "auto",
        "gap",
    ] = "auto"
    # "gap": the "auto" pruner plus regtune's overfitting rule, option `epochs` (k, default
    # `DEFAULT_GAP_EPOCHS`): a trial is pruned once its gap rose k epochs in a row while the
    # objective stalled (trainers.objective), or stopped like an early stop with option
    # `action: stop`; the other options go to the "auto" pruner
    options: FreeForm = Field(default_factory=dict)

    def gap_stop_epochs(self) -> int | None:
        """The gap rule's k for the trainers, or None when this pruner is not ``gap``
        (the option is checked at submit by `service.optuna_builders.build_pruner`)."""
        if self.name != "gap":
            return None
        value = self.options.get("epochs", DEFAULT_GAP_EPOCHS)
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else None

    def gap_stop_action(self) -> Literal["prune", "stop"]:
        """The gap rule's action (option ``action``, checked at submit like ``epochs``)."""
        return "stop" if self.options.get("action") == "stop" else "prune"


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_trials: NotBool[int] = Field(20, ge=1, le=100_000)
    timeout_s: NotBool[float | None] = Field(None, gt=0, le=30 * 24 * 3600, allow_inf_nan=False)


MAX_CONFIRM_TOP_K = 10
MAX_CONFIRM_REPEATS = 10


class ConfirmConfig(BaseModel):
    """Re-train the `top_k` best configurations `repeats` more times each, with new training
    seeds, once the search budget is spent (docs/api.md, "Confirmation")."""

    model_config = ConfigDict(extra="forbid")
    top_k: NotBool[int] = Field(3, ge=1, le=MAX_CONFIRM_TOP_K)
    repeats: NotBool[int] = Field(2, ge=1, le=MAX_CONFIRM_REPEATS)
    race: bool = Field(
        False,
        description="repeat round by round and stop re-training a configuration once a "
        f"one-sided Welch test at {RACE_ALPHA:g} finds it worse than the leader (docs/api.md, "
        "'Racing')",
    )


class ExecutionConfig(BaseModel):
    """How each trial runs on its device (what the Lightning Trainer gets)."""

    model_config = ConfigDict(extra="forbid")
    # Lightning's precision names (bf16-mixed runs on CPUs too; 16-mixed needs a GPU)
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "64-true", "bf16-true", "16-true"] = (
        "32-true"
    )


def _not_an_id(name: str) -> str:
    """A study is addressed by id or name in one path segment; an all-digit name reads as an
    id there, so it would name another study."""
    if name.isdigit():
        raise ValueError("name cannot be all digits: it would read as a study id")
    return name


class StudySpec(BaseModel):
    """A study: which trainer, which search space, which objective, sampler, pruner and budget."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, AfterValidator(_not_an_id)] = Field(
        pattern=NAME_PATTERN, description="unique study name (not all digits: that is an id)"
    )
    trainer: str = Field(min_length=1, max_length=128, description="a registered trainer name")
    trainer_config: FreeForm = Field(default_factory=dict)
    search_space: SearchSpace = Field(default_factory=SearchSpace)
    objective: Objectives = Field(
        default_factory=ObjectiveConfig,
        description="the metric to optimize, or a list of 2-4 (a multi-objective study: "
        "/best returns the Pareto set; no pruning)",
    )
    constraints: list[ConstraintConfig] = Field(
        default_factory=list,
        max_length=MAX_CONSTRAINTS,
        description="bounds on best-epoch metrics (e.g. val_ece <= 0.05); trials breaking one "
        "are infeasible, never the best",
    )
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)
    budget: Budget = Field(default_factory=Budget)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    reference: bool = Field(
        True,
        description="also train one reference run with regularization off (weight decay, L1, "
        "dropout, label smoothing 0; patience max_epochs: no early stopping) after the search, "
        "shown beside the best in /best; never counts toward n_trials",
    )
    confirm: ConfirmConfig | None = Field(
        None,
        description="re-train the top_k best configurations `repeats` times with new seeds "
        "after the search and rank configurations by their mean (off when absent)",
    )
    enqueue: list[Annotated[dict[ParamName, Number], Field(max_length=len(PARAM_NAMES))]] = Field(
        default_factory=list,
        max_length=MAX_ENQUEUE,
        description="parameter sets evaluated first, in order (warm start, e.g. a previous best); "
        "each maps searched parameter names to values inside the search space",
    )

    @model_validator(mode="after")
    def _check_trainer(self) -> StudySpec:
        try:
            trainer = get_trainer(self.trainer)
        except UnknownTrainerError as exc:
            raise ValueError(f"trainer: {exc}") from None
        try:
            config = trainer.validate_config(self.trainer_config)
        except ValidationError as exc:
            problems = "; ".join(
                ".".join(["trainer_config", *(str(p) for p in err["loc"])])
                + ": "
                + err["msg"].removeprefix("Value error, ")
                for err in exc.errors()
            )
            raise ValueError(problems) from None
        # store the normalized config (defaults filled in) so workers see exactly what was checked
        self.trainer_config = config.model_dump(mode="json")
        self._check_objectives(trainer.metrics)
        self._check_enqueue()
        if self.confirm is not None and self.multi_objective:
            raise ValueError("confirm: ranking by the mean of repeats needs a single objective")
        ranges = [
            n
            for n in self.search_space.searched()
            if isinstance(getattr(self.search_space, n), Range)
        ]
        if self.sampler.name == "grid" and ranges:
            # name them: with a preset, ranges the user never wrote may be the ones in the way
            raise ValueError(
                "sampler.name grid needs every searched parameter given as choices "
                f"(given as ranges: {', '.join(ranges)})"
            )
        if self.sampler.name == "grid":
            self._check_grid_size()
        try:
            check_options(self)
        except SpecError as exc:
            raise ValueError(str(exc)) from None
        return self

    @property
    def n_extra(self) -> int:
        """Runs planned beyond `budget.n_trials`: the reference run and confirmation repeats
        (confirmation repeats at most as many configurations as the search completes)."""
        confirm = self.confirm.top_k * self.confirm.repeats if self.confirm else 0
        return int(self.reference) + confirm

    @property
    def objectives(self) -> list[ObjectiveConfig]:
        """The objectives in order (one for a single-objective study)."""
        return list(self.objective) if isinstance(self.objective, list) else [self.objective]

    @property
    def first_objective(self) -> ObjectiveConfig:
        """The objective that picks each trial's best epoch, early-stops it and ranks `value`."""
        return self.objectives[0]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def _check_objectives(self, logged: Sequence[str]) -> None:
        """Objective and constraint metrics the trainer logs, no metric twice; samplers and
        pruners that cannot serve several objectives are refused."""
        errors: list[str] = []
        several = isinstance(self.objective, list)
        seen: set[str] = set()
        for i, objective in enumerate(self.objectives):
            field = f"objective.{i}.metric" if several else "objective.metric"
            if objective.metric not in logged:
                errors.append(
                    f"{field} {objective.metric!r} is not logged by trainer {self.trainer!r} "
                    f"(it logs: {', '.join(logged)})"
                )
            elif objective.metric in seen:
                errors.append(f"{field} {objective.metric!r} is already an objective")
            seen.add(objective.metric)
        bounds: set[tuple[str, str]] = set()
        for i, constraint in enumerate(self.constraints):
            if constraint.metric not in logged:
                errors.append(
                    f"constraints.{i}.metric {constraint.metric!r} is not logged by trainer "
                    f"{self.trainer!r} (it logs: {', '.join(logged)})"
                )
            elif (constraint.metric, constraint.op) in bounds:
                errors.append(
                    f"constraints.{i}.op: {constraint.metric} {constraint.op} is given twice"
                )
            bounds.add((constraint.metric, constraint.op))
        if self.multi_objective:
            if self.sampler.name in SINGLE_OBJECTIVE_SAMPLERS:
                errors.append(
                    f"sampler.name {self.sampler.name} cannot optimize several objectives "
                    "(use tpe, nsga2, gp, random, qmc or grid)"
                )
            if self.pruner.name not in ("auto", "none"):
                errors.append(
                    f"pruner.name {self.pruner.name}: Optuna does not prune studies with several "
                    "objectives (leave the pruner out, or give one objective)"
                )
        if errors:
            raise ValueError("; ".join(errors))

    def _check_grid_size(self) -> None:
        points = math.prod(
            len(getattr(self.search_space, name).choices) for name in self.search_space.searched()
        )
        if points > MAX_GRID_POINTS:
            raise ValueError(
                f"sampler.name grid: the search space has {points:,} grid points, more than "
                f"the limit of {MAX_GRID_POINTS:,} (give fewer choices, or another sampler)"
            )

    def _check_enqueue(self) -> None:
        searched = self.search_space.searched()
        dists = self.search_space.distributions()  # once: linear in the enqueued points
        errors: list[str] = []
        for i, point in enumerate(self.enqueue):
            for name, value in point.items():
                if name not in dists:
                    errors.append(
                        f"enqueue.{i}.{name} is not a searched parameter "
                        f"(searched: {', '.join(searched) or 'none'})"
                    )
                elif not in_distribution(dists[name], value):
                    errors.append(f"enqueue.{i}.{name}: {value!r} is outside the search space")
            missing = [name for name in searched if name not in point]
            if self.sampler.name == "grid" and missing:
                # Optuna's GridSampler fails such a trial ("All parameters must be specified")
                errors.append(
                    f"enqueue.{i}: the grid sampler needs every searched parameter; "
                    f"missing {', '.join(missing)}"
                )
        if errors:
            raise ValueError("; ".join(errors))

    def objective_spec(
        self, accelerator: str = "cpu", torch_threads: int | None = None
    ) -> ObjectiveSpec:
        return ObjectiveSpec(
            trainer=self.trainer,
            trainer_config=self.trainer_config,
            search_space=self.search_space,
            metric=self.first_objective.metric,
            direction=self.first_objective.direction,
            accelerator=accelerator,
            torch_threads=torch_threads,
            precision=self.execution.precision,
            gap_stop_epochs=self.pruner.gap_stop_epochs(),
            gap_stop_action=self.pruner.gap_stop_action(),
        )


class SpecFileError(ValueError):
    """A spec file that cannot be read or parsed."""


class SpecTextError(ValueError):
    """Spec text that is not a YAML/JSON mapping within the limits (the message says where)."""


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_spec_text(text: str) -> dict[str, Any]:
    """YAML (or JSON, which is YAML) spec text -> the JSON document `StudySpec` validates.

    The one place a spec's text is parsed (files, `regtune submit/tune`, the dashboard editor).
    Safe YAML without aliases: an alias (``*name``) can expand a few hundred bytes into
    gigabytes, or refer to itself. The document must be a mapping of JSON values (finite
    numbers, string keys) within `MAX_JSON_DEPTH` and `MAX_JSON_VALUES`.

    Raises:
        SpecTextError: with the line and column where the parser knows them.
    """
    try:
        # libyaml's event stream first: aliases are refused before anything is expanded
        for event in yaml.parse(text, Loader=_YAML_LOADER):
            if isinstance(event, yaml.AliasEvent):
                raise SpecTextError(
                    f"{_where(getattr(event, 'start_mark', None))}YAML aliases "
                    f"(*{str(event.anchor)[:40]}) are not allowed in a spec"
                )
        document = yaml.load(text, Loader=_YAML_LOADER)  # a safe loader: plain data only
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecTextError(f"{_where(mark)}{problem}") from None
    except (ValueError, OverflowError) as exc:  # e.g. "!!float abc", a 5,000-digit integer
        if isinstance(exc, SpecTextError):
            raise
        raise SpecTextError(f"a value cannot be read: {str(exc)[:200]}") from None
    if not isinstance(document, dict):
        kind = type(document).__name__
        raise SpecTextError(f"the spec must be a mapping (name: ..., trainer: ...), not {kind}")
    problem = _json_problem(document, max_depth=MAX_JSON_DEPTH + 2)
    if problem is not None:
        raise SpecTextError(f"the spec {problem}")
    return document


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON spec file into a dict (validation is `StudySpec.model_validate`)."""
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise SpecFileError(f"cannot read {p}: {reason}") from None
    try:
        return parse_spec_text(text)
    except SpecTextError as exc:
        raise SpecFileError(f"{p} is not a valid YAML/JSON spec: {exc}") from None
