"""The web dashboard: study list, study page with plots, spec editor; optuna-dashboard beside it."""

from service.dashboard.routes import router

__all__ = ["router"]
