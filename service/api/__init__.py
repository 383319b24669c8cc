"""The REST API (FastAPI). `create_app` builds the application."""

from service.api.app import create_app

__all__ = ["create_app"]
