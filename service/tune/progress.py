"""Progress while a study runs: a bar on a terminal, one plain line per finished trial in CI."""

from __future__ import annotations

import sys
from typing import Any, Protocol, TextIO

__all__ = ["BarReporter", "LineReporter", "Reporter", "make_reporter", "trial_line"]


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-" if value is None else str(value)


def trial_line(trial: dict[str, Any], study: dict[str, Any]) -> str:
    """``trial 7 complete value=0.3121 best=0.2980 [8/20]`` (grep-able, one per trial)."""
    p = study["progress"]
    text = f"trial {trial['number']} {trial['state']}"
    if trial["state"] == "fail":
        text += f" error={trial.get('error') or '?'}"
    else:
        text += f" value={_fmt(trial.get('value'))}"
        if trial["state"] == "pruned":
            text += f" epochs={trial.get('epochs_run')}"
    text += f" best={_fmt(study.get('best_value'))} [{p['finished']}/{p['n_trials']}]"
    return text


class Reporter(Protocol):
    def start(self, study: dict[str, Any], headline: str) -> None: ...
    def trial(self, trial: dict[str, Any], study: dict[str, Any]) -> None: ...
    def stop(self) -> None: ...


class LineReporter:
    """Plain lines on `stream` (stderr): what CI logs show."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, study: dict[str, Any], headline: str) -> None:
        self._print(headline)

    def trial(self, trial: dict[str, Any], study: dict[str, Any]) -> None:
        self._print(trial_line(trial, study))

    def stop(self) -> None:
        pass


class BarReporter:
    """A rich progress bar (finished trials of n_trials, best so far) on a terminal."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.task: Any = None

    def start(self, study: dict[str, Any], headline: str) -> None:
        self.console.print(headline, highlight=False, markup=False)
        self.progress.start()
        self.task = self.progress.add_task("trials", total=study["progress"]["n_trials"])

    def trial(self, trial: dict[str, Any], study: dict[str, Any]) -> None:
        if trial["state"] == "fail":
            self.progress.console.print(trial_line(trial, study), highlight=False, markup=False)
        self.progress.update(
            self.task,
            completed=study["progress"]["finished"],
            description=f"best {study['metric']}={_fmt(study.get('best_value'))}",
        )

    def stop(self) -> None:
        self.progress.stop()


def make_reporter(tty: bool | None = None) -> Reporter:
    """A bar when stderr is a terminal, plain lines otherwise."""
    if tty is None:
        tty = sys.stderr.isatty()
    return BarReporter() if tty else LineReporter()
