"""Does one training seed give one result on a GPU? (issue 19 item 1: seeds reproducible)

Trains each model twice with the same `train_seed` and once with another, on the accelerator
given, and prints how far the two same-seed runs' per-epoch objective values are apart. Models:
the built-in `synthetic-mlp` and the test plugin `insight-cnn` (a CNN written the way a user
writes one: it seeds nothing itself, so regtune's `seed_everything` is all that seeds it). Each
runs in PyTorch's default mode and with `torch.use_deterministic_algorithms(True)` (cuDNN and
cuBLAS restricted to deterministic kernels; `CUBLAS_WORKSPACE_CONFIG` set as PyTorch asks).

    python bench/probes/gpu_seed.py              # on a CUDA host
    python bench/probes/gpu_seed.py --cpu        # the same on CPU (identical runs expected)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
for path in (REPO, REPO / "tests" / "plugin_pkg"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def _specs(accelerator: str) -> dict[str, Any]:
    from trainers import ObjectiveSpec, SearchSpace

    def space(**fixed: Any) -> SearchSpace:
        return SearchSpace.model_validate({k: {"fixed": v} for k, v in fixed.items()})

    return {
        "synthetic-mlp": ObjectiveSpec(
            trainer="synthetic-mlp",
            trainer_config={"n_samples": 4000, "n_features": 40, "max_epochs": 8},
            search_space=space(dropout=0.3, weight_decay=1e-3, batch_size=64, patience=100),
            accelerator=accelerator,
        ),
        "insight-cnn": ObjectiveSpec(
            trainer="insight-cnn",
            trainer_config={"max_epochs": 6, "n_train": 1000},
            search_space=space(dropout=0.3, weight_decay=1e-3, batch_size=64, patience=100),
            metric="val_nll_custom",
            accelerator=accelerator,
        ),
    }


def _curve(spec: Any, seed: int) -> list[float]:
    import optuna

    from trainers import run_trial

    trial = optuna.trial.FixedTrial({})
    trial.set_user_attr("train_seed", seed)
    outcome = run_trial(trial, spec)
    return [float(epoch.metrics[spec.metric]) for epoch in outcome.history]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true")
    args = parser.parse_args()
    import optuna
    import torch
    from regtune_test_plugin.insight_cnn import TRAINER

    from trainers import registry

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    registry._cache = {**registry.available_trainers(), "insight-cnn": TRAINER}
    accelerator = "cpu" if args.cpu else "gpu"
    print(f"torch {torch.__version__}, accelerator {accelerator}")
    for mode in ("default", "deterministic"):
        torch.use_deterministic_algorithms(mode == "deterministic")
        for name, spec in _specs(accelerator).items():
            first, again, other = _curve(spec, 11), _curve(spec, 11), _curve(spec, 12)
            same = max(abs(a - b) for a, b in zip(first, again, strict=True))
            between = max(abs(a - b) for a, b in zip(first, other, strict=False))
            print(
                f"{mode:13} {name:13} same seed: largest difference {same:.2e} over "
                f"{len(first)} epochs ({'identical' if same == 0 else 'differs'}); "
                f"another seed: {between:.2e}"
            )


if __name__ == "__main__":
    main()
