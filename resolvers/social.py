"""Likes and comments: likePost, unlikePost, addComment, deleteComment, and Comment for
node(id:).

Each mutation: the post must be visible to the viewer (`resolvers.posts.load_post`:
READY or their own, private accounts, blocks), else NOT_FOUND; then one transaction
(which checks the block again, so a block committed meanwhile still wins); then, after
the commit, the engagement read side is told what changed.

A like or a comment also holds the viewer's row against blocks (`hold_against_blocks`)
before that check: a block being committed at the same moment either waits for the like
and then removes it with its clean-up, or commits first and the like sees it.
"""

from __future__ import annotations

from typing import Any

import strawberry
from sqlalchemy.ext.asyncio import AsyncConnection

from domain import comments as comment_domain
from domain import likes as like_domain
from domain import limits
from domain.blocks import blocked_either_way, hold_against_blocks
from domain.comments import CommentRecord
from domain.errors import DomainError, ErrorCode
from infra.ids import to_global_id
from resolvers.common import payload_pk, register_node
from resolvers.posts import load_post, visible_records
from schema.context import Info
from schema.errors import UserError
from schema.posts import DeletePayload, PostPayload
from schema.social import Comment, CommentPayload, build_comments, forget_comment_pages


def _post_not_found(field: str) -> DomainError:
    return DomainError(ErrorCode.NOT_FOUND, "Post not found.", field)


async def _visible_post_row(info: Info, post_id: int) -> Any | None:
    """The post's row when the viewer may see it, as `load_post` decides (READY or their
    own, private accounts, blocks), else None; without building the post (no engagement
    read before the transaction)."""
    record = (await visible_records(info, [post_id])).get(post_id)
    return record.post if record is not None else None


async def _visible_post(info: Info, post_id: int, field: str) -> Any:
    row = await _visible_post_row(info, post_id)
    if row is None:
        raise _post_not_found(field)
    return row


async def _refuse_if_blocked(
    conn: AsyncConnection,
    viewer_id: int,
    other_id: int,
    error: DomainError,
    *,
    hold: bool = False,
) -> None:
    """Inside the transaction: the visibility check before it read cached hidden sets,
    and a block may have committed since; one primary-key lookup closes that gap. With
    `hold` (the transaction writes onto the other's post), the viewer's row is first
    held against a block committing concurrently (`domain.blocks.hold_against_blocks`)."""
    if viewer_id == other_id:
        return
    if hold:
        await hold_against_blocks(conn=conn, user_id=viewer_id)
    if await blocked_either_way(conn=conn, a=viewer_id, b=other_id):
        raise error


async def _like(info: Info, post_id: strawberry.ID, *, liked: bool) -> PostPayload:
    viewer_id = info.context.require_viewer()
    shards = info.context.settings.counter_shards
    try:
        pk = payload_pk(post_id, "Post", "postId")
        author_id = (await _visible_post(info, pk, "postId")).author_id
        async with info.context.engine.begin() as conn:
            await _refuse_if_blocked(
                conn, viewer_id, author_id, _post_not_found("postId"), hold=liked
            )
            if liked:
                await like_domain.like(
                    conn=conn,
                    post_id=pk,
                    post_author_id=author_id,
                    user_id=viewer_id,
                    shards=shards,
                )
            else:
                await like_domain.unlike(conn=conn, post_id=pk, user_id=viewer_id, shards=shards)
    except DomainError as exc:
        return PostPayload(errors=[UserError.from_error(exc)])
    # Also when nothing changed (a repeated tap): the hook then repairs what a hook
    # that never ran (a process gone after its commit) left cached.
    await info.context.resources.engagement.like_changed(pk, viewer_id, liked=liked)
    return PostPayload(post=await load_post(info, pk))


async def like_post(info: Info, post_id: strawberry.ID) -> PostPayload:
    await limits.hit(info.context, limits.LIKE, info.context.require_viewer())
    return await _like(info, post_id, liked=True)


async def unlike_post(info: Info, post_id: strawberry.ID) -> PostPayload:
    return await _like(info, post_id, liked=False)


async def add_comment(info: Info, post_id: strawberry.ID, text: str) -> CommentPayload:
    viewer_id = info.context.require_viewer()
    await limits.hit(info.context, limits.COMMENT, viewer_id)
    try:
        pk = payload_pk(post_id, "Post", "postId")
        clean = comment_domain.check_comment_text(text)
        author_id = (await _visible_post(info, pk, "postId")).author_id
        async with info.context.engine.begin() as conn:
            await _refuse_if_blocked(
                conn, viewer_id, author_id, _post_not_found("postId"), hold=True
            )
            row = await comment_domain.add_comment(
                conn=conn,
                post_id=pk,
                post_author_id=author_id,
                author_id=viewer_id,
                text=clean,
                shards=info.context.settings.counter_shards,
            )
    except DomainError as exc:
        return CommentPayload(errors=[UserError.from_error(exc)])
    await info.context.resources.engagement.comments_changed(pk)
    forget_comment_pages(info)
    [comment] = await build_comments(info, [row])
    return CommentPayload(comment=comment)


async def _visible_comment(info: Info, comment_id: int) -> tuple[CommentRecord, Any] | None:
    """The comment and its post's row, when the viewer can see both and the comment's
    author is not hidden from them; None otherwise (the same answer as a missing one)."""
    async with info.context.engine.connect() as conn:
        row = await comment_domain.comment_by_id(conn=conn, comment_id=comment_id)
    if row is None or await info.context.loaders.is_hidden(row.author_id):
        return None
    post = await _visible_post_row(info, row.post_id)
    return (row, post) if post is not None else None


async def delete_comment(info: Info, id: strawberry.ID) -> DeletePayload:
    viewer_id = info.context.require_viewer()
    not_found = DomainError(ErrorCode.NOT_FOUND, "Comment not found.", "id")
    try:
        pk = payload_pk(id, "Comment", "id")
        found = await _visible_comment(info, pk)
        if found is None:
            raise not_found
        row, post = found
        async with info.context.engine.begin() as conn:
            for other_id in {post.author_id, row.author_id}:
                await _refuse_if_blocked(conn, viewer_id, other_id, not_found)
            deleted = await comment_domain.delete_comment(
                conn=conn,
                comment=row,
                post_author_id=post.author_id,
                viewer_id=viewer_id,
                shards=info.context.settings.counter_shards,
            )
        if not deleted:  # a concurrent delete won: it is gone either way
            raise not_found
    except DomainError as exc:
        return DeletePayload(errors=[UserError.from_error(exc)])
    await info.context.resources.engagement.comments_changed(row.post_id)
    forget_comment_pages(info)
    return DeletePayload(deleted_id=strawberry.ID(to_global_id("Comment", pk)))


async def load_comment(info: Info, comment_id: int) -> Comment | None:
    """node(id:) of a Comment: null unless the viewer can see it."""
    found = await _visible_comment(info, comment_id)
    if found is None:
        return None
    comments = await build_comments(info, [found[0]])
    return comments[0] if comments else None


register_node("Comment", load_comment)
