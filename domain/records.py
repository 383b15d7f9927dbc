"""Posts and users by id, read through the Redis record caches with PostgreSQL behind them.

One owner for "give me these records": the request loaders and the home feed's
hydration both call these, so a cache rule (what is cached, when a miss is filled)
lives here once.
"""

from __future__ import annotations

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
