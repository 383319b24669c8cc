"""Bearer tokens: create (the secret is shown once), list, revoke, and authenticate a request.

Scopes: a `read` token may call every read endpoint (GET); a `write` token may call every
endpoint. Nothing here commits: the caller's unit of work does.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.auth import repository
from service.auth._hashing import TOKEN_PREFIX, hash_secret, new_secret, same_hash
from service.errors import ConflictError, ForbiddenError, NotFoundError, UnauthorizedError
from service.models import ApiToken, utcnow

__all__ = [
    "LAST_USED_RESOLUTION",
    "NAME_PATTERN",
    "TokenInfo",
    "TokenScope",
    "authenticate",
    "create_token",
    "list_tokens",
    "revoke_token",
]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)
# last_used_at is written at most this often per token, so reads are not one write each
LAST_USED_RESOLUTION = timedelta(seconds=60)


class TokenScope(enum.StrEnum):
    read = "read"
    write = "write"

    def allows(self, needed: TokenScope) -> bool:
        return self == TokenScope.write or needed == TokenScope.read


@dataclass(frozen=True)
class TokenInfo:
    """A token as shown to people (never its secret or hash)."""

    name: str
    scope: TokenScope
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _info(token: ApiToken) -> TokenInfo:
    return TokenInfo(
        name=token.name,
        scope=TokenScope(token.scope),
        created_at=token.created_at,
        last_used_at=token.last_used_at,
        revoked_at=token.revoked_at,
    )


def create_token(session: Session, name: str, scope: TokenScope) -> tuple[TokenInfo, str]:
    """Store a new token; returns it and its secret (which is not stored and cannot be shown again).

    Raises:
        ValueError: `name` does not match `NAME_PATTERN`.
        ConflictError: a token with this name exists (revoked tokens keep their name).
    """
    if not _NAME.fullmatch(name):  # match: `$` also before a trailing newline
        raise ValueError(
            "name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if repository.get_by_name(session, name) is not None:
        raise ConflictError(f"a token named {name!r} already exists", loc=["name"])
    secret = new_secret()
    token = ApiToken(name=name, scope=scope.value, token_hash=hash_secret(secret))
    try:
        repository.add_token(session, token)
    except IntegrityError:
        raise ConflictError(f"a token named {name!r} already exists", loc=["name"]) from None
    return _info(token), secret


def list_tokens(session: Session) -> list[TokenInfo]:
    """Every token (active and revoked), oldest first."""
    return [_info(t) for t in repository.list_tokens(session)]


def revoke_token(session: Session, name: str) -> TokenInfo:
    """Revoke the token `name` (idempotent); requests with it get 401 from now on.

    Raises:
        NotFoundError: no token has this name.
    """
    token = repository.get_by_name(session, name)
    if token is None:
        raise NotFoundError(f"no token named {name!r}", loc=["name"])
    if token.revoked_at is None:
        repository.revoke(session, token.id, utcnow())
        session.refresh(token)
    return _info(token)


_HOW = "send `Authorization: Bearer <token>` (regtune: --token or REGTUNE_TOKEN)"


def authenticate(session: Session, secret: str | None, needed: TokenScope) -> TokenInfo:
    """The token a request presents, if it may do what it asks; records its use (throttled).

    Raises:
        UnauthorizedError: no token, an unknown one, or a revoked one (401).
        ForbiddenError: a read token on a write endpoint (403).
    """
    if not secret:
        raise UnauthorizedError(f"authentication required: {_HOW}")
    if not secret.startswith(TOKEN_PREFIX):
        raise UnauthorizedError(f"invalid token: regtune tokens start with {TOKEN_PREFIX!r}")
    digest = hash_secret(secret)
    token = repository.get_by_hash(session, digest)
    # the lookup is by hash (an index); comparing again in constant time costs nothing
    if token is None or not same_hash(token.token_hash, digest):
        raise UnauthorizedError("invalid token: no such token")
    if token.revoked_at is not None:
        raise UnauthorizedError(f"token {token.name!r} was revoked")
    scope = TokenScope(token.scope)
    if not scope.allows(needed):
        raise ForbiddenError(
            f"token {token.name!r} has scope {scope.value!r}; this request needs a "
            f"{needed.value!r} token"
        )
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        repository.touch(session, token.id, now)
    return _info(token)
