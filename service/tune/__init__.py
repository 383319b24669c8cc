"""`regtune tune`: the CI job contract (run or submit a study, write the best, gate on it)."""

from service.tune.command import TuneOptions, run_tune, tune_command
from service.tune.errors import ExitCode, TuneError
from service.tune.output import SCHEMA_VERSION, output_schema

__all__ = [
    "SCHEMA_VERSION",
    "ExitCode",
    "TuneError",
    "TuneOptions",
    "output_schema",
    "run_tune",
    "tune_command",
]
