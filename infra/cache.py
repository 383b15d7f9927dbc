"""Read-through caches of users and READY posts in Redis, in front of PostgreSQL.

Values are orjson blobs of the row (a post's blob carries its media), decoded into
`Record`s that read like SQLAlchemy rows (`record.id`). A deleted post leaves a
tombstone for the TTL, and fills use SET NX, so a reader that raced the delete
cannot put the old row back.

A cache, not the truth: a read Redis fails (down, stalled: `infra.redis`) is all misses,
which PostgreSQL answers, and a fill it fails is skipped; both log through
`log_fallback`. Writers' invalidations (`forget_users`, `bury_post`) still raise: what
to do when they fail is the writer's call.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis
from redis.crc import key_slot
from redis.exceptions import RedisError

from infra.redis import log_fallback

TOMBSTONE = b"-"
# Longer than any request takes between reading a row and caching it.
FORGET_SECONDS = 10
_DATETIMES = ("created_at", "status_changed_at", "deleted_at")


class Record(SimpleNamespace):
    """A row decoded from the cache; attribute access like a SQLAlchemy Row."""


def as_dict(row: Any) -> dict[str, Any]:
    mapping = getattr(row, "_mapping", None)
    return dict(mapping) if mapping is not None else dict(vars(row))


def _decode(values: dict[str, Any]) -> Record:
    for name in _DATETIMES:
        if isinstance(values.get(name), str):
            values[name] = datetime.fromisoformat(values[name])
    return Record(**values)


def slot_groups(keys: Sequence[str]) -> list[list[int]]:
    """Positions of `keys` grouped by the Redis Cluster hash slot each key maps to."""
    groups: dict[int, list[int]] = {}
    for position, key in enumerate(keys):
        groups.setdefault(key_slot(key.encode()), []).append(position)
    return list(groups.values())


def user_key(user_id: int) -> str:
    return f"user:{user_id}"


def post_key(post_id: int) -> str:
    return f"post:{post_id}"


class Rider(Protocol):
    """Commands of another reader sent in the pipeline of a batch read of posts, so that
    both cost one round trip (`domain.engagement.ViewerRead`: the viewer's likes among
    the posts and their hidden set, for a feed page that shows them)."""

    def add(self, pipe: Any, post_ids: Sequence[int]) -> int:
        """Queue commands about these posts on `pipe`; returns how many."""
        ...

    def take(self, results: list[Any]) -> None:
        """The replies to those commands, in order; a command Redis refused replies with
        its exception (the rider then does without it: the batch read goes on)."""
        ...


class RecordCache:
    """`cluster=True` reads a batch as one MGET per hash slot, sent in one pipeline (Redis
    Cluster refuses a multi-key command across slots; its client sends a pipeline as one
    round trip per node). On a single Redis a batch is one MGET."""

    def __init__(self, redis: Redis, ttl_seconds: int, *, cluster: bool = False) -> None:
        self.redis = redis
        self.ttl = ttl_seconds
        self.cluster = cluster

    async def _mget(
        self, keys: list[str], rider: Rider | None = None, ids: Sequence[int] = ()
    ) -> list[bytes | None]:
        if not keys:
            return []
        if not self.cluster and rider is None:
            return list(await self.redis.mget(keys))
        groups = slot_groups(keys) if self.cluster else [list(range(len(keys)))]
        pipe = self.redis.pipeline(transaction=False)
        for positions in groups:
            pipe.mget([keys[i] for i in positions])
        ridden = rider.add(pipe, ids) if rider is not None else 0
        # A rider's refusal (an ACL, WRONGTYPE) is the rider's to handle: it gets its
        # replies, exceptions included, and only a refused MGET fails the read.
        results = await pipe.execute(raise_on_error=False)
        for reply in results[: len(groups)]:
            if isinstance(reply, Exception):
                raise reply
        if rider is not None and ridden:
            rider.take(results[len(results) - ridden :])
        values: list[bytes | None] = [None] * len(keys)
        for positions, blobs in zip(groups, results[: len(groups)], strict=True):
            for i, blob in zip(positions, blobs, strict=True):
                values[i] = blob
        return values

    async def get_users(self, user_ids: Sequence[int]) -> dict[int, Record]:
        try:
            blobs = await self._mget([user_key(i) for i in user_ids])
        except RedisError as error:
            log_fallback("user records", error)
            return {}
        return {
            i: _decode(orjson.loads(b))
            for i, b in zip(user_ids, blobs, strict=True)
            if b and b != TOMBSTONE
        }

    async def put_users(self, rows: Iterable[Any]) -> None:
        # NX: a fill never overwrites the short tombstone a writer left (see forget_users).
        pipe = self.redis.pipeline(transaction=False)
        for row in rows:
            pipe.set(user_key(row.id), orjson.dumps(as_dict(row)), ex=self.ttl, nx=True)
        await _fill(pipe)

    async def forget_users(self, user_ids: Iterable[int]) -> None:
        """After a user's row changed: a short tombstone instead of a delete, so that a
        reader who fetched the old row just before the commit cannot cache it again."""
        pipe = self.redis.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.set(user_key(user_id), TOMBSTONE, ex=FORGET_SECONDS)
        await pipe.execute()

    async def get_posts(
        self, post_ids: Sequence[int], *, rider: Rider | None = None
    ) -> tuple[dict[int, tuple[Record, list[Record]]], set[int]]:
        """Cached posts with their media, and the ids known to be deleted; with a
        `rider`, its commands about the same ids go in the same round trip."""
        try:
            blobs = await self._mget([post_key(i) for i in post_ids], rider, post_ids)
        except RedisError as error:  # the rider gets nothing: it reads without the cache
            log_fallback("post records", error)
            return {}, set()
        found: dict[int, tuple[Record, list[Record]]] = {}
        deleted: set[int] = set()
        for post_id, blob in zip(post_ids, blobs, strict=True):
            if blob == TOMBSTONE:
                deleted.add(post_id)
            elif blob:
                value = orjson.loads(blob)
                found[post_id] = (_decode(value["post"]), [_decode(m) for m in value["media"]])
        return found, deleted

    async def put_posts(self, posts: Iterable[tuple[Any, list[Any]]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for post, media in posts:
            blob = orjson.dumps({"post": as_dict(post), "media": [as_dict(m) for m in media]})
            pipe.set(post_key(post.id), blob, ex=self.ttl, nx=True)
        await _fill(pipe)

    async def bury_post(self, post_id: int) -> None:
        await self.redis.set(post_key(post_id), TOMBSTONE, ex=self.ttl)


async def _fill(pipe: Any) -> None:
    """Send a pipeline of cache fills; one Redis fails is skipped (the next reader reads
    PostgreSQL again)."""
    try:
        await pipe.execute()
    except RedisError as error:
        log_fallback("record cache fills", error)
