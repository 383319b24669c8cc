"""Local mode: migrate an SQLite (or given) database, create the study, run N worker processes.

The study is created by the same service function the REST API calls, and the trials are run by
`regtune worker` processes (`service.worker`), so a local run behaves exactly like a server run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.db import make_engine, make_session_factory, unit_of_work
from service.errors import ConflictError, first_line
from service.models import TrialState
from service.spec import StudySpec
from service.studies import service as studies
from service.studies.optuna_storage import LazyOptunaStorage
from service.supervise import ChildSpec, Supervisor, worker_command
from service.tune.errors import ExitCode, TuneError
from service.worker.devices import share_cpu_threads

__all__ = ["LocalStudy", "database_url"]

FINISHED = [TrialState.complete, TrialState.pruned, TrialState.fail]
PAGE = 500
# workers poll quickly: a CI job should not idle between trials (overridable from the env)
WORKER_POLL_INTERVAL_S = "0.5"


def database_url(db: str | None, workdir: Path) -> str:
    """`--db`: a path to an SQLite file, or a full database URL; default a throwaway file."""
    if db is None:
        return f"sqlite:///{workdir / 'regtune.db'}"
    if "://" in db:
        return db
    return f"sqlite:///{Path(db).expanduser().resolve()}"


class LocalStudy:
    """A study on a local database plus the worker processes that run it (a `StudySource`)."""

    def __init__(self, url: str, workdir: Path) -> None:
        self.url = url
        self.workdir = workdir
        self.engine: Engine | None = None
        self.sessions: sessionmaker[Session] | None = None
        self.optuna = LazyOptunaStorage(url)
        self.study_id: int | None = None
        self.supervisor: Supervisor | None = None
        self.logs: list[Path] = []

    # --- setup ----------------------------------------------------------------------------

    def migrate(self) -> None:
        from service.migrations import upgrade
        from service.worker.optimization import quiet_optuna

        quiet_optuna()  # its INFO lines ("A new study created ...") are noise in a CI log

        try:
            upgrade(self.url)
        except Exception as exc:
            raise TuneError(
                ExitCode.USAGE,
                f"--db: cannot migrate the database: {exc.__class__.__name__}: {first_line(exc)}",
            ) from None
        self.engine = make_engine(self.url)
        self.sessions = make_session_factory(self.engine)

    def _sessions(self) -> sessionmaker[Session]:
        assert self.sessions is not None, "migrate() first"
        return self.sessions

    def create(self, spec: StudySpec) -> dict[str, Any]:
        """Create the study as POST /api/v1/studies does (its `enqueue` runs first)."""
        try:
            with unit_of_work(self._sessions()) as session:
                detail = studies.create_study(session, self.optuna, spec)
        except ConflictError as exc:
            raise TuneError(
                ExitCode.USAGE, f"{exc}: pick another name with --name, or use a fresh --db"
            ) from None
        self.study_id = detail.id
        return detail.model_dump(mode="json")

    def start_workers(self, n: int) -> None:
        """N `regtune worker --study ID` processes, logging into the work directory."""
        env = share_cpu_threads(dict(os.environ, REGTUNE_DATABASE_URL=self.url), n)
        env.setdefault("TZ", "UTC")
        env.setdefault("REGTUNE_WORKER_POLL_INTERVAL", WORKER_POLL_INTERVAL_S)
        cmd = worker_command("--study", str(self.study_id))
        self.logs = [self.workdir / f"worker-{i}.log" for i in range(n)]
        # no restarts: a CI run reports workers that die (`problem()`) instead of hiding them
        self.supervisor = Supervisor(
            [ChildSpec(cmd, env, f"worker {i}", log) for i, log in enumerate(self.logs)],
            restart=False,
        ).start()

    # --- StudySource ----------------------------------------------------------------------

    def study(self) -> dict[str, Any]:
        with unit_of_work(self._sessions()) as session:
            record = studies.resolve_study(session, str(self.study_id))
            return studies.study_detail(session, record).model_dump(mode="json")

    def finished_trials(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        with unit_of_work(self._sessions()) as session:
            record = studies.resolve_study(session, str(self.study_id))
            while True:
                page = studies.list_trials(session, record, FINISHED, "number", PAGE, len(items))
                items += [t.model_dump(mode="json") for t in page.items]
                if not page.items or len(items) >= page.total:
                    return items

    def best(self) -> dict[str, Any] | None:
        with unit_of_work(self._sessions()) as session:
            record = studies.resolve_study(session, str(self.study_id))
            try:
                return studies.best_result(session, record).model_dump(mode="json")
            except ConflictError:
                return None

    def cancel(self) -> None:
        try:
            with unit_of_work(self._sessions()) as session:
                record = studies.resolve_study(session, str(self.study_id))
                studies.cancel_study(session, record)
        except ConflictError:
            pass  # it ended meanwhile

    def problem(self) -> str | None:
        codes = self.supervisor.returncodes() if self.supervisor else []
        if codes and all(c is not None for c in codes):
            listed = ", ".join(str(c) for c in codes)
            return f"every worker process exited (exit codes {listed}) before the study ended"
        return None

    # --- teardown -------------------------------------------------------------------------

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of each worker's log (shown when the study failed)."""
        out: list[str] = []
        for log in self.logs:
            try:
                tail = log.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            if tail:
                out.append(f"--- {log.name} (last {len(tail)} lines) ---")
                out += tail
        return "\n".join(out)

    def close(self, timeout: float = 60.0) -> None:
        """SIGTERM the workers (a running trial is abandoned cleanly), wait, SIGKILL stragglers."""
        if self.supervisor is not None:
            self.supervisor.stop(timeout)
        self.optuna.dispose()
        if self.engine is not None:
            self.engine.dispose()
