"""Opaque identifiers: Relay global IDs and connection cursors.

    >>> to_global_id("User", 42)
    'VXNlcjo0Mg'
    >>> from_global_id("VXNlcjo0Mg")
    ('User', 42)

Both are URL-safe base64 without padding. Anything malformed raises InvalidId,
which the API turns into an INVALID_INPUT error (never a 500).
"""

from __future__ import annotations

import base64
import binascii

_MAX_ID = 2**63 - 1


class InvalidId(ValueError):
    """A global ID or cursor that this server did not issue."""


def _b64encode(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _b64decode(value: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 200:
        raise InvalidId("malformed identifier")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidId("malformed identifier") from exc


def _parse_int(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit():
        raise InvalidId("malformed identifier")
    value = int(raw)
    if value > _MAX_ID:
        raise InvalidId("malformed identifier")
    return value


def to_global_id(type_name: str, pk: int) -> str:
    return _b64encode(f"{type_name}:{pk}")


def from_global_id(global_id: str) -> tuple[str, int]:
    type_name, sep, raw_pk = _b64decode(global_id).partition(":")
    if not sep or not type_name:
        raise InvalidId("malformed global ID")
    return type_name, _parse_int(raw_pk)


def pk_from_global_id(global_id: str, expected_type: str) -> int:
    type_name, pk = from_global_id(global_id)
    if type_name != expected_type:
        raise InvalidId(f"expected a {expected_type} ID")
    return pk


def encode_cursor(*parts: int) -> str:
    """A cursor over a keyset of integers, e.g. (score, id)."""
    return _b64encode("c:" + ":".join(str(p) for p in parts))


def decode_cursor(cursor: str, arity: int) -> tuple[int, ...]:
    raw = _b64decode(cursor)
    prefix, _, body = raw.partition(":")
    parts = body.split(":")
    if prefix != "c" or len(parts) != arity:
        raise InvalidId("malformed cursor")
    return tuple(_parse_int(p) for p in parts)
