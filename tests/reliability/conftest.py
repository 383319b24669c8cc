"""Reliability fixtures: the test-only trainers registered in the test process too."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from trainers import registry
from trainers.registry import Trainer

from .trainers import TEST_TRAINERS


@pytest.fixture
def test_trainers(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Trainer]]:
    """Registers the test trainers here (specs validate); workers get them via `regtune(...)`."""
    monkeypatch.setattr(registry, "_cache", {**registry.available_trainers(), **TEST_TRAINERS})
    yield TEST_TRAINERS
