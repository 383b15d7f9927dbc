"""Posts and users by id, read through the Redis record caches with PostgreSQL behind them.

One owner for "give me these records": the request loaders and the home feed's
hydration both call these, so a cache rule (what is cached, when a miss is filled)
lives here once.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import any_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.posts import media_rows, posts_by_ids
from domain.users import USER_COLUMNS, users
from infra.cache import RecordCache, Rider
from models import IDS, PostStatus


@dataclass(slots=True)
class PostRecord:
    """A post row and, when loaded together (cache or batch), its media rows."""

    post: Any
    media: list[Any] | None = None


async def fetch_posts(
    engine: AsyncEngine,
    cache: RecordCache,
    post_ids: Sequence[int],
    *,
    rider: Rider | None = None,
) -> dict[int, PostRecord]:
    """Posts by id with their media: Redis first (one round trip, which `rider`'s
    commands share), then PostgreSQL for the misses (one statement for posts, one for
    their media), caching READY ones. Deleted and unknown ids are absent from the result."""
    cached, deleted = await cache.get_posts(post_ids, rider=rider)
    found = {i: PostRecord(post, media) for i, (post, media) in cached.items()}
    missing = [k for k in post_ids if k not in found and k not in deleted]
    if missing:
        async with engine.connect() as conn:
            rows = await posts_by_ids(conn=conn, post_ids=missing)
            media = await media_rows(conn=conn, post_ids=[r.id for r in rows]) if rows else []
        by_post: dict[int, list[Any]] = defaultdict(list)
        for item in media:
            by_post[item.post_id].append(item)
        for row in rows:
            found[row.id] = PostRecord(row, by_post.get(row.id, []))
        ready = [(r, by_post.get(r.id, [])) for r in rows if r.status == PostStatus.READY]
        if ready:
            await cache.put_posts(ready)
    return found


async def fetch_users(
    engine: AsyncEngine, cache: RecordCache, user_ids: Sequence[int]
) -> dict[int, Any]:
    """Users by id: Redis first (one round trip), then one statement for the misses,
    which are cached for the next reader. Unknown ids are absent."""
    found: dict[int, Any] = dict(await cache.get_users(user_ids))
    missing = [key for key in user_ids if key not in found]
    if missing:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(*USER_COLUMNS).where(users.c.id == any_(IDS)), {"ids": missing}
                )
            ).all()
        found.update({row.id: row for row in rows})
        if rows:
            await cache.put_users(rows)
    return found


class RecentRecords:
    """Posts and users this process read a moment ago, shared by its requests and
    subscriptions: a post published to the 1,000 subscribers one API process holds is
    read once, not 1,000 times, and the authors of feed pages (the few hundred accounts
    a reader follows, page after page) are not read again for `ttl` seconds. Concurrent
    readers of the same ids wait for the same read (one round trip per batch).

    The price is up to `ttl` seconds of staleness in other processes (a renamed author,
    a post deleted just after being published live). A writer in this process calls
    `forget_users`, which also leaves the Redis cache's tombstone, so its own reads see
    the change at once."""

    def __init__(
        self,
        engine: AsyncEngine,
        cache: RecordCache,
        *,
        ttl: float = 2.0,
        maxsize: int = 20_000,
    ) -> None:
        self.engine = engine
        self.cache = cache
        self.ttl = ttl
        self.maxsize = maxsize
        # (kind, id) -> (expiry, the read that brings it: a dict by id), oldest first.
        self._reads: OrderedDict[tuple[str, int], tuple[float, asyncio.Future[Any]]] = OrderedDict()

    async def post(self, post_id: int) -> PostRecord | None:
        return (await self._many("post", [post_id], fetch_posts)).get(post_id)

    async def user(self, user_id: int) -> Any | None:
        return (await self.users([user_id])).get(user_id)

    async def users(self, user_ids: Sequence[int]) -> dict[int, Any]:
        """Users by id (unknown ids absent): one read for all those not read lately."""
        return await self._many("user", user_ids, fetch_users)

    async def forget_users(self, user_ids: Sequence[int]) -> None:
        """These users changed: drop them here and leave the Redis cache's tombstone, so
        that no reader of this process or another caches the old row again."""
        for user_id in user_ids:
            self._reads.pop(("user", user_id), None)
        await self.cache.forget_users(user_ids)

    def clear(self) -> None:
        """Forget every shared read (tests empty the database between cases)."""
        self._reads.clear()

    async def _many(self, kind: str, keys: Sequence[int], fetch: Any) -> dict[int, Any]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        memo = self._reads
        # What finished reads already hold is taken at once (the common case: no await).
        found: dict[int, Any] = {}
        reads: dict[int, asyncio.Future[Any]] = {}
        missing: list[int] = []
        for key in keys:
            entry = memo.get((kind, key))
            if entry is not None and entry[0] >= now:
                read = entry[1]
                if read.done():
                    value = read.result().get(key)
                    if value is not None:
                        found[key] = value
                else:
                    reads[key] = read
            else:
                missing.append(key)
        if not reads and not missing:
            return found
        if missing:
            batch = asyncio.ensure_future(fetch(self.engine, self.cache, missing))
            for key in missing:
                self._reads[(kind, key)] = (now + self.ttl, batch)
                self._reads.move_to_end((kind, key))
                reads[key] = batch
            while len(self._reads) > self.maxsize:
                self._reads.popitem(last=False)
            batch.add_done_callback(lambda f, k=kind, m=missing: self._forget_failed(k, m, f))
        for read in set(reads.values()):
            # Shielded: a waiter cancelled (a client gone) must not cancel the others' read.
            found.update(await asyncio.shield(read))
        return {key: found[key] for key in keys if key in found}

    def _forget_failed(self, kind: str, keys: list[int], future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            for key in keys:
                entry = self._reads.get((kind, key))
                if entry is not None and entry[1] is future:
                    del self._reads[(kind, key)]
