"""Types shared by every domain: Node, PageInfo, scalars, connection helpers."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, NewType, TypeVar

import strawberry

from infra.ids import InvalidId, decode_cursor
from schema.errors import invalid_input

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

UnsignedInt64 = NewType("UnsignedInt64", int)


def scalar_map() -> dict[object, Any]:
    """Custom scalars, registered through StrawberryConfig.scalar_map."""
    return {
        UnsignedInt64: strawberry.scalar(
            name="UnsignedInt64",
            description=(
                "A non-negative 64-bit integer, serialized as a string (byte sizes above 2 GB)."
            ),
            serialize=str,
            parse_value=_parse_unsigned_int64,
        )
    }


_CANONICAL_DIGITS = re.compile(r"0|[1-9][0-9]*")


def _parse_unsigned_int64(value: object) -> int:
    """An int, or a string of canonical ASCII digits: never a float (`1.9` is not 1), an
    underscore (`1_000`), other scripts' digits, signs, spaces or leading zeros, all of
    which Python's int() would take."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _CANONICAL_DIGITS.fullmatch(value):
        number = int(value)
    else:
        raise ValueError("UnsignedInt64 must be a non-negative integer")
    if not 0 <= number < 2**64:
        raise ValueError("UnsignedInt64 must be between 0 and 2^64-1")
    return number


@strawberry.interface(description="An object with a globally unique, opaque ID.")
class Node:
    id: strawberry.ID = strawberry.field(description="The object's global ID.")


@strawberry.type(description="Where a connection page sits in the whole list.")
class PageInfo:
    has_next_page: bool = strawberry.field(description="More items follow this page.")
    has_previous_page: bool = strawberry.field(description="Items precede this page.")
    start_cursor: str | None = strawberry.field(description="Cursor of the first edge.")
    end_cursor: str | None = strawberry.field(description="Cursor of the last edge.")


def check_page_size(first: int | None) -> int:
    """`first` must be 1..100; anything else is INVALID_INPUT."""
    size = DEFAULT_PAGE_SIZE if first is None else first
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise invalid_input(f"`first` must be between 1 and {MAX_PAGE_SIZE}.")
    return size


def parse_cursor(after: str | None, arity: int) -> tuple[int, ...] | None:
    if after is None:
        return None
    try:
        return decode_cursor(after, arity)
    except InvalidId as exc:
        raise invalid_input("`after` is not a valid cursor.") from exc


T = TypeVar("T")


def page_info(
    items: Sequence[T], *, has_next: bool, has_previous: bool, cursor: Callable[[T], str]
) -> PageInfo:
    return PageInfo(
        has_next_page=has_next,
        has_previous_page=has_previous,
        start_cursor=cursor(items[0]) if items else None,
        end_cursor=cursor(items[-1]) if items else None,
    )
