"""The REST API (FastAPI routers): every JSON route, `/healthz`, and the API docs pages.

The application is assembled in `service.app`; this package never imports `service.dashboard`.
"""

from service.api.routes import router

__all__ = ["router"]
