"""Pruning with several objectives: what cutting trials on the first objective would cost.

Optuna does not prune multi-objective studies; regtune could still prune on the first
objective alone. This measures what that rule would throw away: a study with objectives
``val_loss`` and ``val_ece`` (both minimized) on ``digits-mlp`` with 40 % label noise (the
search-efficiency task, ``max_epochs`` 20) runs ``--trials`` random-search trials without
pruning (``trainers.run_trial``; each trial's best epoch chosen on val_loss, as the worker does),
then replays the same trials, in order, through regtune's default pruner (the ``auto`` percentile
pruner ``service.worker.optimization.build_pruner`` builds) on their val_loss curves: the epoch
where each trial would have been pruned, had the study pruned on its first objective.

Reported per seed: the Pareto set of the unpruned study (val_loss, val_ece at the best epoch),
how many of its members that rule would have pruned, and the share of epochs it would have
saved. Pareto members pruned are trade-offs a user would never see.

    python bench/multiobjective_pruning.py                 # 3 seeds, 30 trials
    python bench/multiobjective_pruning.py --seeds 1 --trials 12
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

import _common
import optuna
from search_efficiency import SEARCH_SPACE, TASKS

from service.spec import StudySpec
from service.studies.pareto import pareto_indices
from service.worker.optimization import build_pruner
from trainers import run_trial


@dataclass
class Ran:
    curve: list[float]  # val_loss per epoch (what a first-objective pruner sees)
    values: tuple[float, float]  # (val_loss, val_ece) at the best epoch


def _spec(seed: int) -> StudySpec:
    task = TASKS["digits-noisy"]
    return StudySpec.model_validate(
        {
            "name": f"mo-prune-{seed}",
            "trainer": task["trainer"],
            "trainer_config": {**task["trainer_config"], "max_epochs": 20},
            "search_space": SEARCH_SPACE,
            "sampler": {"name": "random", "seed": seed},
        }
    )


def run_study(seed: int, n_trials: int) -> list[Ran]:
    """`n_trials` random-search trials, never pruned; each trial's curve and objective values."""
    spec = _spec(seed)
    target = dataclasses.replace(spec.objective_spec(), torch_threads=1)
    study = optuna.create_study(
        sampler=optuna.samplers.RandomSampler(seed=seed), pruner=optuna.pruners.NopPruner()
    )
    ran: list[Ran] = []

    def objective(trial: optuna.Trial) -> float:
        outcome = run_trial(trial, target)
        curve = [record.metrics["val_loss"] for record in outcome.history]
        metrics = outcome.best_metrics
        ran.append(Ran(curve, (metrics["val_loss"], metrics["val_ece"])))
        return outcome.value

    study.optimize(objective, n_trials=n_trials)
    return ran


def replay_pruned(seed: int, ran: list[Ran]) -> list[int | None]:
    """The epoch at which regtune's default pruner cuts each trial on val_loss (None: never)."""
    spec = _spec(seed)
    study = optuna.create_study(pruner=build_pruner(spec.pruner, spec))
    cut: list[int | None] = []
    for trial_run in ran:
        trial = study.ask()
        pruned_at = None
        for epoch, value in enumerate(trial_run.curve):
            trial.report(value, epoch)
            if trial.should_prune():
                pruned_at = epoch
                break
        if pruned_at is None:
            study.tell(trial, min(trial_run.curve))
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        cut.append(pruned_at)
    return cut


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=30)
    args = parser.parse_args()
    _common.quiet()
    rows = []
    lost_total = front_total = 0
    for seed in range(args.seeds):
        ran = run_study(seed, args.trials)
        front = set(pareto_indices([r.values for r in ran], [False, False]))
        cut = replay_pruned(seed, ran)
        epochs = sum(len(r.curve) for r in ran)
        kept = sum(len(r.curve) if c is None else c + 1 for r, c in zip(ran, cut, strict=True))
        lost = sorted(i for i in front if cut[i] is not None)
        lost_total += len(lost)
        front_total += len(front)
        rows.append(
            [
                seed,
                len(front),
                len(lost),
                sum(c is not None for c in cut),
                f"{1 - kept / epochs:.0%}",
                ", ".join(str(i) for i in lost) or "-",
            ]
        )
    headers = [
        "seed",
        "Pareto set",
        "of it pruned",
        "trials pruned",
        "epochs saved",
        "pruned members",
    ]
    print(_common.table(headers, rows))
    print(
        f"pruning on val_loss would have cut {lost_total} of {front_total} Pareto members "
        f"({args.seeds} seeds x {args.trials} trials)"
    )


if __name__ == "__main__":
    main()
