"""The search space of a study: one distribution (or fixed value) per regularization parameter.

The same document is used by the REST API, the CLI and YAML files::

    weight_decay:    {low: 1.0e-6, high: 1.0e-1, log: true}
    l1:              {fixed: 0.0}
    dropout:         {low: 0.0, high: 0.7}
    batch_size:      {choices: [16, 32, 64]}
    patience:        {low: 2, high: 10}

A parameter left out takes its `RegularizationParams` default as a fixed value, unless the
document names a preset (`trainers.presets`): ``{preset: standard, dropout: {...}}`` takes every
parameter it does not give from the preset. The validated space keeps the preset's name and holds
the expanded parameters, so validating its dump again gives the same space.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

import optuna
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from trainers.params import PARAM_NAMES, RegularizationParams
from trainers.presets import PRESETS, UnknownPresetError, get_preset

# Integers beyond this magnitude are refused: a float cannot hold them exactly (and past ~1e308
# converting one raises OverflowError), and no parameter needs them.
MAX_ABS_INT = 2**53
# Most values one `choices` list may hold: a grid or an enqueue check stays cheap.
MAX_CHOICES = 1_000
# a range's grid (`step`): more points than this is no grid (and Optuna's Decimal arithmetic
# on it fails)
MAX_STEPS = 10**15


def finite_number(value: int | float) -> int | float:
    """`value` if it is a finite float or an integer of magnitude <= `MAX_ABS_INT`.

    Raises a ``finite_number`` error otherwise, so a 422 names the field holding the value
    (JSON parsers read ``NaN``, ``Infinity`` and ``1e400`` as non-finite floats).
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise PydanticCustomError("finite_number", "Input should be a finite number")
    if isinstance(value, int) and abs(value) > MAX_ABS_INT:
        raise PydanticCustomError(
            "finite_number", "Input should be a number of magnitude at most 2**53"
        )
    return value


def not_a_boolean(value: Any) -> Any:
    """Refuse JSON ``true``/``false`` where a number belongs (pydantic would read them as 1 and
    0: ``batch_size: {fixed: true}`` trained with batch size 1)."""
    if isinstance(value, bool):
        raise PydanticCustomError("number_type", "Input should be a number, not a boolean")
    return value


_T = TypeVar("_T")
NotBool = Annotated[_T, BeforeValidator(not_a_boolean)]
"""A number field that refuses JSON true/false (pydantic would read them as 1 and 0)."""

Number = Annotated[NotBool[int | float], AfterValidator(finite_number)]
"""A finite int or float, never a boolean (see `finite_number`)."""

# Which parameters are integers, and the rule each parameter's values obey.
INT_PARAMS = frozenset({"batch_size", "patience"})
# the trials table stores them in SQL INTEGER columns (32-bit on PostgreSQL)
_MAX_INT_PARAM = 2**31 - 1
_BOUNDS: dict[str, tuple[float, float | None, bool]] = {
    # name: (minimum, maximum or None, maximum is exclusive)
    "weight_decay": (0.0, None, False),
    "l1": (0.0, None, False),
    "dropout": (0.0, 1.0, True),
    "label_smoothing": (0.0, 1.0, True),
    "batch_size": (1, _MAX_INT_PARAM, False),
    "patience": (0, _MAX_INT_PARAM, False),
}


STORED = "stored"
"""Validation context key: the spec was accepted earlier (a worker reading it back), so rules
added since then that would refuse it are not applied (`Range` step rule)."""


