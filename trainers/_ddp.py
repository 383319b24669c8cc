"""Multi-device trials: Lightning DDP over ranks that the trial's own process starts.

Rank 0 is the worker process running `run_trial`: it alone samples, reports to Optuna and talks to
the caller's observer. Ranks 1..n-1 are `python -m trainers._ddp` processes that build the same
module from the same trainer, config and parameters and join the same process group; Lightning
sees them as processes created externally (``LOCAL_RANK`` is set) and launches nothing itself.

After every validation epoch rank 0 broadcasts one decision, which every rank applies at that same
epoch: go on, stop (patience), or end (pruned, cancelled, failed). No rank waits on a collective
that the others never reach. Rank 0 stops its helper ranks when its fit ends, whatever the ending.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# what rank 0 broadcasts after each validation epoch
GO_ON, STOP, END = "go_on", "stop", "end"

_RANK_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK", "RANK")
_STOP_WAIT_S = 10.0


class RankStopped(Exception):
    """A helper rank ends its fit because rank 0 ended the trial (pruned, cancelled, failed)."""


def is_distributed(trainer: Any) -> bool:
    return int(getattr(trainer, "world_size", 1)) > 1


def broadcast(trainer: Any, decision: str | None) -> str:
    """Rank 0's `decision` on every rank (helpers pass None)."""
    return str(trainer.strategy.broadcast(decision, src=0))


class HelperTracker:
    """The epoch hook of ranks 1..n-1: apply rank 0's decision, nothing else."""

    def on_epoch(self, trainer: Any, module: Any, stale: frozenset[str] = frozenset()) -> None:
        decision = broadcast(trainer, None)
        if decision == STOP:
            trainer.should_stop = True
        elif decision == END:
            raise RankStopped("rank 0 ended the trial")

    def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # a helper rank must not outlive a worker that was SIGKILLed mid-trial (Linux only)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@contextmanager
def ranks(n: int, payload: dict[str, Any]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """This process as rank 0 of `n`, with ranks 1..n-1 started from `payload` (trainer name,
    config, parameters, Trainer options); everything undone on exit, helpers stopped."""
    saved = {k: os.environ.get(k) for k in _RANK_ENV}
    common = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": str(n),
        "NODE_RANK": "0",
    }
    helpers: list[subprocess.Popen[bytes]] = []
    try:
        for rank in range(1, n):
            env = {**os.environ, **common, "LOCAL_RANK": str(rank), "RANK": str(rank)}
            helpers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "trainers._ddp", json.dumps(payload)],
                    env=env,
                    preexec_fn=_die_with_parent,
                )
            )
        os.environ.update({**common, "LOCAL_RANK": "0", "RANK": "0"})
        yield helpers
    finally:
        _leave_group()
        for helper in helpers:
            try:
                helper.wait(_STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                helper.kill()
                helper.wait()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _leave_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main(argv: list[str]) -> int:
    """A helper rank: build the payload's module and fit it with rank 0's decisions."""
    from trainers import _lightning
    from trainers.params import RegularizationParams
    from trainers.registry import get_trainer

    payload = json.loads(argv[0])
    definition = get_trainer(payload["trainer"])
    config = definition.validate_config(payload["trainer_config"])
    if payload.get("torch_threads"):
        import torch

        torch.set_num_threads(int(payload["torch_threads"]))
    params = RegularizationParams.model_validate(payload["params"])
    seed = payload.get("seed")
    if seed is not None:
        from trainers.objective import seed_training

        seed_training(int(seed))
    module, datamodule = definition.build_seeded(params, config, seed)
    if isinstance(getattr(module, "insight_every", None), int):
        module.insight_every = int(payload.get("insight_every", 1))
    ns = _lightning.namespace_of(module, datamodule)
    _lightning.quiet()
    trainer = ns.Trainer(
        callbacks=[_lightning.epoch_callback(ns, HelperTracker())], **payload["trainer_kwargs"]
    )
    try:
        trainer.fit(module, datamodule=datamodule)
    except RankStopped:
        pass
    finally:
        _leave_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
