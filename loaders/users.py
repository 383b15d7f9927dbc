from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiodataloader import DataLoader
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.blocks import HiddenUsers
from domain.follows import followees_among, followers_among, requested_among
from domain.records import fetch_users
from infra.cache import RecordCache
from loaders.posts import MediaByPostIdLoader, PostByIdLoader


class UserByIdLoader(DataLoader[int, Any]):
    """Users by id, in key order, None for a missing id: Redis first (one MGET), then
    one statement for the misses, which are cached for the next request."""

    def __init__(self, engine: AsyncEngine, cache: RecordCache) -> None:
        super().__init__()
        self.engine = engine
        self.records = cache

    async def batch_load_fn(self, keys: list[int]) -> list[Any]:
        found = await fetch_users(self.engine, self.records, keys)
        return [found.get(key) for key in keys]

    def prime_rows(self, rows: Iterable[Any]) -> None:
        """Seed the cache with rows another statement already fetched (a page join)."""
        for row in rows:
            self.clear(row.id).prime(row.id, row)


class _FollowStateLoader(DataLoader[int, bool]):
    """A follow edge between the viewer and each of these users, one statement per batch;
    False for an anonymous viewer."""

    def __init__(self, engine: AsyncEngine, viewer_id: int | None) -> None:
        super().__init__()
        self.engine = engine
        self.viewer_id = viewer_id

    async def batch_load_fn(self, keys: list[int]) -> list[bool]:
        if self.viewer_id is None:
            return [False] * len(keys)
        async with self.engine.connect() as conn:
            found = await self.edges(conn, self.viewer_id, keys)
        return [key in found for key in keys]

    async def edges(self, conn: AsyncConnection, viewer_id: int, keys: list[int]) -> set[int]:
        raise NotImplementedError


class FollowedByViewerLoader(_FollowStateLoader):
    """Does the viewer follow each of these users?"""

    async def edges(self, conn: AsyncConnection, viewer_id: int, keys: list[int]) -> set[int]:
        return await followees_among(conn=conn, follower_id=viewer_id, user_ids=keys)


class FollowsViewerLoader(_FollowStateLoader):
    """Does each of these users follow the viewer?"""

    async def edges(self, conn: AsyncConnection, viewer_id: int, keys: list[int]) -> set[int]:
        return await followers_among(conn=conn, followee_id=viewer_id, user_ids=keys)


class RequestedByViewerLoader(_FollowStateLoader):
    """Has the viewer a pending follow request to each of these users?"""

    async def edges(self, conn: AsyncConnection, viewer_id: int, keys: list[int]) -> set[int]:
        return await requested_among(conn=conn, requester_id=viewer_id, user_ids=keys)


class Loaders:
    """Every loader of one request (or one WebSocket operation)."""

    def __init__(
        self,
        engine: AsyncEngine,
        cache: RecordCache,
        viewer_id: int | None,
        hidden: HiddenUsers | None = None,
    ) -> None:
        self.viewer_id = viewer_id
        self._hidden_of = hidden if hidden is not None else HiddenUsers(engine, cache.redis)
        self._hidden: asyncio.Future[frozenset[int]] | None = None
        self.user_by_id = UserByIdLoader(engine, cache)
        self.followed_by_viewer = FollowedByViewerLoader(engine, viewer_id)
        self.follows_viewer = FollowsViewerLoader(engine, viewer_id)
        self.requested_by_viewer = RequestedByViewerLoader(engine, viewer_id)
        self.post_by_id = PostByIdLoader(engine, cache)
        self.media_by_post_id = MediaByPostIdLoader(engine)

    async def hidden_users(self) -> frozenset[int]:
        """Accounts hidden from the viewer by a block either way (`domain.blocks`), read
        once per request."""
        if self._hidden is None:
            self._hidden = asyncio.ensure_future(self._hidden_of.of(self.viewer_id))
        return await asyncio.shield(self._hidden)

    async def is_hidden(self, user_id: int) -> bool:
        return user_id in await self.hidden_users()

    def forget_hidden(self) -> None:
        """After a block or unblock by the viewer in this request."""
        self._hidden = None

    def forget_follow_state(self, user_id: int) -> None:
        """After a mutation changed edges or counts around user_id."""
        self.user_by_id.clear(user_id)
        self.followed_by_viewer.clear(user_id)
        self.follows_viewer.clear(user_id)
        self.requested_by_viewer.clear(user_id)
