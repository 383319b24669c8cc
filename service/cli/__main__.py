"""`python -m service.cli ...` is `regtune ...` (how local worker processes are started)."""

from service.cli import app

app(prog_name="regtune")
