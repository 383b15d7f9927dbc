"""Comments: the text rules, adding and deleting, and reading a post's comments oldest
first (issue 8, point 2).

- Text is trimmed, then 1 to 2,200 characters (code points, as Instagram counts them);
  a text with nothing visible (whitespace and zero-width characters only), a NUL
  character (which PostgreSQL cannot store) and a lone surrogate (not UTF-8) are
  INVALID_INPUT on the field "text".
- Adding one, in its transaction: the comment row, +1 in a shard of the post's comment
  count (`domain.counters`, last, so its row lock is held for the commit only), a
  COMMENT notification to the post's author, and a MENTION to every existing user named
  with @ (`domain.text.mentioned_user_ids`: never oneself, never someone a block stands
  between with the commenter, either way; the delivery job then also skips those who
  cannot see the post, `domain.notifications.deliver`). The post's author named in the
  comment gets both: COMMENT says "someone commented on your post", MENTION "someone
  addressed you", and each kind reaches them once.
- Deleting one: its author or the post's author; anyone else who can see it gets
  FORBIDDEN. Seeing it (the post visible, no block with its author) is the caller's
  check, made before, since hidden things answer NOT_FOUND, never FORBIDDEN.
- Reading: ids are time-ordered (next_snowflake), so a post's comments page oldest first
  on the (post_id, id) index with the id alone as the cursor. Comments by accounts hidden
  from the viewer are left out in SQL (`<> ALL(hidden)`), so pages stay full.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, all_, bindparam, delete, func, insert, select, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.counters import COUNTER_SHARDS, add_to_counts, shard_of
from domain.errors import DomainError, ErrorCode
from domain.hashtags import sync_post_tags
from domain.notifications import NotificationKind, record_notification
from domain.outbox import write_invalidation
from domain.text import hashtags_of, mentioned_user_ids
from models import IDS, Comment, Post, table_of

comments = table_of(Comment)
posts = table_of(Post)

MAX_COMMENT_LENGTH = 2200

# Authors to leave out, bound as one array (one prepared statement whatever its length).
HIDDEN = bindparam("hidden", type_=ARRAY(BigInteger))


@dataclass(frozen=True, slots=True)
class CommentRecord:
    """One comment as the API shows it (orjson serialises it as it is, for caches)."""

    id: int
    post_id: int
    author_id: int
    text: str
    created_at: datetime


COLUMNS = (
    comments.c.id,
    comments.c.post_id,
    comments.c.author_id,
    comments.c.text,
    comments.c.created_at,
)


def _invisible(char: str) -> bool:
    # Whitespace, and format characters (category Cf: the zero-width space, joiners,
    # word joiner, byte order mark...) that `str.strip` keeps but nobody can see.
    return char.isspace() or unicodedata.category(char) == "Cf"


def check_comment_text(text: str) -> str:
    """The text to store (trimmed), or INVALID_INPUT on the field "text": a NUL (which
    PostgreSQL cannot store), a lone surrogate (a JSON "\\ud800" escape: not UTF-8, so the
    driver would refuse it), nothing visible, or too long."""
    if "\x00" in text:
        raise DomainError(ErrorCode.INVALID_INPUT, "Text cannot contain NUL characters.", "text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DomainError(
            ErrorCode.INVALID_INPUT, "Text must be valid Unicode (no lone surrogates).", "text"
        ) from exc
    trimmed = text.strip()
    if len(trimmed) > MAX_COMMENT_LENGTH:  # first: the scan below then reads 2,200 at most
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            f"A comment has at most {MAX_COMMENT_LENGTH:,} characters.",
            "text",
        )
    if all(_invisible(char) for char in trimmed):
        raise DomainError(ErrorCode.INVALID_INPUT, "A comment cannot be empty.", "text")
    return trimmed


async def add_comment(
    *,
    conn: AsyncConnection,
    post_id: int,
    post_author_id: int,
    author_id: int,
    text: str,
    shards: int = COUNTER_SHARDS,
) -> CommentRecord:
    """A new comment by author_id (text already through `check_comment_text`), counted
    and notified in the caller's transaction."""
    row = (
        await conn.execute(
            insert(comments)
            .values(post_id=post_id, author_id=author_id, text=text)
            .returning(*COLUMNS)
        )
    ).one()
    comment = CommentRecord(*row)
    if post_author_id != author_id:
        await record_notification(
            conn=conn,
            kind=NotificationKind.COMMENT,
            actor_id=author_id,
            recipient_ids=[post_author_id],
            post_id=post_id,
            comment_id=comment.id,
        )
    mentioned = await mentioned_user_ids(conn=conn, author_id=author_id, text=text)
    if mentioned:
        await record_notification(
            conn=conn,
            kind=NotificationKind.MENTION,
            actor_id=author_id,
            recipient_ids=mentioned,
            post_id=post_id,
            comment_id=comment.id,
        )
    if author_id == post_author_id and hashtags_of(text):
        # The author's own comment tags the post, as on Instagram (`domain.hashtags`).
        await sync_post_tags(conn=conn, post_id=post_id)
    # The cached counts and first comments go after the commit (`domain.outbox`).
    await write_invalidation(conn=conn, comments=[post_id])
    # Last: the shard's row lock is then held for the commit only.
    await add_to_counts(conn=conn, post_id=post_id, shard=shard_of(comment.id, shards), comments=1)
    return comment


