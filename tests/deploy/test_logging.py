"""Structured logs: one JSON object per line, with the study and trial ids when known."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from service.observability import configure_logging, log_context
from service.observability.logs import _HANDLER_MARK


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(handler)
    root.setLevel(level)


def lines(captured: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in captured.splitlines() if line.startswith("{")]


def test_json_lines_carry_context_and_extra_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json")
    log = logging.getLogger("regtune.worker")
    with log_context(study_id=3, worker="gpu-a:12"):
        log.info("claimed a slot")
        with log_context(trial_number=7):
            log.warning("trial %s pruned at epoch %d", 7, 4)
    log.info("idle", extra={"study_id": 9})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("trial failed")

    records = lines(capsys.readouterr().err)
    assert [r["message"] for r in records] == [
        "claimed a slot",
        "trial 7 pruned at epoch 4",
        "idle",
        "trial failed",
    ]
    first, second, third, fourth = records
    assert first["study_id"] == 3 and first["worker"] == "gpu-a:12" and "trial_number" not in first
    assert second["study_id"] == 3 and second["trial_number"] == 7
    assert second["level"] == "WARNING" and second["logger"] == "regtune.worker"
    assert third["study_id"] == 9 and "worker" not in third  # context ended with its block
    assert "RuntimeError: boom" in str(fourth["exc_info"])


def test_text_format_shows_ids_and_reconfiguring_does_not_duplicate_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json")
    configure_logging("text")
    with log_context(study_id=5, trial_number=2):
        logging.getLogger("regtune.api").info("hello")
    err = capsys.readouterr().err.splitlines()
    hello = [line for line in err if line.endswith("hello")]
    assert len(hello) == 1
    assert "[study=5 trial=2]" in hello[0]


def test_unknown_format_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="log_format must be 'text' or 'json'"):
        configure_logging("xml")  # type: ignore[arg-type]
