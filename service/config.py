"""The one settings object (environment variables prefixed ``REGTUNE_``, or a ``.env`` file)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class Settings(BaseSettings):
    """Service configuration. Every field maps to ``REGTUNE_<FIELD>`` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="REGTUNE_", env_file=".env", extra="ignore")

    # One database for the service's tables and Optuna's RDBStorage.
    database_url: str = "sqlite:///./regtune.db"
    # Apply migrations when the server starts (default: yes on SQLite, no elsewhere).
    auto_migrate: bool | None = None

    # API server
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # "auto": auth on whenever the server binds a non-loopback address.
    auth: Literal["auto", "on", "off"] = "auto"
    max_body_bytes: int = Field(1_000_000, ge=1024)
    # Host names the API answers to (comma-separated; "*": any). Empty: the loopback names plus
    # the bound host. Refusing other Host headers defeats DNS rebinding; set it to the public
    # name(s) when serving on 0.0.0.0 behind a proxy or load balancer.
    allowed_hosts: str = ""
    log_format: Literal["text", "json"] = "text"

    # CLI client: where `regtune submit/status/best/cancel` send requests, and the token they use.
    server_url: str = "http://127.0.0.1:8000"
    token: SecretStr | None = None

    # Workers
    worker_poll_interval: float = Field(2.0, gt=0)
    heartbeat_interval: int = Field(10, ge=1)
    heartbeat_grace_period: int = Field(120, ge=2, le=300)
    max_retries: int = Field(2, ge=0)
    # A running trial's epochs reach SQL at most this often (seconds; 0: every epoch) and at its
    # end; the study's status (cancel) is checked at each write. Epochs longer than this are
    # written one by one.
    epoch_flush_interval: float = Field(1.0, ge=0, le=60)
    # torch intra-op threads per worker process (None: torch's default, every core). Parents that
    # start several local workers (serve --workers N, --trials-per-device N, tune --workers N)
    # share the cores out so the processes don't oversubscribe them.
    torch_threads: int | None = Field(None, ge=1)
    # The API process also sweeps stale trials every this many seconds (0: never), so a study
    # whose workers all died is not stuck until a worker comes back.
    sweep_interval: float = Field(30.0, ge=0)
    # Resumable trials: a running trial checkpoints under this directory (a path or an fsspec URL
    # every worker can reach, e.g. s3://bucket/regtune), and the retry of a trial whose worker
    # died continues from its last checkpoint. Unset: no checkpoints, a retry starts over.
    checkpoint_dir: str | None = None
    # at most one checkpoint per trial every this many seconds (0: after every epoch)
    checkpoint_interval: float = Field(60.0, ge=0)
    # Share of a GPU's memory one worker process (one trial) may allocate; set for you with
    # `--trials-per-device N` (1/N). Unset: no cap.
    gpu_memory_fraction: float | None = Field(None, gt=0, le=1)
    # POST /api/v1/studies answers 429 once this many studies are queued or running.
    max_queued_studies: int = Field(1000, ge=1)
    # A study whose trials fail this many times in a row ends `failed`.
    max_consecutive_failures: int = Field(5, ge=1)

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if not v.startswith(("sqlite", "postgresql")):
            raise ValueError("database_url must be a sqlite:// or postgresql:// URL")
        if v.startswith("postgresql+pg8000"):
            raise ValueError("pg8000 is not supported; use postgresql+psycopg://")
        return v

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def should_auto_migrate(self) -> bool:
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate

    def allowed_host_names(self) -> frozenset[str] | None:
        """The Host names requests may carry (lower case), or None when any is allowed."""
        names = {n.strip().lower().strip("[]") for n in self.allowed_hosts.split(",")} - {""}
        if "*" in names:
            return None
        if not names:
            bound = self.host.lower().strip("[]")
            # a wildcard bind is not a name anyone should reach the API by ("0.0.0.0 day")
            names = set(LOOPBACK_HOSTS) | ({bound} - {"0.0.0.0", "::"})
        return frozenset(names)

    def auth_enabled(self, host: str | None = None) -> bool:
        if self.auth != "auto":
            return self.auth == "on"
        return (host or self.host) not in LOOPBACK_HOSTS


@lru_cache
def get_settings() -> Settings:
    return Settings()
