from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from aiodataloader import DataLoader
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.posts import media_rows, posts_by_ids
from infra.cache import RecordCache
from models import PostStatus


@dataclass
class PostRecord:
    """A post row and, when loaded together (cache or batch), its media rows."""

    post: Any
    media: list[Any] | None = None


class PostByIdLoader(DataLoader[int, PostRecord | None]):
    """Posts by id with their media: Redis first (one MGET), then PostgreSQL for the
    misses (one statement for posts, one for their media), caching READY ones.
    Deleted posts are None."""

    def __init__(self, engine: AsyncEngine, cache: RecordCache) -> None:
        super().__init__()
        self.engine = engine
        self.records = cache

    async def batch_load_fn(self, keys: list[int]) -> list[PostRecord | None]:
        cached, deleted = await self.records.get_posts(keys)
        found = {i: PostRecord(post, media) for i, (post, media) in cached.items()}
        missing = [k for k in keys if k not in found and k not in deleted]
        if missing:
            async with self.engine.connect() as conn:
                rows = await posts_by_ids(conn=conn, post_ids=missing)
                media = await media_rows(conn=conn, post_ids=[r.id for r in rows]) if rows else []
            by_post: dict[int, list[Any]] = defaultdict(list)
            for item in media:
                by_post[item.post_id].append(item)
            for row in rows:
                found[row.id] = PostRecord(row, by_post.get(row.id, []))
            ready = [(r, by_post.get(r.id, [])) for r in rows if r.status == PostStatus.READY]
            if ready:
                await self.records.put_posts(ready)
        return [found.get(key) for key in keys]


class MediaByPostIdLoader(DataLoader[int, list[Any]]):
    """Each post's media rows in position order, one statement per batch of posts."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__()
        self.engine = engine

    async def batch_load_fn(self, keys: list[int]) -> list[list[Any]]:
        grouped: dict[int, list[Any]] = defaultdict(list)
        async with self.engine.connect() as conn:
            for row in await media_rows(conn=conn, post_ids=keys):
                grouped[row.post_id].append(row)
        return [grouped.get(key, []) for key in keys]
