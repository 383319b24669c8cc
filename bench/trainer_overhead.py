"""Framework overhead of regtune's Lightning trainer against a plain torch loop.

Both sides train the same digits MLP (64-256-256-10, AdamW, batch 64) on the same in-memory
split for the same number of epochs and do the same work per epoch:

- shuffle the training rows (one seeded permutation) and step through slices of 64 rows,
  with label smoothing and L1 in the loss and decoupled weight decay in AdamW;
- validate: unsmoothed loss, accuracy and 15-bin ECE on the validation split, loss and accuracy
  on the whole training split in eval mode (for ``gap``), the near-zero weight fraction, every
  metric read back as a Python float;
- keep a copy of the best epoch's weights; at the end evaluate them on the test split.

(a) is that loop written by hand, over a per-batch loader; (b) is ``trainers.run_trial`` on the
``digits-mlp`` trainer (Lightning Trainer, EarlyStopping with a patience that never triggers, the
per-epoch Optuna callback), whose data module hands over each shuffled epoch as one item that the
module cuts into the same 64-row batches. Both start from the same seeds, so they train
identically: the script stops if their best ``val_loss`` differ. Runs alternate a, b, a, b, ...
so drift in machine load hits both; the last line printed is the median of the per-pair ratios
b/a: ``ratio: 1.07``.

    python bench/trainer_overhead.py            # 40 epochs x 7 pairs
    python bench/trainer_overhead.py --short    # 20 epochs x 3 pairs (make bench)
    python bench/trainer_overhead.py --threads 0   # torch's default thread count

Both sides run with one torch thread by default: the ratio is about framework overhead, and on a
machine shared with other processes two spinning OpenMP threads per process make timings swing
by several times. The CPU-time ratio is printed too (less sensitive to other processes).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import optuna
import torch
import torch.nn.functional as F

from trainers import ObjectiveSpec, RegularizationParams, SearchSpace, run_trial
from trainers.builtin import DigitsConfig, build_mlp
from trainers.data import SliceBatches
from trainers.metrics import ClassificationAccumulator
from trainers.module import near_zero_fraction

PARAMS = RegularizationParams(
    weight_decay=1e-4, l1=1e-5, dropout=0.1, label_smoothing=0.1, batch_size=64, patience=10_000
)


def _config(epochs: int) -> DigitsConfig:
    return DigitsConfig(max_epochs=epochs, hidden_sizes=(256, 256), seed=0)


def raw_loop(epochs: int) -> float:
    """(a) the same work in plain torch; returns the best val_loss."""
    module, dm = build_mlp("digits", PARAMS, _config(epochs))
    # The plain per-batch loader: one seeded permutation per epoch, then slices of 64 rows (the
    # same generator and permutations as the trainer's whole-epoch loader).
    batches = SliceBatches(dm.splits.x_train, dm.splits.y_train, PARAMS.batch_size, shuffle=True)
    net = module.backbone
    optimizer = module.configure_optimizers()
    weights = module._weights
    trial = optuna.trial.FixedTrial({})
    best, best_state = float("inf"), None
    for epoch in range(epochs):
        net.train()
        train_sum, train_count = torch.zeros(()), 0
        for x, y in batches:
            loss = F.cross_entropy(net(x), y, label_smoothing=PARAMS.label_smoothing)
            train_sum += loss.detach() * len(y)
            train_count += len(y)
            loss = loss + PARAMS.l1 * torch.stack([w.abs().sum() for w in weights]).sum()
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
        net.eval()
        with torch.no_grad():
            val = ClassificationAccumulator()
            for x, y in dm.val_dataloader():
                val.update(net(x), y)
            train = ClassificationAccumulator()
            for x, y in dm.train_eval_batches():
                train.update(net(x), y)
            metrics = val.compute("val")
            metrics["train_loss"] = train_sum / train_count
            metrics["train_eval_loss"] = train.loss()
            metrics["train_acc"] = train.accuracy()
            metrics["gap"] = metrics["val_loss"] - metrics["train_eval_loss"]
            metrics["near_zero_frac"] = near_zero_fraction(weights)
        values = {k: float(v) for k, v in metrics.items()}
        if values["val_loss"] < best:
            best = values["val_loss"]
            best_state = {k: t.detach().clone() for k, t in module.state_dict().items()}
        trial.report(values["val_loss"], epoch)
    assert best_state is not None
    module.load_state_dict(best_state)
    net.eval()
    with torch.no_grad():
        test = ClassificationAccumulator()
        for x, y in dm.test_dataloader():
            test.update(net(x), y)
        {k: float(v) for k, v in test.compute("test").items()}
    return best


def lightning_run(epochs: int) -> float:
    """(b) regtune's objective path; returns the best val_loss."""
    fixed = {name: {"fixed": value} for name, value in PARAMS.model_dump().items()}
    spec = ObjectiveSpec(
        trainer="digits-mlp",
        trainer_config=_config(epochs).model_dump(),
        search_space=SearchSpace.model_validate(fixed),
    )
    outcome = run_trial(optuna.trial.FixedTrial({}), spec)
    assert outcome.epochs_run == epochs, outcome.epochs_run
    return outcome.value


def _timed(fn: Callable[[int], float], epochs: int) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, best val_loss)."""
    start, cpu = time.perf_counter(), time.process_time()
    value = fn(epochs)
    return time.perf_counter() - start, time.process_time() - cpu, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="fewer epochs and repeats")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    epochs = args.epochs or (20 if args.short else 40)
    repeats = args.repeats or (3 if args.short else 7)
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    # Warm-up (imports, allocator, first-call costs) on both sides, not timed.
    raw_loop(2)
    lightning_run(2)
    ratios, cpu_ratios = [], []
    for i in range(repeats):
        ta, ca, va = _timed(raw_loop, epochs)
        tb, cb, vb = _timed(lightning_run, epochs)
        if va != vb:  # same data, shuffles, init and dropout masks: identical training
            raise SystemExit(f"the two sides trained differently: best val_loss {va} vs {vb}")
        ratios.append(tb / ta)
        cpu_ratios.append(cb / ca)
        print(
            f"pair {i + 1}/{repeats}: raw {ta:.3f}s  lightning {tb:.3f}s  b/a {tb / ta:.3f}  "
            f"cpu b/a {cb / ca:.3f}  (best val_loss raw {va:.4f}, lightning {vb:.4f})",
            flush=True,
        )
    print(
        f"epochs {epochs}, pairs {repeats}, torch threads {torch.get_num_threads()}, "
        f"median cpu-time ratio {statistics.median(cpu_ratios):.2f}"
    )
    print(f"ratio: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
