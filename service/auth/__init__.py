"""API tokens: hashed bearer secrets with a read or write scope."""

from service.auth._hashing import TOKEN_PREFIX
from service.auth.service import (
    TokenInfo,
    TokenScope,
    authenticate,
    create_token,
    list_tokens,
    revoke_token,
)

__all__ = [
    "TOKEN_PREFIX",
    "TokenInfo",
    "TokenScope",
    "authenticate",
    "create_token",
    "list_tokens",
    "revoke_token",
]
