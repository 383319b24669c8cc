"""The study spec: one document for REST, CLI and YAML/JSON files (see README)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trainers import Range, SearchSpace, UnknownTrainerError, get_trainer
from trainers.objective import ObjectiveSpec

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class ObjectiveConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metric: str = Field("val_loss", min_length=1, max_length=64)
    direction: Literal["minimize", "maximize"] = "minimize"


class SamplerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["tpe", "random", "grid", "cmaes", "gp", "qmc", "nsga2"] = "tpe"
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    # extra keyword arguments for the Optuna sampler (checked when the sampler is built)
    options: dict[str, Any] = Field(default_factory=dict)


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
    ] = "auto"
    options: dict[str, Any] = Field(default_factory=dict)


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_trials: int = Field(20, ge=1, le=100_000)
    timeout_s: float | None = Field(None, gt=0, le=30 * 24 * 3600)


class ExecutionConfig(BaseModel):
    """How each trial runs on its device (what the Lightning Trainer gets)."""

    model_config = ConfigDict(extra="forbid")
    # Lightning's precision names (bf16-mixed runs on CPUs too; 16-mixed needs a GPU)
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "64-true", "bf16-true", "16-true"] = (
        "32-true"
    )


class StudySpec(BaseModel):
    """A study: which trainer, which search space, which objective, sampler, pruner and budget."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="unique study name")
    trainer: str = Field(min_length=1, max_length=128, description="a registered trainer name")
    trainer_config: dict[str, Any] = Field(default_factory=dict)
    search_space: SearchSpace = Field(default_factory=SearchSpace)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)
    budget: Budget = Field(default_factory=Budget)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    enqueue: list[dict[str, int | float]] = Field(
        default_factory=list,
        max_length=100,
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
                f"trainer_config.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                for err in exc.errors()
            )
            raise ValueError(problems) from None
        # store the normalized config (defaults filled in) so workers see exactly what was checked
        self.trainer_config = config.model_dump(mode="json")
        if self.objective.metric not in trainer.metrics:
            raise ValueError(
                f"objective.metric {self.objective.metric!r} is not logged by trainer "
                f"{self.trainer!r}; choose one of: {', '.join(trainer.metrics)}"
            )
        self._check_enqueue()
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
        return self

    def _check_enqueue(self) -> None:
        searched = self.search_space.searched()
        errors: list[str] = []
        for i, point in enumerate(self.enqueue):
            for name, value in point.items():
                if name not in searched:
                    errors.append(
                        f"enqueue.{i}.{name} is not a searched parameter "
                        f"(searched: {', '.join(searched) or 'none'})"
                    )
                elif not self.search_space.contains(name, value):
                    errors.append(f"enqueue.{i}.{name}: {value!r} is outside the search space")
        if errors:
            raise ValueError("; ".join(errors))

    def objective_spec(
        self, accelerator: str = "cpu", torch_threads: int | None = None
    ) -> ObjectiveSpec:
        return ObjectiveSpec(
            trainer=self.trainer,
            trainer_config=self.trainer_config,
            search_space=self.search_space,
            metric=self.objective.metric,
            direction=self.objective.direction,
            accelerator=accelerator,
            torch_threads=torch_threads,
            precision=self.execution.precision,
        )


class SpecFileError(ValueError):
    """A spec file that cannot be read or parsed."""


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON spec file into a dict (validation is `StudySpec.model_validate`)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise SpecFileError(f"cannot read {p}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as exc:
        raise SpecFileError(f"{p} is not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise SpecFileError(f"{p} must contain a mapping (the study spec), not {kind}")
    return data
