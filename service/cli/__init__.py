"""The `regtune` command line, one module per job.

- `client`: submit, status, best, cancel, presets (HTTP to the API, ``--format json``)
- `processes`: serve (API plus supervised local workers), worker, db upgrade
- `dashboard`: optuna-dashboard
- `service.auth.cli`: token create/list/revoke; `service.tune`: tune (the CI job contract)

Every failure is one ``error: ...`` line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

from service.auth.cli import token_app
from service.cli import client, dashboard, processes  # noqa: F401  (they register commands)
from service.cli._common import app
from service.tune import tune_command

__all__ = ["app"]

app.add_typer(token_app, name="token")
# the CI job contract lives in service.tune
app.command("tune")(tune_command)
