"""Password hashing (argon2id) and signed, expiring bearer tokens (JWT, HS256)."""

from __future__ import annotations

import asyncio
import time

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the username is unknown, so a wrong username costs the same
# time as a wrong password and logIn cannot be used to enumerate accounts.
_DUMMY_HASH = _hasher.hash("instagraph-dummy-password")

TOKEN_ALGORITHM = "HS256"  # noqa: S105 - an algorithm name, not a secret


async def hash_password(password: str) -> str:
    """argon2 is deliberately slow (~50 ms of CPU): keep it off the event loop."""
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


def issue_token(user_id: int, *, secret: str, ttl_seconds: int, now: float | None = None) -> str:
    issued = int(now if now is not None else time.time())
    claims = {"sub": str(user_id), "iat": issued, "exp": issued + ttl_seconds, "typ": "access"}
    return jwt.encode(claims, secret, algorithm=TOKEN_ALGORITHM)


def user_id_from_token(token: str, *, secret: str) -> int | None:
    """The user id a valid token names, or None for a malformed, forged or expired one."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[TOKEN_ALGORITHM], options={"require": ["exp", "sub"]}
        )
    except jwt.PyJWTError:
        return None
    if claims.get("typ") != "access":
        return None
    try:
        return int(claims["sub"])
    except (TypeError, ValueError):
        return None


def user_id_from_authorization(header: str | None, *, secret: str) -> int | None:
    """Parse `Bearer <token>`; anything else is treated as no credentials."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return user_id_from_token(token.strip(), secret=secret)
