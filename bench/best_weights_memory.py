"""Peak RSS of one digits-mlp trial with and without the copy of the best epoch's weights.

The objective keeps the best epoch's weights as a copy in CPU memory (`trainers.objective.
host_copy`), never on the accelerator. This measures what that copy costs in host memory: each
arm runs one trial in a fresh process (so peak RSS is that trial's) on a wide digits MLP, and
the baseline arm replaces the copy by a reference to the live weights (no extra memory; the
test split is then scored with the last epoch's weights, which does not matter here).

    python bench/best_weights_memory.py                 # hidden 2048x2048 (~4.3 M parameters)
    python bench/best_weights_memory.py --hidden 256    # the default digits MLP

Prints one line per arm and a ratio line against the baseline measured in the same run:
``ratio (copy / no copy): 1.04``. No assertion: it is a measurement.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _child(arm: str, hidden: int, epochs: int) -> None:
    import optuna
    import torch

    import trainers.objective as objective
    from trainers import ObjectiveSpec, SearchSpace, run_trial

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if arm == "no-copy":
        objective.host_copy = lambda state: dict(state)
    spec = ObjectiveSpec(
        trainer="digits-mlp",
        trainer_config={"max_epochs": epochs, "hidden_sizes": [hidden, hidden]},
        search_space=SearchSpace.model_validate({"patience": {"fixed": epochs}}),
    )
    outcome = run_trial(optuna.create_study().ask(), spec)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"arm": arm, "peak_mib": peak_kib / 1024, "best": outcome.best_epoch}))


def _run(arm: str, hidden: int, epochs: int) -> float:
    out = (
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                arm,
                "--hidden",
                str(hidden),
                "--epochs",
                str(epochs),
            ],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    return float(json.loads(out)["peak_mib"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=2048, help="width of both hidden layers")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--child", choices=("copy", "no-copy"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.hidden, args.epochs)
        return
    weights_mib = (64 * args.hidden + args.hidden * args.hidden + args.hidden * 10) * 4 / 2**20
    print(f"digits-mlp 64-{args.hidden}-{args.hidden}-10: weights {weights_mib:.1f} MiB (fp32)")
    base = _run("no-copy", args.hidden, args.epochs)
    copy = _run("copy", args.hidden, args.epochs)
    print(f"peak RSS, no copy (baseline): {base:.1f} MiB")
    print(f"peak RSS, best weights copied to CPU: {copy:.1f} MiB (+{copy - base:.1f} MiB)")
    print(f"ratio (copy / no copy): {copy / base:.2f}")


if __name__ == "__main__":
    main()