class Range(BaseModel):
    """A float or int range (int for `batch_size` and `patience`)."""

    model_config = ConfigDict(extra="forbid")
    low: Number
    high: Number
    log: bool = False
    step: Number | None = None

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> Range:
        if self.low > self.high:
            raise ValueError("low must be <= high")
        if self.log and self.low <= 0:
            raise ValueError("log: true needs low > 0")
        if self.step is not None:
            if self.step <= 0:
                raise ValueError("step must be > 0")
            if self.log:
                raise ValueError("step cannot be combined with log: true")
            if (self.high - self.low) / self.step > MAX_STEPS:
                raise ValueError(
                    f"step is too small: more than {MAX_STEPS:.0e} steps from low to high"
                )
            # Optuna's rule (Decimal of the printed values): a high off the grid is lowered to
            # the last point with a warning in a worker's log, the spec still showing high.
            # Checked at submit; a spec stored before this rule (context `stored`) still runs.
            low, high, step = (Decimal(str(v)) for v in (self.low, self.high, self.step))
            stored = bool(info.context and info.context.get(STORED))
            if not stored and (high - low) % step != 0:
                last = (high - low) // step * step + low
                raise ValueError(
                    f"step {self.step:g} does not divide high - low: the last point would be "
                    f"{float(last):g}, not high {self.high:g} (make high low + a multiple of "
                    "step)"
                )
        return self


class Choices(BaseModel):
    """A categorical choice among listed values."""

    model_config = ConfigDict(extra="forbid")
    choices: list[Number] = Field(min_length=1, max_length=MAX_CHOICES)


class Fixed(BaseModel):
    """A fixed value (not searched)."""

    model_config = ConfigDict(extra="forbid")
    fixed: Number


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "fixed" if "fixed" in value else "choices" if "choices" in value else "range"
    if isinstance(value, Fixed):
        return "fixed"
    return "choices" if isinstance(value, Choices) else "range"


ParamSpec = Annotated[
    Annotated[Range, Tag("range")]
    | Annotated[Choices, Tag("choices")]
    | Annotated[Fixed, Tag("fixed")],
    Discriminator(_kind),
]


def _named_values(name: str, spec: Range | Choices | Fixed) -> list[tuple[str, Number]]:
    if isinstance(spec, Range):
        # an integer parameter's step is an integer too (a step of 0.5 would truncate to 0)
        step = [("step", spec.step)] if spec.step is not None and name in INT_PARAMS else []
        return [("low", spec.low), ("high", spec.high), *step]
    if isinstance(spec, Choices):
        return [("choices", c) for c in spec.choices]
    return [("fixed", spec.fixed)]


def _rule_error(name: str, key: str, value: Number) -> str | None:
    """The rule `value` breaks as parameter `name`, phrased for the user, or None."""
    lo, hi, hi_exclusive = _BOUNDS[name]
    if name in INT_PARAMS:
        if isinstance(value, bool) or float(value) != int(value) or value < lo:
            kind = "positive integers" if lo >= 1 else "non-negative integers"
            return (
                f"{name}.{key} must be {kind}"
                if key == "choices"
                else (f"{name}.{key} must be a {kind[:-1]}")
            )
        if hi is not None and value > hi:
            return f"{name}.{key} must be <= {int(hi)}"
        return None
    if value < lo:
        return f"{name}.{key} must be >= {lo:g}"
    if hi is not None and (value >= hi if hi_exclusive else value > hi):
        return f"{name}.{key} must be {'<' if hi_exclusive else '<='} {hi:g}"
    return None


# The schema lists the known names; the validator (not the type) refuses others, so the 422 can
# name the field and list the choices in the house style.
PresetName = Annotated[
    str, WithJsonSchema({"type": "string", "enum": sorted(PRESETS), "title": "Preset"})
]


