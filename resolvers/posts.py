"""Posts: create with upload targets, complete, read, delete."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import strawberry
from sqlalchemy import select

from domain import limits
from domain import posts as post_domain
from domain.errors import DomainError, ErrorCode
from domain.outbox import best_effort
from domain.records import PostRecord
from infra.ids import to_global_id
from infra.storage import IncompleteUpload, ObjectTooLarge, Storage, UploadNotFound
from models import PostStatus, table_of
from models.posts import Media as MediaModel
from resolvers.common import payload_pk, query_pk, register_node
from schema.context import Info
from schema.errors import UserError
from schema.posts import (
    CreatePostInput,
    CreatePostPayload,
    DeletePayload,
    Media,
    Post,
    PostPayload,
    UploadTarget,
    build_posts,
)
from schema.users import can_see_private_content_of
from workers.jobs import enqueue_post_deleted, enqueue_process_post

log = logging.getLogger(__name__)


def visible(row: Any, viewer_id: int | None) -> bool:
    """Others see READY posts only; the author sees every state of their own."""
    return row is not None and (row.status == PostStatus.READY or row.author_id == viewer_id)


async def load_post(info: Info, post_id: int) -> Post | None:
    """The post if the viewer may see it, else None (missing, deleted, hidden: alike)."""
    return (await load_posts(info, [post_id])).get(post_id)


async def visible_records(info: Info, post_ids: list[int]) -> dict[int, PostRecord]:
    """The records (row and media) of the posts among these the viewer may see: READY
    or their own, private accounts and blocks by `can_see_private_content_of`; the one
    place that rule lives (`load_posts` builds from it, mutations check with it without
    building). One loader batch."""
    viewer_id = info.context.viewer_id
    records = await info.context.loaders.post_by_id.load_many(list(dict.fromkeys(post_ids)))
    candidates = [r for r in records if r is not None and visible(r.post, viewer_id)]
    allowed = await asyncio.gather(
        *(can_see_private_content_of(info, record.post.author_id) for record in candidates)
    )
    return {record.post.id: record for record, ok in zip(candidates, allowed, strict=True) if ok}


async def load_posts(info: Info, post_ids: list[int]) -> dict[int, Post]:
    """The posts among these the viewer may see (`visible_records`), built together: one
    loader batch, one `build_posts` (one engagement read, one author batch)."""
    shown = await visible_records(info, post_ids)
    built = await build_posts(info, [(record.post, record.media) for record in shown.values()])
    return {post.pk: post for post in built}


async def load_media(info: Info, media_id: int) -> Media | None:
    media = table_of(MediaModel)
    async with info.context.engine.connect() as conn:
        row = (await conn.execute(select(media).where(media.c.id == media_id))).one_or_none()
    if row is None:
        return None
    if row.story_id is not None:  # a story's media item follows its story's visibility
        from resolvers.stories import load_story

        story = await load_story(info, row.story_id)
        return story.media if story is not None else None
    post = await load_post(info, row.post_id)
    if post is None:
        return None
    # The post's own item: built by `Post.build`, the one rule for when a url shows.
    return next((item for item in post.media if item.row.id == media_id), None)


register_node("Post", load_post)
register_node("Media", load_media)


async def post(info: Info, id: strawberry.ID) -> Post | None:
    return await load_post(info, query_pk(id, "Post"))


async def upload_targets(info: Info, media: list[Any]) -> list[UploadTarget]:
    """Fresh upload targets for these media rows of a PENDING post or story."""
    settings = info.context.settings
    storage = info.context.storage
    targets = []
    for row in media:
        limit = settings.photo_max_bytes if row.kind == "PHOTO" else settings.video_max_bytes
        multipart = row.kind == "VIDEO" and row.byte_size > settings.multipart_threshold_bytes
        target = await storage.upload_target(
            row.original_key,
            content_type=row.content_type,
            max_bytes=min(limit, row.byte_size),
            declared_bytes=row.byte_size,
            expires_in=settings.upload_ttl_seconds,
            multipart=multipart,
            part_size=settings.multipart_part_bytes if multipart else None,
        )
        if target.upload_id is not None:
            async with info.context.engine.begin() as conn:
                if row.upload_id is not None:
                    await storage.abort_multipart(row.original_key, row.upload_id)
                await post_domain.set_upload_id(
                    conn=conn, media_id=row.id, upload_id=target.upload_id
                )
        targets.append(UploadTarget.build(row.id, target))
    return targets


async def create_post(info: Info, input: CreatePostInput) -> CreatePostPayload:
    viewer_id = info.context.require_viewer()
    await limits.hit(info.context, limits.CREATE_POST, viewer_id)
    items = [post_domain.MediaSpec(m.content_type, int(m.byte_size)) for m in input.media]
    errors = post_domain.check_post_input(
        caption=input.caption,
        items=items,
        idempotency_key=input.idempotency_key,
        settings=info.context.settings,
    )
    if errors:
        return CreatePostPayload(errors=[UserError.from_error(e) for e in errors])
    try:
        async with info.context.engine.begin() as conn:
            created = await post_domain.create_post(
                conn=conn,
                author_id=viewer_id,
                caption=input.caption,
                items=items,
                idempotency_key=input.idempotency_key,
            )
    except DomainError as exc:
        return CreatePostPayload(errors=[UserError.from_error(exc)])
    if created.post.author_id != viewer_id:  # pragma: no cover - keys are per author
        raise RuntimeError("idempotency key matched another author's post")
    uploads = (
        await upload_targets(info, created.media)
        if created.post.status == PostStatus.PENDING
        else []
    )
    [post] = await build_posts(info, [(created.post, created.media)])
    return CreatePostPayload(post=post, uploads=uploads)


async def complete_upload(info: Info, post_id: strawberry.ID) -> PostPayload:
    """Author only. Checks every object is in the store, then hands over to the worker;
    a repeat on a post already PROCESSING or READY changes nothing."""
    viewer_id = info.context.require_viewer()
    storage = info.context.storage
    try:
        pk = payload_pk(post_id, "Post", "postId")
        async with info.context.engine.connect() as conn:
            row = post_domain.owned_post(
                await post_domain.post_row(conn=conn, post_id=pk), viewer_id
            )
            media = await post_domain.media_rows(conn=conn, post_ids=[pk])
        if row.status == PostStatus.PENDING:
            for item in media:
                if item.upload_id is not None:
                    await complete_parts(storage, item)
                if await storage.head(item.original_key) is None:
                    raise DomainError(
                        ErrorCode.INVALID_INPUT,
                        f"Media {item.position + 1} has not been uploaded yet.",
                        field="postId",
                    )
            async with info.context.engine.begin() as conn:
                row, moved = await post_domain.hand_to_worker(conn=conn, post_id=pk)
            if moved:  # at once; the committed outbox row is the guarantee
                await best_effort(
                    enqueue_process_post(info.context.jobs, pk, attempt=1), f"post {pk}: processing"
                )
    except DomainError as exc:
        if exc.code is ErrorCode.FORBIDDEN:  # raised only once the id was parsed
            exc = await _forbidden_or_missing(info, exc, pk)
        return PostPayload(errors=[UserError.from_error(exc)])
    [view] = await build_posts(info, [(row, media)])
    return PostPayload(post=view)


async def complete_parts(storage: Storage, item: Any) -> None:
    """Assemble a post's or story's multipart upload from the parts the store has (never
    the client's list)."""
    number = item.position + 1
    try:
        await storage.complete_multipart(
            item.original_key, item.upload_id, max_bytes=item.byte_size, exact=True
        )
    except ObjectTooLarge as exc:
        raise DomainError(
            ErrorCode.TOO_LARGE, f"Media {number} is larger than declared.", field="postId"
        ) from exc
    except (IncompleteUpload, UploadNotFound) as exc:
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            f"Media {number} has not been fully uploaded yet.",
            field="postId",
        ) from exc


