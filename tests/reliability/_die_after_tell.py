"""A worker that dies (SIGKILL) right after Optuna recorded its trial COMPLETE.

`python -c "import tests.reliability._die_after_tell as m; m.main()" worker ...` registers the
trainer `die-after-tell-mlp` (synthetic-mlp with a test split) and runs the real CLI. Once
training has ended, the worker's next write of epochs to SQL kills the process: that write is
the one `run_claimed_trial` makes after `study.optimize` returned, i.e. after Optuna's tell and
before regtune's own final write of the trial. Epochs after the first are still buffered then
(run it with REGTUNE_EPOCH_FLUSH_INTERVAL=60), so they never reach SQL either.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from pydantic import BaseModel

from trainers import registry
from trainers.builtin import SYNTHETIC_MLP
from trainers.registry import Trainer

NAME = "die-after-tell-mlp"
TINY = {"n_samples": 160, "n_features": 6, "n_informative": 3}
_training_done = threading.Event()


class _Config(BaseModel):
    max_epochs: int = 6


def _build(params: Any, config: _Config) -> tuple[Any, Any]:
    module, data = SYNTHETIC_MLP.build(
        params, SYNTHETIC_MLP.validate_config({**TINY, "max_epochs": config.max_epochs})
    )
    fit_end = module.on_fit_end

    def on_fit_end() -> None:
        fit_end()
        _training_done.set()

    module.on_fit_end = on_fit_end
    return module, data


TRAINER = Trainer(
    name=NAME,
    description="synthetic-mlp whose worker dies after Optuna's tell",
    config_model=_Config,
    build=_build,
    metrics=SYNTHETIC_MLP.metrics,
)


def register() -> None:
    """Make the trainer resolvable in this process (the test process validates specs)."""
    registry._cache = {**registry.available_trainers(), NAME: TRAINER}


def _arm() -> None:
    from service.worker.observer import DbTrialObserver

    flush = DbTrialObserver.flush

    def dying_flush(self: DbTrialObserver) -> None:
        if _training_done.is_set():
            os.kill(os.getpid(), signal.SIGKILL)
        flush(self)

    DbTrialObserver.flush = dying_flush  # type: ignore[method-assign]


def main() -> None:
    register()
    _arm()
    from service.cli import app

    app(prog_name="regtune")
