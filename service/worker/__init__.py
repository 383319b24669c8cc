"""Workers: claim a trial slot, run one Optuna trial, record it; plus the stale-trial sweep."""

from service.worker.loop import WorkerOptions, run_worker

__all__ = ["WorkerOptions", "run_worker"]
