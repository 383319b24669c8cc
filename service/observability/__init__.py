"""Observability: Prometheus `/metrics` for the API and structured logs for API and workers.

- `install(app)` adds ``GET /metrics`` (studies by status, trials by state, trial durations,
  epochs run, pruned ratio, worker heartbeat age, API request latency by route template).
- `configure_logging("text" | "json")` sets up log output; `log_context(study_id=..,
  trial_number=..)` tags every record logged inside a block.
"""

from service.observability.logs import JsonFormatter, configure_logging, log_context
from service.observability.metrics import install

__all__ = ["JsonFormatter", "configure_logging", "install", "log_context"]
