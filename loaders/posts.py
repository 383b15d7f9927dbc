from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from aiodataloader import DataLoader
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.posts import media_rows, posts_by_ids
from models import DbRow


class PostByIdLoader(DataLoader[int, DbRow | None]):
    """Posts by id (deleted ones are None), one statement per batch."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__()
        self.engine = engine

    async def batch_load_fn(self, keys: list[int]) -> list[DbRow | None]:
        async with self.engine.connect() as conn:
            by_id = {row.id: row for row in await posts_by_ids(conn=conn, post_ids=keys)}
        return [by_id.get(key) for key in keys]

    def prime_rows(self, rows: Iterable[DbRow]) -> None:
        for row in rows:
            self.clear(row.id).prime(row.id, row)


class MediaByPostIdLoader(DataLoader[int, list[DbRow]]):
    """Each post's media rows in position order, one statement per batch of posts."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__()
        self.engine = engine

    async def batch_load_fn(self, keys: list[int]) -> list[list[DbRow]]:
        grouped: dict[int, list[DbRow]] = defaultdict(list)
        async with self.engine.connect() as conn:
            for row in await media_rows(conn=conn, post_ids=keys):
                grouped[row.post_id].append(row)
        return [grouped.get(key, []) for key in keys]
