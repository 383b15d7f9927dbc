"""Blocks hide two users from each other, both ways, everywhere: one owner for "who is
hidden from whom".

Readers ask `HiddenUsers.of(viewer_id)` (the set of accounts the viewer blocked or was
blocked by), cached in Redis as one small blob per user so that a warm read path needs
no SQL; SQL that lists other people's things filters with `not_hidden(viewer, column)`;
mutations that touch another user check `blocked_either_way` inside their transaction,
after `hold_against_blocks` (so that a block committing meanwhile waits for them, or
they for it). A block or unblock calls `HiddenUsers.forget(a, b)` inside its
transaction, once its rules passed and before its commit, and `HiddenUsers.refresh(a, b)`
after its commit.

Everything hidden answers as if it did not exist (NOT_FOUND, null, absent from lists),
so a block is never revealed to the blocked user.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import orjson
from redis.exceptions import RedisError
from sqlalchemy import and_, exists, literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import ColumnElement

from infra.cache import FORGET_SECONDS, TOMBSTONE
from infra.redis import log_fallback, redis_health
from models import Block, User, table_of

blocks = table_of(Block)
users = table_of(User)

# How long a user's hidden set stays cached. Writers leave a tombstone and refresh the
# set after their commit, and the outbox relay refreshes it again (first thing in each
# run), so normally this is only the memory bound. It is also the worst case of a block
# committed while Redis refused this process's refresh and no worker relays: 5 minutes.
# A refill costs one SQL statement (two primary-key index scans) per user per TTL.
HIDDEN_TTL_SECONDS = 300
# After a commit, a refresh Redis refused is tried once more, once the client's breaker
# lets a probe through (`infra.redis.RedisHealth.retry_after`), waiting at most this.
REFRESH_RETRY_WAIT_SECONDS = 1.0


def hidden_key(user_id: int) -> str:
    return f"hidden:{user_id}"


async def hidden_ids(*, conn: AsyncConnection, user_id: int) -> frozenset[int]:
    """Accounts user_id blocked or was blocked by, from PostgreSQL."""
    query = union_all(
        select(blocks.c.blocked_id).where(blocks.c.blocker_id == user_id),
        select(blocks.c.blocker_id).where(blocks.c.blocked_id == user_id),
    )
    return frozenset((await conn.execute(query)).scalars())


def _between(a: int, b: int) -> ColumnElement[bool]:
    return or_(
        and_(blocks.c.blocker_id == a, blocks.c.blocked_id == b),
        and_(blocks.c.blocker_id == b, blocks.c.blocked_id == a),
    )


async def blocked_either_way(*, conn: AsyncConnection, a: int, b: int) -> bool:
    """Whether a block stands between a and b, in either direction."""
    found = await conn.execute(select(literal(1)).where(_between(a, b)).limit(1))
    return found.first() is not None


async def hold_against_blocks(*, conn: AsyncConnection, user_id: int) -> None:
    """Inside a transaction that is about to write something by user_id that a block
    must take away (a like or comment on another's post, a notification from user_id):
    share-lock user_id's row until the commit, then check for blocks.

    A block locks both users' rows FOR NO KEY UPDATE (`domain.follows._lock_pair`),
    which conflicts with FOR SHARE (not with FOR KEY SHARE, which the foreign keys take).
    So either the block commits first and this transaction, waiting here, then sees it,
    or this transaction commits first and the block's clean-up (waiting on the lock)
    sees and removes what it wrote: never a like committed behind a block's clean-up.
    Writers by the same user share the lock and do not wait on each other."""
    await conn.execute(select(users.c.id).where(users.c.id == user_id).with_for_update(read=True))


async def blockers_between(*, conn: AsyncConnection, a: int, b: int) -> set[int]:
    """Which of a and b blocked the other (empty, one of them, or both)."""
    return set((await conn.execute(select(blocks.c.blocker_id).where(_between(a, b)))).scalars())


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


# Puts a writer's fresh set in place of its own tombstone only: if another writer's
# tombstone replaced it, that writer's (later) read is the one to keep.
_REPLACE_OWN_TOMBSTONE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
return false
"""


def _is_tombstone(blob: bytes) -> bool:
    return blob.startswith(TOMBSTONE)  # a set is a JSON array: it starts with "["


class HiddenUsers:
    """Per-user hidden sets, Redis first (one GET), PostgreSQL behind.

    A reader's fill is SET NX, and a writer (a block made or lifted) lays a tombstone of
    its own before its commit and again after it, then reads the new set and
    puts it in place of that tombstone if it is still there. So a reader who read
    PostgreSQL before the commit cannot cache the old set (NX fails on the tombstone or
    on the writer's set), two writers touching one user leave the later read, a writer
    that dies after its commit leaves a tombstone (readers go to PostgreSQL until it
    expires), and the next requests of both users read Redis, not PostgreSQL."""

    def __init__(self, engine: AsyncEngine, redis: Any) -> None:
        self.engine = engine
        self.redis = redis
        self._replace_own_tombstone = redis.register_script(_REPLACE_OWN_TOMBSTONE)

    async def of(self, user_id: int | None) -> frozenset[int]:
        """Accounts user_id blocked or was blocked by (empty for an anonymous viewer)."""
        if user_id is None:
            return frozenset()
        try:
            blob = await self.redis.get(hidden_key(user_id))
        except RedisError as error:  # Redis down or stalled: PostgreSQL, nothing cached
            log_fallback("hidden sets", error)
            blob = TOMBSTONE
        if blob is not None and not _is_tombstone(blob):
            return frozenset(orjson.loads(blob))
        async with self.engine.connect() as conn:
            found = await hidden_ids(conn=conn, user_id=user_id)
        if blob is None:
            with contextlib.suppress(RedisError):  # a fill: the next reader tries again
                await self.redis.set(
                    hidden_key(user_id), orjson.dumps(sorted(found)), ex=HIDDEN_TTL_SECONDS, nx=True
                )
        return found

    async def forget(self, *user_ids: int) -> dict[int, bytes]:
        """Before a block or unblock between these users commits (and inside `refresh`
        after it): a tombstone of this call's own per user, returned by user id."""
        tombstones = {user_id: TOMBSTONE + uuid.uuid4().hex.encode() for user_id in user_ids}
        pipe = self.redis.pipeline(transaction=False)
        for user_id, tombstone in tombstones.items():
            pipe.set(hidden_key(user_id), tombstone, ex=FORGET_SECONDS)
        await pipe.execute()
        return tombstones

    async def refresh_after_commit(self, *user_ids: int) -> None:
        """`refresh` for the request that committed the block or unblock: when Redis (or
        this process's breaker, open after an earlier failure while other processes
        still read the cached sets) refuses, try once more when the breaker lets a probe
        through. Raises if that fails too (the `invalidate` outbox row then brings the
        sets in line, the relay applying such rows first)."""
        try:
            await self.refresh(*user_ids)
            return
        except RedisError as error:
            log_fallback("hidden sets refresh", error, instead="retried once")
        health = redis_health(self.redis)
        wait = health.retry_after if health is not None and not health.available else 0.0
        await asyncio.sleep(min(wait, REFRESH_RETRY_WAIT_SECONDS))
        await self.refresh(*user_ids)

    async def refresh(self, *user_ids: int) -> None:
        """After a block or unblock between these users committed."""
        tombstones = await self.forget(*user_ids)
        async with self.engine.connect() as conn:
            found = {user_id: await hidden_ids(conn=conn, user_id=user_id) for user_id in user_ids}
        for user_id, hidden in found.items():
            await self._replace_own_tombstone(
                keys=[hidden_key(user_id)],
                args=[tombstones[user_id], orjson.dumps(sorted(hidden)), HIDDEN_TTL_SECONDS],
            )
