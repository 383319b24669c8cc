"""CPU threads: several local workers share the cores instead of oversubscribing them."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

from service.worker import WorkerOptions, run_worker
from service.worker.devices import TORCH_THREADS_ENV, share_cpu_threads
from tests.worker.conftest import insert_study, settings_for, tiny_spec

IDLE = WorkerOptions(exit_when_idle=True)


@pytest.fixture
def restore_torch_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_n_local_workers_share_the_cores() -> None:
    cores = os.cpu_count() or 1
    env = share_cpu_threads({"PATH": "/bin"}, 2)
    assert env[TORCH_THREADS_ENV] == str(max(1, cores // 2))
    assert env["PATH"] == "/bin"
    # more workers than cores: one thread each, never zero
    assert share_cpu_threads({}, 4 * cores)[TORCH_THREADS_ENV] == "1"


def test_one_worker_keeps_torchs_default_and_an_explicit_setting_wins() -> None:
    assert TORCH_THREADS_ENV not in share_cpu_threads({}, 1)
    assert share_cpu_threads({TORCH_THREADS_ENV: "3"}, 2)[TORCH_THREADS_ENV] == "3"


def test_the_worker_trains_with_the_configured_threads(
    sqlite_url: str, restore_torch_threads: None
) -> None:
    from service.migrations import upgrade

    upgrade(sqlite_url)
    insert_study(sqlite_url, tiny_spec(name="threads", n_trials=1))
    torch.set_num_threads(2)
    ran = run_worker(settings_for(sqlite_url, torch_threads=1), IDLE, handle_signals=False)
    assert ran == 1
    assert torch.get_num_threads() == 1
