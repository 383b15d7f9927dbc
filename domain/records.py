"""Posts and users by id, read through the Redis record caches with PostgreSQL behind them.

One owner for "give me these records": the request loaders and the home feed's
hydration both call these, so a cache rule (what is cached, when a miss is filled)
lives here once.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import any_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.posts import media_rows, posts_by_ids
from domain.users import USER_COLUMNS, users
from infra.cache import RecordCache
from models import IDS, PostStatus


@dataclass(slots=True)
class PostRecord:
    """A post row and, when loaded together (cache or batch), its media rows."""

    post: Any
    media: list[Any] | None = None


async def fetch_posts(
    engine: AsyncEngine, cache: RecordCache, post_ids: Sequence[int]
) -> dict[int, PostRecord]:
    """Posts by id with their media: Redis first (one round trip), then PostgreSQL for
    the misses (one statement for posts, one for their media), caching READY ones.
    Deleted and unknown ids are absent from the result."""
    cached, deleted = await cache.get_posts(post_ids)
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
    """Posts and users read for live deliveries, shared by one process's subscriptions
    for a moment: a post published to the 1,000 subscribers one API process holds is
    read once (one Redis round trip), not 1,000 times. Concurrent readers of the same
    id wait for the same read; a result is reused for `ttl` seconds, so a post deleted
    meanwhile can still be delivered within that window (then vanishes from feeds)."""

    def __init__(
        self, engine: AsyncEngine, cache: RecordCache, *, ttl: float = 2.0, maxsize: int = 1024
    ) -> None:
        self.engine = engine
        self.cache = cache
        self.ttl = ttl
        self.maxsize = maxsize
        self._reads: dict[tuple[str, int], tuple[float, asyncio.Future[Any]]] = {}

    def clear(self) -> None:
        """Forget every shared read (tests empty the database between cases)."""
        self._reads.clear()

    async def post(self, post_id: int) -> PostRecord | None:
        found: dict[int, PostRecord] = await self._shared("post", post_id, fetch_posts)
        return found.get(post_id)

    async def user(self, user_id: int) -> Any | None:
        found: dict[int, Any] = await self._shared("user", user_id, fetch_users)
        return found.get(user_id)

    async def _shared(self, kind: str, key: int, fetch: Any) -> Any:
        loop = asyncio.get_running_loop()
        now = loop.time()
        entry = self._reads.get((kind, key))
        if entry is None or entry[0] < now:
            if len(self._reads) >= self.maxsize:
                self._reads = {k: v for k, v in self._reads.items() if v[0] >= now}
                while len(self._reads) >= self.maxsize:  # all fresh: drop the oldest
                    del self._reads[next(iter(self._reads))]
            future = asyncio.ensure_future(fetch(self.engine, self.cache, [key]))
            entry = (now + self.ttl, future)
            self._reads[(kind, key)] = entry
            future.add_done_callback(lambda f, k=(kind, key): self._forget_failed(k, f))
        return await asyncio.shield(entry[1])

    def _forget_failed(self, key: tuple[str, int], future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            entry = self._reads.get(key)
            if entry is not None and entry[1] is future:
                del self._reads[key]
