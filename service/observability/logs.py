"""Log output for the API and workers: plain text or one JSON object per line.

Records carry ``study_id``, ``trial_number`` and ``worker`` when known, either passed per call
(``log.info("...", extra={"study_id": 3})``) or bound for a whole block with `log_context`, which
uses contextvars so concurrent trials in threads or tasks never mix their ids.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["CONTEXT_FIELDS", "JsonFormatter", "configure_logging", "log_context"]

LogFormat = Literal["text", "json"]
CONTEXT_FIELDS = ("study_id", "trial_number", "worker")

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "regtune_log_context", default=None
)
# attributes every LogRecord has; anything else on a record came from `extra=`
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_HANDLER_MARK = "_regtune_handler"


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach `fields` (e.g. ``study_id=3, trial_number=7``) to every record logged inside."""
    current = _context.get() or {}
    token = _context.set({**current, **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the bound `log_context` fields onto each record (an `extra=` value wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, context fields, extras, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


_TEXT_LABELS = (("study_id", "study"), ("trial_number", "trial"), ("worker", "worker"))


class TextFormatter(logging.Formatter):
    """The usual one-line format, with ``[study=3 trial=7]`` when those ids are known."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(ctx)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f"{label}={getattr(record, key)}"
            for key, label in _TEXT_LABELS
            if getattr(record, key, None) is not None
        ]
        record.ctx = f" [{' '.join(parts)}]" if parts else ""
        return super().format(record)


def configure_logging(fmt: LogFormat = "text", level: int | str = logging.INFO) -> None:
    """Route all logging (regtune, uvicorn, optuna, lightning) to stderr in `fmt`.

    Idempotent: calling it again replaces the handler it installed before. Uvicorn's own loggers
    are made to propagate to the root logger so its access log is JSON too; run uvicorn with
    ``log_config=None`` so it does not install its own handlers afterwards.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"log_format must be 'text' or 'json', got {fmt!r}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root.addHandler(handler)
    root.setLevel(level)
    # one INFO line per Alembic plugin at every migration is noise, not news
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uv = logging.getLogger(name)
        uv.handlers.clear()
        uv.propagate = True
