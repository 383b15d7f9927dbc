"""Password hashing (argon2id) and signed, expiring bearer tokens (JWT, HS256)."""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict

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


# Verified tokens, by (secret, token): a client sends the same token with every request,
# and checking its signature and claims costs ~35 µs, a tenth of a warm feed page's
# server time. An entry holds until the token's own expiry; only valid tokens are kept.
_VERIFIED: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()
VERIFIED_TOKENS_KEPT = 10_000


def user_id_from_token(token: str, *, secret: str, now: float | None = None) -> int | None:
    """The user id a valid token names, or None for a malformed, forged or expired one."""
    key = (secret, token)
    known = _VERIFIED.get(key)
    if known is not None:
        user_id, expires = known
        if (now if now is not None else time.time()) < expires:
            return user_id
        del _VERIFIED[key]
        return None  # expired stays expired
    verified = _verify(token, secret)
    if verified is None:
        return None
    _VERIFIED[key] = verified
    if len(_VERIFIED) > VERIFIED_TOKENS_KEPT:
        _VERIFIED.popitem(last=False)
    return verified[0]


def _verify(token: str, secret: str) -> tuple[int, float] | None:
    """(user id, expiry) of a token whose signature and claims hold."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[TOKEN_ALGORITHM], options={"require": ["exp", "sub"]}
        )
    except jwt.PyJWTError:
        return None
    if claims.get("typ") != "access":
        return None
    user_id = user_id_from_subject(claims["sub"])
    try:
        expires = float(claims["exp"])
    except (TypeError, ValueError):
        return None
    return (user_id, expires) if user_id is not None else None


_SUBJECT = re.compile(r"[1-9][0-9]{0,18}")
MAX_USER_ID = 2**63 - 1  # PostgreSQL's BIGINT


def user_id_from_subject(subject: object) -> int | None:
    """The user id a token's `sub` names: canonical ASCII digits of a positive BIGINT
    (as `issue_token` writes it), else None. A correctly signed token naming
    `99999999999999999999` or `-1` is no credential at all, never an integer overflow
    in the database (`int()` alone would also take fullwidth digits, `" 12"` or
    `"1_2"`)."""
    if not isinstance(subject, str) or not _SUBJECT.fullmatch(subject):
        return None
    user_id = int(subject)
    return user_id if user_id <= MAX_USER_ID else None


def user_id_from_authorization(header: str | None, *, secret: str) -> int | None:
    """Parse `Bearer <token>`; anything else is treated as no credentials."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return user_id_from_token(token.strip(), secret=secret)
