"""regtune service: REST API, SQL persistence, workers, CLI and dashboard."""

__version__ = "0.1.0"
