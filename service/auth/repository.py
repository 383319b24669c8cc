"""SQL on regtune_api_tokens. Functions take a session and at most flush(); callers commit."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.models import ApiToken

__all__ = ["add_token", "get_by_hash", "get_by_name", "list_tokens", "revoke", "touch"]


def add_token(session: Session, token: ApiToken) -> ApiToken:
    """Insert `token` and flush (raises IntegrityError when the name is taken)."""
    session.add(token)
    session.flush()
    return token


def get_by_hash(session: Session, token_hash: str) -> ApiToken | None:
    """The token whose secret hashes to `token_hash` (unique index on token_hash)."""
    return session.scalars(select(ApiToken).where(ApiToken.token_hash == token_hash)).first()


def get_by_name(session: Session, name: str) -> ApiToken | None:
    return session.scalars(select(ApiToken).where(ApiToken.name == name)).first()


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)))


def revoke(session: Session, token_id: int, now: datetime) -> None:
    session.execute(
        update(ApiToken)
        .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    session.flush()


def touch(session: Session, token_id: int, now: datetime) -> None:
    """Record a use of the token (callers throttle how often)."""
    session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now))
    session.flush()