async def comment_by_id(*, conn: AsyncConnection, comment_id: int) -> CommentRecord | None:
    row = (await conn.execute(select(*COLUMNS).where(comments.c.id == comment_id))).first()
    return CommentRecord(*row) if row is not None else None


async def delete_comment(
    *,
    conn: AsyncConnection,
    comment: CommentRecord,
    post_author_id: int,
    viewer_id: int,
    shards: int = COUNTER_SHARDS,
) -> bool:
    """Delete a comment the viewer can see: theirs, or on their post (else FORBIDDEN).
    False when it was already gone (a concurrent delete), and nothing is counted twice."""
    if viewer_id not in (comment.author_id, post_author_id):
        raise DomainError(
            ErrorCode.FORBIDDEN,
            "Only the comment's author or the post's author can delete it.",
            "id",
        )
    deleted = await conn.execute(
        delete(comments).where(comments.c.id == comment.id).returning(comments.c.id)
    )
    if deleted.first() is None:
        return False
    if comment.author_id == post_author_id and hashtags_of(comment.text):
        await sync_post_tags(conn=conn, post_id=comment.post_id)
    await write_invalidation(conn=conn, comments=[comment.post_id])
    await add_to_counts(
        conn=conn, post_id=comment.post_id, shard=shard_of(comment.id, shards), comments=-1
    )
    return True


async def remove_comments_on_posts_of(
    *, conn: AsyncConnection, author_id: int, user_id: int, shards: int = COUNTER_SHARDS
) -> list[int]:
    """A block: user_id's comments on author_id's posts go, counts with them (as Instagram
    removes a blocked account's comments from the blocker's posts; the blocker could no
    longer see them to delete them). Returns the posts whose comments changed."""
    deleted = await conn.execute(
        delete(comments)
        .where(
            comments.c.author_id == user_id,
            comments.c.post_id.in_(select(posts.c.id).where(posts.c.author_id == author_id)),
        )
        .returning(comments.c.post_id, comments.c.id)
    )
    taken = Counter((post_id, shard_of(comment_id, shards)) for post_id, comment_id in deleted)
    await write_invalidation(conn=conn, comments=[post_id for post_id, _ in taken])
    # One upsert per shard, in (post, shard) order: two such cleanups at once lock the
    # shard rows in the same order and cannot deadlock.
    for (post_id, shard), count in sorted(taken.items()):
        await add_to_counts(conn=conn, post_id=post_id, shard=shard, comments=-count)
    return sorted({post_id for post_id, _ in taken})


async def first_comments(
    *,
    conn: AsyncConnection,
    post_ids: Sequence[int],
    limit: int,
    hidden: Collection[int] = (),
    after: int | None = None,
) -> dict[int, list[CommentRecord]]:
    """Each post's oldest `limit` comments (without `hidden` authors'; after the comment
    id `after` when given), oldest first, for a whole page of posts in one statement: a
    LATERAL join runs one short range of the (post_id, id) index per post. Every post
    asked for has an entry."""
    if not post_ids:
        return {}
    posts = func.unnest(IDS).table_valued("post_id").render_derived(name="page")
    query = select(*COLUMNS).where(
        comments.c.post_id == posts.c.post_id, comments.c.author_id != all_(HIDDEN)
    )
    if after is not None:
        query = query.where(comments.c.id > after)
    oldest = query.order_by(comments.c.id).limit(limit).lateral("oldest")
    rows = await conn.execute(
        select(oldest).select_from(posts.join(oldest, true())),
        {"ids": list(post_ids), "hidden": list(hidden)},
    )
    found: dict[int, list[CommentRecord]] = {post_id: [] for post_id in post_ids}
    for row in rows:
        found[row.post_id].append(CommentRecord(*row))
    for page in found.values():
        page.sort(key=lambda comment: comment.id)
    return found
