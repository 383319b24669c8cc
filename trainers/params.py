"""The regularization settings one trial trains with."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RegularizationParams(BaseModel):
    """One point of the regularization search space.

    Attributes:
        weight_decay: decoupled weight decay λ (AdamW), ≥ 0.
        l1: L1 penalty λ₁·Σ|w| added to the training loss over weights (not biases or norm
            parameters), ≥ 0.
        dropout: dropout probability p in [0, 1).
        label_smoothing: label smoothing ε in [0, 1) for the training loss.
        batch_size: training batch size, ≥ 1.
        patience: early-stopping patience in epochs (Lightning EarlyStopping's rule), ≥ 0.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    weight_decay: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    l1: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    batch_size: int = Field(64, ge=1)
    patience: int = Field(5, ge=0)


# The one list of parameter names, in this order, everywhere (trial columns, API schema, plots):
# derived from the model above.
PARAM_NAMES: tuple[str, ...] = tuple(RegularizationParams.model_fields)
