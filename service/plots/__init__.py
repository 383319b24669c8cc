"""Plot data of a study (Plotly figures) read from SQL: `GET /api/v1/studies/{study}/plots`.

`repository` holds the two lean reads, `figures` the pure figure builders, `service` assembles
them; the API route (`service.api.plots`) is the only caller, the dashboard draws what it gets.
"""

from service.plots.service import study_plots

__all__ = ["study_plots"]
