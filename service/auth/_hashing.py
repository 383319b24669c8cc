"""Token secrets: generated once, shown once, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["TOKEN_PREFIX", "hash_secret", "new_secret", "same_hash"]

# Recognisable in logs, config files and secret scanners ("regtune token").
TOKEN_PREFIX = "rgt_"


def new_secret() -> str:
    """A fresh secret: the prefix plus 32 random bytes, URL-safe base64 (43 characters)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """Hex SHA-256 of the secret: what the database stores and is searched by.

    A plain (unsalted, fast) hash is enough: the secret has 256 random bits, so it cannot be
    guessed from its hash, and a deterministic hash is what makes lookup by hash possible.
    """
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def same_hash(a: str, b: str) -> bool:
    """Constant-time comparison of two hex digests."""
    return hmac.compare_digest(a.encode("ascii"), b.encode("ascii"))
