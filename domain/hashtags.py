"""Hashtag pages: which live posts carry a tag, how many, and a viewer's page of them.

A post's tags are parsed once, at creation (`domain.text.hashtags_of`, stored normalised
in posts.hashtags); they enter the index in the transaction that makes the post READY
and leave it in the one that deletes it (both call `sync_post_tags`). So the index
and the counter only ever hold live READY posts, and `postCount` is exact: it counts
every live post with the tag, whoever may see it (as Instagram's count does), while a
page lists only what the viewer may see.

As on Instagram, hashtags in comments the post's own author writes count as the post's
too: `sync_post_tags` recomputes a post's rows from its caption and its author's
comments, and is what every write that changes them calls (the READY and delete
transactions, an author's comment added or deleted).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    String,
    any_,
    bindparam,
    exists,
    func,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.blocks import not_hidden
from domain.text import hashtags_of
from models import (
    Comment,
    Follow,
    Hashtag,
    Post,
    PostHashtag,
    PostStatus,
    User,
    table_of,
)

posts = table_of(Post)
comments = table_of(Comment)
users = table_of(User)
follows = table_of(Follow)
post_hashtags = table_of(PostHashtag)
hashtags = table_of(Hashtag)

_POST_ID = bindparam("post_id", type_=BigInteger)


# A post's tags, caption and its author's comments together, are at most this many (as
# a caption's alone, domain.posts.MAX_HASHTAGS; Instagram's limit per post): the
# caption's first, then each comment's, oldest first.
MAX_POST_TAGS = 30

_ADD = bindparam("add", type_=ARRAY(String(100)))
_REMOVE = bindparam("remove", type_=ARRAY(String(100)))
_synced_in = (
    insert(post_hashtags)
    .from_select(["tag", "post_id"], select(func.unnest(_ADD).column_valued("tag"), _POST_ID))
    .on_conflict_do_nothing()
    .returning(post_hashtags.c.tag, literal(1).label("delta"))
    .cte("synced_in")
)
_synced_out = (
    post_hashtags.delete()
    .where(post_hashtags.c.post_id == _POST_ID, post_hashtags.c.tag == any_(_REMOVE))
    .returning(post_hashtags.c.tag, literal(-1).label("delta"))
    .cte("synced_out")
)
_sync_changes = union_all(
    select(_synced_in.c.tag, _synced_in.c.delta), select(_synced_out.c.tag, _synced_out.c.delta)
).subquery("changes")
# Tags in and out in one statement, the counters moved in tag order (two such syncs, or
# one and a READY or delete transaction, then queue instead of deadlocking). A removed
# tag's counter row exists (it was indexed), so -1 only ever takes the update branch.
SYNC_POST = (
    insert(hashtags)
    .from_select(
        ["tag", "post_count"],
        select(_sync_changes.c.tag, _sync_changes.c.delta).order_by(_sync_changes.c.tag),
    )
    .on_conflict_do_update(
        index_elements=[hashtags.c.tag],
        set_={"post_count": hashtags.c.post_count + insert(hashtags).excluded.post_count},
    )
)


async def sync_post_tags(*, conn: AsyncConnection, post_id: int) -> None:
    """Make the post's index rows (and its tags' counts) match what it carries now: its
    caption's tags and those of its author's comments on it (first MAX_POST_TAGS), while
    it is READY and not deleted; none otherwise. In the caller's transaction, after its
    write: READY, delete, an author's comment added or deleted (comments by anyone else
    change nothing: do not call it for them, it locks the post row).

    The post row is locked first (FOR NO KEY UPDATE: comments' foreign-key checks go
    on), so two syncs of one post run one after the other, each reading what the
    other committed. Four statements, or two for a post that is not live.
    """
    post = (
        await conn.execute(
            select(posts.c.author_id, posts.c.hashtags, posts.c.status, posts.c.deleted_at)
            .where(posts.c.id == post_id)
            .with_for_update(key_share=True)  # FOR NO KEY UPDATE
        )
    ).one_or_none()
    if post is None:
        return
    wanted: dict[str, None] = {}
    if post.status == PostStatus.READY and post.deleted_at is None:
        wanted = dict.fromkeys(post.hashtags)
        texts = await conn.scalars(
            select(comments.c.text)
            .where(comments.c.post_id == post_id, comments.c.author_id == post.author_id)
            .order_by(comments.c.id)
        )
        for text in texts:
            wanted.update(dict.fromkeys(hashtags_of(text)))
    tags = list(wanted)[:MAX_POST_TAGS]
    indexed = set(
        await conn.scalars(select(post_hashtags.c.tag).where(post_hashtags.c.post_id == post_id))
    )
    add = [tag for tag in tags if tag not in indexed]
    remove = sorted(indexed.difference(tags))
    if add or remove:
        await conn.execute(SYNC_POST, {"add": add, "remove": remove, "post_id": post_id})


async def post_count(*, conn: AsyncConnection, tag: str) -> int:
    """Live READY posts carrying the tag (all of them, whoever may see them): one
    primary-key read of its counter; 0 for a tag nobody used."""
    found = await conn.scalar(select(hashtags.c.post_count).where(hashtags.c.tag == tag))
    return int(found or 0)


async def tag_posts_page(
    *, conn: AsyncConnection, tag: str, viewer_id: int | None, first: int, after: int | None
) -> list[Any]:
    """first + 1 posts carrying the tag that the viewer may see, newest first: live and
    READY (the index holds no others), by an author who is public, followed by the viewer
    or the viewer, and not hidden from the viewer by a block either way. A backward range
    scan of the tag's primary key (`post_id < cursor`), each row checked as it comes, so a
    page costs what it returns plus the hidden rows skipped."""
    visible_author = or_(
        users.c.is_private.is_(False),
        *(
            [
                users.c.id == viewer_id,
                exists().where(
                    follows.c.follower_id == viewer_id, follows.c.followee_id == users.c.id
                ),
            ]
            if viewer_id is not None
            else []
        ),
    )
    statement = (
        select(posts)
        .select_from(
            post_hashtags.join(posts, posts.c.id == post_hashtags.c.post_id).join(
                users, users.c.id == posts.c.author_id
            )
        )
        .where(
            post_hashtags.c.tag == tag,
            posts.c.status == PostStatus.READY,
            posts.c.deleted_at.is_(None),
            visible_author,
            not_hidden(viewer_id, posts.c.author_id),
        )
        .order_by(post_hashtags.c.post_id.desc())
        .limit(first + 1)
    )
    if after is not None:
        statement = statement.where(post_hashtags.c.post_id < after)
    return list((await conn.execute(statement)).all())
