"""Example specs that prefill the dashboard's editor (YAML, comments kept)."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["DEFAULT", "names", "spec_text"]

DEFAULT = "quick"

# {name} is replaced by a fresh, unique-ish study name so the example submits as is
_EXAMPLES = {
    "quick": """\
# A tiny study: seconds per trial on a laptop CPU.
name: {name}
trainer: synthetic-mlp
trainer_config: {{max_epochs: 8, n_samples: 600, n_features: 10, n_informative: 5}}
search_space:
  weight_decay:    {{low: 1.0e-6, high: 1.0e-1, log: true}}
  dropout:         {{low: 0.0, high: 0.5}}
  label_smoothing: {{low: 0.0, high: 0.2}}
  batch_size:      {{choices: [32, 64, 128]}}
  patience:        {{fixed: 3}}
objective: {{metric: val_loss, direction: minimize}}
sampler: {{name: tpe, seed: 0}}
pruner: {{name: median}}
budget: {{n_trials: 10, timeout_s: 600}}
""",
    "digits": """\
# scikit-learn's 8x8 digits (1,797 images, 10 classes), an MLP classifier.
name: {name}
trainer: digits-mlp
trainer_config: {{max_epochs: 40}}
search_space:
  weight_decay:    {{low: 1.0e-6, high: 1.0e-1, log: true}}
  l1:              {{fixed: 0.0}}
  dropout:         {{low: 0.0, high: 0.7}}
  label_smoothing: {{low: 0.0, high: 0.3}}
  batch_size:      {{choices: [16, 32, 64, 128, 256]}}
  patience:        {{low: 2, high: 10}}
objective: {{metric: val_loss, direction: minimize}}
sampler: {{name: tpe, seed: 0}}
pruner: {{name: hyperband}}
budget: {{n_trials: 50, timeout_s: 3600}}
""",
}


def names() -> list[str]:
    return list(_EXAMPLES)


def spec_text(example: str) -> str:
    """The example's YAML with a name made from the example and the current UTC time."""
    template = _EXAMPLES.get(example, _EXAMPLES[DEFAULT])
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return template.format(name=f"{example if example in _EXAMPLES else DEFAULT}-{stamp}")
