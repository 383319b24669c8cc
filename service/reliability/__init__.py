"""Reliability pieces that run in the API process (the periodic stale-trial sweeper)."""

from service.reliability.sweeper import StaleTrialSweeper

__all__ = ["StaleTrialSweeper"]
