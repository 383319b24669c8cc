"""Progress while a study runs: a bar on a terminal, one plain line per finished trial in CI."""

from __future__ import annotations

import sys
from typing import Any, Protocol, TextIO

from trainers.best import is_better, maximizes

__all__ = ["BarReporter", "LineReporter", "Reporter", "Tally", "make_reporter", "trial_line"]


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-" if value is None else str(value)


class Tally:
    """Finished trials in the order they were reported, and the best value among them.

    Counted here rather than read from the study, whose counters may already include trials
    finished after the one being reported.
    """

    def __init__(self) -> None:
        self.finished = 0
        self.best: float | None = None

    def add(self, trial: dict[str, Any], direction: str) -> None:
        if trial.get("role", "search") != "search":
            return  # a reference or confirmation run: not in n_trials, not a sampled best
        if trial["state"] in ("complete", "pruned"):
            self.finished += 1
        value = trial.get("value")
        if (
            trial["state"] == "complete"
            and value is not None
            and is_better(value, self.best, maximize=maximizes(direction))
        ):
            self.best = value


def trial_line(trial: dict[str, Any], tally: Tally, n_trials: int) -> str:
    """``trial 7 complete value=0.3121 best=0.2980 [8/20]`` (grep-able, one per trial)."""
    role = trial.get("role", "search")
    if role == "confirm":
        role = f"confirm of {trial.get('repeat_of')}"
    label = "" if role == "search" else f" ({role})"
    text = f"trial {trial['number']}{label} {trial['state']}"
    if trial["state"] == "fail":
        text += f" error={trial.get('error') or '?'}"
    else:
        text += f" value={_fmt(trial.get('value'))}"
        if trial["state"] == "pruned":
            text += f" epochs={trial.get('epochs_run')}"
    return text + f" best={_fmt(tally.best)} [{tally.finished}/{n_trials}]"


class Reporter(Protocol):
    def start(self, study: dict[str, Any], headline: str) -> None: ...
    def trial(self, trial: dict[str, Any], study: dict[str, Any]) -> None: ...
    def poll(self, study: dict[str, Any]) -> None: ...
    def stop(self) -> None: ...


class LineReporter:
    """Plain lines on `stream` (stderr): what CI logs show."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tally = Tally()

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, study: dict[str, Any], headline: str) -> None:
        self._print(headline)

    def trial(self, trial: dict[str, Any], study: dict[str, Any]) -> None:
        self.tally.add(trial, study["direction"])
        self._print(trial_line(trial, self.tally, study["progress"]["n_trials"]))

    def poll(self, study: dict[str, Any]) -> None:
        pass  # a line per finished trial, nothing in between

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
        self.extra_task: Any = None  # the reference and confirmation runs, once there are some
        self.tally = Tally()

    def start(self, study: dict[str, Any], headline: str) -> None:
        self.console.print(headline, highlight=False, markup=False)
        self.progress.start()
        self.task = self.progress.add_task("trials", total=study["progress"]["n_trials"])

    def trial(self, trial: dict[str, Any], study: dict[str, Any]) -> None:
        self.tally.add(trial, study["direction"])
        n_trials = study["progress"]["n_trials"]
        if trial["state"] == "fail":
            line = trial_line(trial, self.tally, n_trials)
            self.progress.console.print(line, highlight=False, markup=False)
        self.progress.update(
            self.task,
            completed=self.tally.finished,
            description=f"best {study['metric']}={_fmt(self.tally.best)}",
        )
        self.poll(study)

    def poll(self, study: dict[str, Any]) -> None:
        # runs beyond n_trials get a bar of their own once planned: without it a finished
        # search bar sat still while `regtune tune`'s confirmation repeats trained
        progress = study["progress"]
        extra = int(progress.get("extra") or 0)
        if extra:
            if self.extra_task is None:
                self.extra_task = self.progress.add_task("extra runs", total=extra)
            done = int(progress.get("extra_finished") or 0)
            self.progress.update(self.extra_task, total=extra, completed=done)

    def stop(self) -> None:
        self.progress.stop()


def make_reporter(tty: bool | None = None) -> Reporter:
    """A bar when stderr is a terminal, plain lines otherwise."""
    if tty is None:
        tty = sys.stderr.isatty()
    return BarReporter() if tty else LineReporter()
