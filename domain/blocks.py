"""Blocks hide two users from each other, both ways, everywhere: one owner for "who is
hidden from whom".

Readers ask `HiddenUsers.of(viewer_id)` (the set of accounts the viewer blocked or was
blocked by), cached in Redis as one small blob per user so that a warm read path needs
no SQL; SQL that lists other people's things filters with `not_hidden(viewer, column)`;
mutations that touch another user check `blocked_either_way` inside their transaction.
A block or unblock calls `HiddenUsers.forget(a, b)` after its commit.

Everything hidden answers as if it did not exist (NOT_FOUND, null, absent from lists),
so a block is never revealed to the blocked user.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import and_, exists, literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import ColumnElement

from infra.cache import FORGET_SECONDS, TOMBSTONE
from models import Block, table_of

blocks = table_of(Block)

# How long a user's hidden set stays cached; writers leave a tombstone, so this is only
# the memory bound, not a staleness window.
HIDDEN_TTL_SECONDS = 3600


def hidden_key(user_id: int) -> str:
    return f"hidden:{user_id}"


async def hidden_ids(*, conn: AsyncConnection, user_id: int) -> frozenset[int]:
    """Accounts user_id blocked or was blocked by, from PostgreSQL."""
    query = union_all(
        select(blocks.c.blocked_id).where(blocks.c.blocker_id == user_id),
        select(blocks.c.blocker_id).where(blocks.c.blocked_id == user_id),
    )
    return frozenset((await conn.execute(query)).scalars())


async def blocked_either_way(*, conn: AsyncConnection, a: int, b: int) -> bool:
    """Whether a block stands between a and b, in either direction."""
    found = await conn.execute(
        select(literal(1)).where(
            or_(
                and_(blocks.c.blocker_id == a, blocks.c.blocked_id == b),
                and_(blocks.c.blocker_id == b, blocks.c.blocked_id == a),
            )
        )
    )
    return found.first() is not None


def not_hidden(viewer_id: int | None, user_column: Any) -> ColumnElement[bool]:
    """A WHERE clause keeping rows whose `user_column` is not hidden from the viewer
    (both directions; the two primary-key lookups use the blocks indexes)."""
    if viewer_id is None:
        return literal(True)
    return ~exists().where(
        or_(
            and_(blocks.c.blocker_id == viewer_id, blocks.c.blocked_id == user_column),
            and_(blocks.c.blocker_id == user_column, blocks.c.blocked_id == viewer_id),
        )
    )


class HiddenUsers:
    """Per-user hidden sets, Redis first (one GET), PostgreSQL behind. A fill is SET NX,
    and a writer leaves a short tombstone (as the record caches do), so a reader who read
    PostgreSQL just before a block committed cannot cache the old set again."""

    def __init__(self, engine: AsyncEngine, redis: Any) -> None:
        self.engine = engine
        self.redis = redis

    async def of(self, user_id: int | None) -> frozenset[int]:
        if user_id is None:
            return frozenset()
        blob = await self.redis.get(hidden_key(user_id))
        if blob is not None and blob != TOMBSTONE:
            return frozenset(orjson.loads(blob))
        async with self.engine.connect() as conn:
            found = await hidden_ids(conn=conn, user_id=user_id)
        if blob is None:
            await self.redis.set(
                hidden_key(user_id), orjson.dumps(sorted(found)), ex=HIDDEN_TTL_SECONDS, nx=True
            )
        return found

    async def forget(self, *user_ids: int) -> None:
        """After a block or unblock between these users committed."""
        pipe = self.redis.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.set(hidden_key(user_id), TOMBSTONE, ex=FORGET_SECONDS)
        await pipe.execute()