class SearchSpace(BaseModel):
    """Per-parameter distributions; validates every value against the parameter's rule.

    `preset` names a set of defaults (`trainers.presets`) for the parameters not given.
    """

    model_config = ConfigDict(extra="forbid")

    preset: PresetName | None = Field(
        None,
        description="a named preset (GET /api/v1/presets) that fills every parameter not given",
    )
    weight_decay: ParamSpec | None = None
    l1: ParamSpec | None = None
    dropout: ParamSpec | None = None
    label_smoothing: ParamSpec | None = None
    batch_size: ParamSpec | None = None
    patience: ParamSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _expand_preset(cls, data: Any) -> Any:
        """Fill the parameters a document does not give (or gives as null) from its preset."""
        if not isinstance(data, dict) or not isinstance(data.get("preset"), str):
            return data  # no preset; a non-string one is reported by the field's own check
        try:
            preset = get_preset(data["preset"])
        except UnknownPresetError as exc:
            raise ValueError(f"preset: {exc}") from None
        given = {key: value for key, value in data.items() if value is not None}
        return {**preset.document(), **given}

    @model_validator(mode="after")
    def _check_rules(self) -> SearchSpace:
        errors: list[str] = []
        for name in PARAM_NAMES:
            spec = getattr(self, name)
            if spec is None:
                continue
            for key, value in _named_values(name, spec):
                message = _rule_error(name, key, value)
                if message is not None:
                    errors.append(message)
                    break
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def searched(self) -> list[str]:
        """Names of the parameters that are sampled (not fixed)."""
        return [n for n in PARAM_NAMES if isinstance(getattr(self, n), Range | Choices)]

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """The Optuna distribution of each searched parameter (what `suggest_*` will use)."""
        out: dict[str, optuna.distributions.BaseDistribution] = {}
        for name in self.searched():
            spec = getattr(self, name)
            if isinstance(spec, Choices):
                choices = [int(c) if name in INT_PARAMS else float(c) for c in spec.choices]
                out[name] = optuna.distributions.CategoricalDistribution(choices)
            elif name in INT_PARAMS:
                out[name] = optuna.distributions.IntDistribution(
                    int(spec.low), int(spec.high), log=spec.log, step=int(spec.step or 1)
                )
            else:
                out[name] = optuna.distributions.FloatDistribution(
                    float(spec.low), float(spec.high), log=spec.log, step=spec.step
                )
        return out

    def contains(self, name: str, value: Any) -> bool:
        """Whether `value` lies in the searched distribution of parameter `name`.

        Builds every distribution; to check many values, build them once with
        `distributions` and call `in_distribution`.
        """
        dist = self.distributions().get(name)
        return dist is not None and in_distribution(dist, value)

    def sample(self, trial: optuna.trial.BaseTrial) -> RegularizationParams:
        """Suggest every searched parameter on `trial`; fixed and omitted ones take their value."""
        values: dict[str, Any] = {}
        for name, dist in self.distributions().items():
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                values[name] = trial.suggest_categorical(name, list(dist.choices))
            elif isinstance(dist, optuna.distributions.IntDistribution):
                values[name] = trial.suggest_int(
                    name, dist.low, dist.high, step=dist.step, log=dist.log
                )
            else:
                assert isinstance(dist, optuna.distributions.FloatDistribution)
                values[name] = trial.suggest_float(
                    name, dist.low, dist.high, step=dist.step, log=dist.log
                )
        for name in PARAM_NAMES:
            spec = getattr(self, name)
            if isinstance(spec, Fixed):
                values[name] = int(spec.fixed) if name in INT_PARAMS else float(spec.fixed)
        return RegularizationParams(**values)


def in_distribution(dist: optuna.distributions.BaseDistribution, value: Any) -> bool:
    """Whether `value` is a finite number (or listed choice) that `dist` can produce."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return value in dist.choices
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if isinstance(dist, optuna.distributions.IntDistribution) and (
        abs(value) > MAX_ABS_INT or float(value) != int(value)
    ):
        return False
    assert isinstance(
        dist, optuna.distributions.IntDistribution | optuna.distributions.FloatDistribution
    )
    if not dist.low <= value <= dist.high:
        return False
    step = dist.step
    if step is None:
        return True
    steps = (value - dist.low) / step  # on the range's grid (Optuna's own test, 1e-8)
    return abs(steps - round(steps)) < 1e-8


Direction = Literal["minimize", "maximize"]