async def _forbidden_or_missing(info: Info, error: DomainError, post_id: int) -> DomainError:
    """Another's post is FORBIDDEN to act on, but one whose author a block hides from the
    viewer (either way) is not there at all: NOT_FOUND, as for a missing post."""
    async with info.context.engine.connect() as conn:
        row = await post_domain.post_row(conn=conn, post_id=post_id)
    if row is None or await info.context.loaders.is_hidden(row.author_id):
        return DomainError(ErrorCode.NOT_FOUND, "No such post.", field=error.field)
    return error


async def delete_post(info: Info, id: strawberry.ID) -> DeletePayload:
    viewer_id = info.context.require_viewer()
    try:
        pk = payload_pk(id, "Post", "id")
        async with info.context.engine.begin() as conn:
            await post_domain.delete_post(conn=conn, post_id=pk, viewer_id=viewer_id)
    except DomainError as exc:
        if exc.code is ErrorCode.FORBIDDEN:  # raised only once the id was parsed
            exc = await _forbidden_or_missing(info, exc, pk)
        if exc.field == "postId":
            exc.field = "id"
        return DeletePayload(errors=[UserError.from_error(exc)])
    # At once, best effort; the committed outbox row is the guarantee (domain.outbox).
    await best_effort(
        info.context.home_feed.post_deleted(viewer_id, pk), f"deleted post {pk}: feeds"
    )
    info.context.loaders.post_by_id.clear(pk)
    info.context.loaders.user_by_id.clear(viewer_id)
    await best_effort(
        enqueue_post_deleted(info.context.jobs, pk, viewer_id), f"deleted post {pk}: clean-up"
    )
    return DeletePayload(deleted_id=strawberry.ID(to_global_id("Post", pk)))
