"""The PostgreSQL side of the home feed: who gets a post, and the feed rebuilt from
the source of truth when Redis does not have it."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from domain import outbox as outbox_kinds
from models import Follow, Post, PostStatus, User, table_of

posts = table_of(Post)
follows = table_of(Follow)
users = table_of(User)

# The outbox lives in `domain.outbox`; the READY transition writes its fan-out row here.
FAN_OUT = outbox_kinds.FAN_OUT
unsent_events = outbox_kinds.unsent_events
mark_sent = outbox_kinds.mark_sent


async def write_fan_out_event(*, conn: AsyncConnection, post_id: int, author_id: int) -> None:
    """Called by the READY transition, in its transaction: the post will be fanned out.
    `ready_at` (epoch seconds) times the fan-out's lag (`instagraph_fan_out_lag_seconds`)."""
    payload = {"post_id": post_id, "author_id": author_id, "ready_at": time.time()}
    await outbox_kinds.write_event(conn=conn, kind=FAN_OUT, payload=payload)


async def follower_batch(
    *, conn: AsyncConnection, author_id: int, after_edge: int | None, limit: int
) -> list[Any]:
    """The next keyset batch of an author's followers (edge id descending)."""
    statement = (
        select(follows.c.follower_id, follows.c.id)
        .where(follows.c.followee_id == author_id)
        .order_by(follows.c.id.desc())
        .limit(limit)
    )
    if after_edge is not None:
        statement = statement.where(follows.c.id < after_edge)
    return list((await conn.execute(statement)).all())


def _visible_to(viewer_id: int) -> Any:
    followed = select(follows.c.followee_id).where(follows.c.follower_id == viewer_id)
    return and_(
        or_(posts.c.author_id == viewer_id, posts.c.author_id.in_(followed)),
        posts.c.status == PostStatus.READY,
        posts.c.deleted_at.is_(None),
    )


async def home_feed_ids(
    *, conn: AsyncConnection, viewer_id: int, below: int | None, limit: int
) -> list[int]:
    """Newest READY post ids of the viewer and everyone they follow, below a cursor:
    the rebuild of a missing feed, and the continuation past what Redis holds."""
    statement = (
        select(posts.c.id).where(_visible_to(viewer_id)).order_by(posts.c.id.desc()).limit(limit)
    )
    if below is not None:
        statement = statement.where(posts.c.id < below)
    return [row[0] for row in await conn.execute(statement)]


async def celebrity_followees(
    *, conn: AsyncConnection, viewer_id: int, threshold: int
) -> list[int]:
    """Followed accounts at or above the threshold: their posts are pulled at read time."""
    rows = await conn.execute(
        select(follows.c.followee_id)
        .join(users, users.c.id == follows.c.followee_id)
        .where(follows.c.follower_id == viewer_id, users.c.follower_count >= threshold)
    )
    return [row[0] for row in rows]


async def recent_post_ids(*, conn: AsyncConnection, author_id: int, limit: int) -> list[int]:
    rows = await conn.execute(
        select(posts.c.id)
        .where(
            posts.c.author_id == author_id,
            posts.c.status == PostStatus.READY,
            posts.c.deleted_at.is_(None),
        )
        .order_by(posts.c.id.desc())
        .limit(limit)
    )
    return [row[0] for row in rows]


async def post_for_fan_out(*, conn: AsyncConnection, post_id: int) -> Any:
    """The post and its author's follower count, if it is READY and not deleted."""
    return (
        await conn.execute(
            select(posts.c.id, posts.c.author_id, users.c.follower_count)
            .join(users, users.c.id == posts.c.author_id)
            .where(
                posts.c.id == post_id,
                posts.c.status == PostStatus.READY,
                posts.c.deleted_at.is_(None),
            )
        )
    ).one_or_none()
