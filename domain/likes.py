"""Likes: idempotent like and unlike, and the viewer's likes among a page of posts
(issue 8, point 1).

A like is a row (post_id, user_id) whose primary key makes a second like a no-op
(INSERT ... ON CONFLICT DO NOTHING): a double tap is one like. The post's like count
moves in the same transaction, and only when a row was really inserted or deleted, so
it never drifts from the rows (see `domain.counters` for why it is sharded). The count's
upsert is the transaction's last statement: a shard's row lock is then held from the
upsert to the commit, no longer.

A real like by someone other than the author records a LIKE notification in the same
transaction; a like, unlike and like again inserts twice, and the notifications side
keeps one per (recipient, kind, actor, post).

Who may like what (the post visible to the viewer, no block either way) is checked by
the caller before, and the block again inside the transaction, after the liker's row
is held against a block committing meanwhile (`domain.blocks.hold_against_blocks`).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import any_, delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.counters import COUNTER_SHARDS, add_to_counts, shard_of
from domain.notifications import NotificationKind, record_notification
from domain.outbox import invalidation, write_invalidation
from models import IDS, Like, Post, table_of

likes = table_of(Like)
posts = table_of(Post)


async def like(
    *,
    conn: AsyncConnection,
    post_id: int,
    post_author_id: int,
    user_id: int,
    shards: int = COUNTER_SHARDS,
) -> bool:
    """user_id likes post_id; True when this made a new like (False: already liked).

    `shards` is the number of counter rows per post; only the like-burst benchmark
    passes anything but the default (1, to measure the single hot row it replaces)."""
    inserted = await conn.execute(
        insert(likes)
        .values(post_id=post_id, user_id=user_id)
        .on_conflict_do_nothing(index_elements=[likes.c.post_id, likes.c.user_id])
        .returning(likes.c.post_id)
    )
    if inserted.first() is None:
        return False
    # The cached count and the liker's liked set go after the commit (`domain.outbox`),
    # on the notification's row when there is one: one outbox row per like.
    stale = invalidation(likes=[(post_id, user_id)])
    notified = post_author_id != user_id and await record_notification(
        conn=conn,
        kind=NotificationKind.LIKE,
        actor_id=user_id,
        recipient_ids=[post_author_id],
        post_id=post_id,
        invalidate=stale,
    )
    if not notified:
        await write_invalidation(conn=conn, likes=[(post_id, user_id)])
    # Last: the shard's row lock is then held for the commit only.
    await add_to_counts(conn=conn, post_id=post_id, shard=shard_of(user_id, shards), likes=1)
    return True


async def unlike(
    *, conn: AsyncConnection, post_id: int, user_id: int, shards: int = COUNTER_SHARDS
) -> bool:
    """user_id no longer likes post_id; True when a like was removed (False: there was
    none). The LIKE notification stays, as it does on Instagram."""
    deleted = await conn.execute(
        delete(likes)
        .where(likes.c.post_id == post_id, likes.c.user_id == user_id)
        .returning(likes.c.post_id)
    )
    if deleted.first() is None:
        return False
    await write_invalidation(conn=conn, likes=[(post_id, user_id)])
    await add_to_counts(conn=conn, post_id=post_id, shard=shard_of(user_id, shards), likes=-1)
    return True


async def remove_likes_on_posts_of(
    *, conn: AsyncConnection, author_id: int, user_id: int, shards: int = COUNTER_SHARDS
) -> list[int]:
    """A block: user_id's likes on author_id's posts go, counts with them (as Instagram
    removes a blocked account's likes from the blocker's posts). Returns the posts whose
    likes changed."""
    deleted = await conn.execute(
        delete(likes)
        .where(
            likes.c.user_id == user_id,
            likes.c.post_id.in_(select(posts.c.id).where(posts.c.author_id == author_id)),
        )
        .returning(likes.c.post_id)
    )
    post_ids = sorted(deleted.scalars())
    await write_invalidation(conn=conn, likes=[(post_id, user_id) for post_id in post_ids])
    for post_id in post_ids:  # in post order: two blocks at once cannot deadlock on shards
        await add_to_counts(conn=conn, post_id=post_id, shard=shard_of(user_id, shards), likes=-1)
    return post_ids


async def liked_among(*, conn: AsyncConnection, user_id: int, post_ids: Sequence[int]) -> set[int]:
    """The posts among post_ids that user_id likes: one statement for a whole page."""
    if not post_ids:
        return set()
    rows = await conn.execute(
        select(likes.c.post_id).where(likes.c.user_id == user_id, likes.c.post_id == any_(IDS)),
        {"ids": list(post_ids)},
    )
    return set(rows.scalars())


async def recent_likes(*, conn: AsyncConnection, user_id: int, limit: int) -> list[int]:
    """Ids of the posts user_id liked, highest (newest) post id first, at most `limit`:
    one range of the (user_id, post_id DESC) index."""
    rows = await conn.execute(
        select(likes.c.post_id)
        .where(likes.c.user_id == user_id)
        .order_by(likes.c.post_id.desc())
        .limit(limit)
    )
    return list(rows.scalars())
