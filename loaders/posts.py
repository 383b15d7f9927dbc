from __future__ import annotations

from collections import defaultdict
from typing import Any

from aiodataloader import DataLoader
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.posts import media_rows
from domain.records import PostRecord, fetch_posts
from infra.cache import RecordCache


class PostByIdLoader(DataLoader[int, PostRecord | None]):
    """Posts by id with their media (see `domain.records.fetch_posts`); deleted posts are
    None."""

    def __init__(self, engine: AsyncEngine, cache: RecordCache) -> None:
        super().__init__()
        self.engine = engine
        self.records = cache

    async def batch_load_fn(self, keys: list[int]) -> list[PostRecord | None]:
        found = await fetch_posts(self.engine, self.records, keys)
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
