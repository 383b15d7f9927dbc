"""Which upload targets are still open: one upload of a PENDING post or story only.

An upload target names a media row's `original_key`. It takes a body while the row's
owner (a post, or a story) is PENDING and, for a post, not deleted, or for a story,
still within its deadline; once completeUpload moved the owner on, or deletePost (or
the story cleanup) retired it, the target is closed. Before completeUpload, a second
body to the same target replaces the first (a client retrying an upload whose answer
it lost): the owner is still PENDING and nothing has read the bytes yet.

The local store asks `PendingUploadGate` on each PUT (infra/storage.py's
`UploadGate`); S3 cannot ask us, so docs/uploads-hardening.md says what holds there.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain import stories as story_domain
from models import Media, Post, PostStatus, Story, table_of

posts = table_of(Post)
stories = table_of(Story)
media = table_of(Media)

_MAX_ID = 2**63 - 1


def media_id_of(key: str) -> int | None:
    """The media id an upload key ends with (`originals/<post>/<media>` and
    `originals/stories/<story>/<media>`), or None when it ends with none."""
    last = key.rsplit("/", 1)[-1]
    if not (last.isascii() and last.isdigit()) or len(last) > 19:
        return None
    value = int(last)
    return value if 0 < value <= _MAX_ID else None


async def lock_open_upload(*, conn: AsyncConnection, key: str, story_ttl: timedelta) -> int | None:
    """The declared byte size of the media item whose upload target is `key` while the
    target is open, with its owner's row locked FOR SHARE until the transaction ends (so
    completeUpload's and deletePost's updates wait for an upload being moved into place,
    and cannot come between this check and it); None when the target is closed or
    unknown."""
    media_id = media_id_of(key)
    if media_id is None:
        return None
    item = (
        await conn.execute(
            select(media.c.post_id, media.c.story_id, media.c.byte_size).where(
                media.c.id == media_id, media.c.original_key == key
            )
        )
    ).one_or_none()
    if item is None:
        return None
    if item.post_id is not None:
        owner = (
            select(posts.c.id)
            .where(
                posts.c.id == item.post_id,
                posts.c.status == PostStatus.PENDING,
                posts.c.deleted_at.is_(None),
            )
            .with_for_update(read=True)
        )
    else:
        owner = (
            select(stories.c.id)
            .where(
                stories.c.id == item.story_id,
                stories.c.status == PostStatus.PENDING,
                # The stories' own rule: past it, the cleanup may have taken its objects.
                story_domain._before_deadline(story_ttl),
            )
            .with_for_update(read=True)
        )
    if (await conn.execute(owner)).one_or_none() is None:
        return None
    return int(item.byte_size)


class PendingUploadGate:
    """infra.storage.UploadGate for the app: `lock_open_upload` in a transaction of the
    app's engine, held for the block (the local route moves the body into place inside
    it)."""

    @contextlib.asynccontextmanager
    async def hold(self, request: Any, key: str) -> AsyncIterator[int | None]:
        engine: AsyncEngine = request.app.state.resources.engine
        ttl = story_domain.story_ttl(request.app.state.settings)
        async with engine.begin() as conn:
            yield await lock_open_upload(conn=conn, key=key, story_ttl=ttl)


async def deleted_at(*, conn: AsyncConnection, post_id: int) -> datetime | None:
    """When the post was deleted (or abandoned), None while it is not: every upload URL
    of a post was signed before then, so all have expired `upload_ttl_seconds` later."""
    value: datetime | None = await conn.scalar(
        select(posts.c.deleted_at).where(posts.c.id == post_id)
    )
    return value
