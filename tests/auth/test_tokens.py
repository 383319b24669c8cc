"""Token service on SQLite and PostgreSQL: hashed storage, scopes, revocation, last use."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from service.auth import TOKEN_PREFIX, TokenScope, authenticate, create_token, revoke_token
from service.auth.service import LAST_USED_RESOLUTION, list_tokens
from service.db import make_engine, make_session_factory, unit_of_work
from service.errors import ConflictError, ForbiddenError, NotFoundError, UnauthorizedError
from service.models import ApiToken, utcnow


@pytest.fixture
def sessions(migrated_db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(migrated_db_url)
    yield make_session_factory(engine)
    engine.dispose()


def test_only_the_sha256_of_the_secret_is_stored(sessions: sessionmaker[Session]) -> None:
    with unit_of_work(sessions) as s:
        info, secret = create_token(s, "ci", TokenScope.write)
    assert secret.startswith(TOKEN_PREFIX) and len(secret) >= len(TOKEN_PREFIX) + 43
    with unit_of_work(sessions) as s:
        (row,) = s.scalars(select(ApiToken)).all()
        stored = [str(v) for v in (row.name, row.scope, row.token_hash)]
    assert secret not in stored
    assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert info.scope == TokenScope.write and info.last_used_at is None


def test_scopes_read_reads_write_writes(sessions: sessionmaker[Session]) -> None:
    with unit_of_work(sessions) as s:
        _, reader = create_token(s, "reader", TokenScope.read)
        _, writer = create_token(s, "writer", TokenScope.write)
    with unit_of_work(sessions) as s:
        assert authenticate(s, reader, TokenScope.read).name == "reader"
        assert authenticate(s, writer, TokenScope.read).name == "writer"
        assert authenticate(s, writer, TokenScope.write).name == "writer"
        with pytest.raises(ForbiddenError, match="'reader' has scope 'read'"):
            authenticate(s, reader, TokenScope.write)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (None, "authentication required"),
        ("", "authentication required"),
        ("hunter2", "start with"),
        (TOKEN_PREFIX + "x" * 43, "no such token"),
    ],
)
def test_missing_or_unknown_tokens_are_refused(
    sessions: sessionmaker[Session], secret: str | None, message: str
) -> None:
    with unit_of_work(sessions) as s, pytest.raises(UnauthorizedError, match=message):
        authenticate(s, secret, TokenScope.read)


def test_revoked_tokens_are_refused(sessions: sessionmaker[Session]) -> None:
    with unit_of_work(sessions) as s:
        _, secret = create_token(s, "old", TokenScope.write)
    with unit_of_work(sessions) as s:
        assert revoke_token(s, "old").revoked_at is not None
    with unit_of_work(sessions) as s, pytest.raises(UnauthorizedError, match="revoked"):
        authenticate(s, secret, TokenScope.read)
    with unit_of_work(sessions) as s, pytest.raises(NotFoundError):
        revoke_token(s, "never-existed")


def test_names_are_unique_and_validated(sessions: sessionmaker[Session]) -> None:
    with unit_of_work(sessions) as s:
        create_token(s, "ci", TokenScope.read)
    with unit_of_work(sessions) as s, pytest.raises(ConflictError, match="already exists"):
        create_token(s, "ci", TokenScope.write)
    for bad in ("", "-x", "a b", "x" * 65, "../etc", "ci\n"):  # "ci\n": listed as "ci"
        with unit_of_work(sessions) as s, pytest.raises(ValueError, match="name must be"):
            create_token(s, bad, TokenScope.read)


def test_last_used_is_recorded_at_most_once_per_resolution(sessions: sessionmaker[Session]) -> None:
    with unit_of_work(sessions) as s:
        _, secret = create_token(s, "ci", TokenScope.read)
    with unit_of_work(sessions) as s:
        authenticate(s, secret, TokenScope.read)
    with unit_of_work(sessions) as s:
        (first,) = [t.last_used_at for t in list_tokens(s)]
    assert first is not None
    with unit_of_work(sessions) as s:
        authenticate(s, secret, TokenScope.read)
    with unit_of_work(sessions) as s:
        assert [t.last_used_at for t in list_tokens(s)] == [first]  # throttled: no new write
        # a minute later the next use is recorded again
        old = utcnow() - LAST_USED_RESOLUTION - timedelta(seconds=1)
        s.execute(update(ApiToken).values(last_used_at=old))
    with unit_of_work(sessions) as s:
        authenticate(s, secret, TokenScope.read)
    with unit_of_work(sessions) as s:
        (latest,) = [t.last_used_at for t in list_tokens(s)]
    assert latest is not None and latest > old
