"""Stories: create with an upload target, complete, mark seen, the tray, node(id).

Uploads reuse the post pipeline as is: the upload target and multipart completion
helpers of `resolvers.posts`, and the worker's verify-and-render step.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import strawberry

from domain import posts as post_domain
from domain import stories as story_domain
from domain.errors import DomainError, ErrorCode
from domain.outbox import best_effort
from domain.stories import StoryRecord
from models import PostStatus
from resolvers.common import payload_pk, register_node
from resolvers.posts import complete_parts, upload_targets
from schema.context import Info
from schema.errors import UserError
from schema.posts import MediaInput
from schema.users import User, can_see_private_content_of
from workers.jobs import enqueue_process_story

log = logging.getLogger(__name__)


def _not_found() -> DomainError:
    return DomainError(ErrorCode.NOT_FOUND, "No such story.", field="storyId")


async def _can_see(info: Info, record: StoryRecord | None) -> bool:
    """The author sees every live story of theirs; others see READY ones (expiry is
    filtered in SQL) unless a block hides the author or the account is private and
    they are not an approved follower."""
    if record is None:
        return False
    if record.author_id == info.context.viewer_id:
        return True
    if not record.ready or await info.context.loaders.is_hidden(record.author_id):
        return False
    return await can_see_private_content_of(info, record.author_id)


async def _read(info: Info, story_id: int) -> StoryRecord | None:
    async with info.context.engine.connect() as conn:
        found = await story_domain.live_stories_by_ids(
            conn=conn,
            story_ids=[story_id],
            viewer_id=info.context.viewer_id,
            ttl=story_domain.story_ttl(info.context.settings),
        )
    return found.get(story_id)


async def _build(info: Info, record: StoryRecord) -> Story | None:
    author = await info.context.loaders.user_by_id.load(record.author_id)
    return Story.build(record, author) if author is not None else None


async def load_story(info: Info, story_id: int) -> Story | None:
    """A story the viewer may see, else None (missing, expired, hidden: all alike)."""
    record = await _read(info, story_id)
    if not await _can_see(info, record):
        return None
    assert record is not None  # _can_see said so
    return await _build(info, record)


register_node("Story", load_story)


async def stories_tray(info: Info) -> list[StoryReel]:
    viewer_id = info.context.require_viewer()
    async with info.context.engine.connect() as conn:
        records = await story_domain.tray_stories(
            conn=conn, viewer_id=viewer_id, ttl=story_domain.story_ttl(info.context.settings)
        )
    reels = story_domain.order_reels(records, viewer_id)
    authors = await info.context.loaders.user_by_id.load_many([r.author_id for r in reels])
    return [
        StoryReel(
            author=User.from_row(author),
            stories=[Story.build(record, author) for record in reel.stories],
            has_unseen=reel.has_unseen,
        )
        for reel, author in zip(reels, authors, strict=True)
        if author is not None
    ]


async def create_story(info: Info, media: MediaInput) -> StoryPayload:
    viewer_id = info.context.require_viewer()
    spec = post_domain.MediaSpec(media.content_type, int(media.byte_size))
    errors = story_domain.check_story_media(spec, info.context.settings)
    if errors:
        return StoryPayload(errors=[UserError.from_error(e) for e in errors])
    async with info.context.engine.begin() as conn:
        created = await story_domain.create_story(conn=conn, author_id=viewer_id, spec=spec)
    # The posts' upload targets, as they are: the media row is shaped as a post's.
    uploads = await upload_targets(info, [created.media])
    record = await _read(info, created.story.id)
    story = await _build(info, record) if record is not None else None
    return StoryPayload(story=story, uploads=uploads)


async def complete_story_upload(info: Info, story_id: strawberry.ID) -> StoryPayload:
    """Author only (anyone else: NOT_FOUND, as if it did not exist). Checks the object is
    in the store, then hands over to the worker; a repeat changes nothing."""
    viewer_id = info.context.require_viewer()
    storage = info.context.storage
    try:
        pk = payload_pk(story_id, "Story", "storyId")
        record = await _read(info, pk)
        if record is None or record.author_id != viewer_id:
            raise _not_found()
        if record.status == PostStatus.PENDING:
            async with info.context.engine.connect() as conn:
                item = await story_domain.story_media_row(conn=conn, story_id=pk)
            if item.upload_id is not None:
                try:
                    await complete_parts(storage, item)
                except DomainError as exc:
                    exc.field = "storyId"
                    raise
            if await storage.head(item.original_key) is None:
                raise DomainError(
                    ErrorCode.INVALID_INPUT,
                    "The media has not been uploaded yet.",
                    field="storyId",
                )
            ttl = story_domain.story_ttl(info.context.settings)
            async with info.context.engine.begin() as conn:
                moved = await story_domain.hand_to_worker(conn=conn, story_id=pk, ttl=ttl)
            if moved:  # at once; the committed outbox row is the guarantee
                await best_effort(
                    enqueue_process_story(info.context.jobs, pk, attempt=1),
                    f"story {pk}: processing",
                )
            record = await _read(info, pk)
            if record is None:  # pragma: no cover - discarded between the statements
                raise _not_found()
    except DomainError as exc:
        return StoryPayload(errors=[UserError.from_error(exc)])
    return StoryPayload(story=await _build(info, record))


async def mark_story_seen(info: Info, story_id: strawberry.ID) -> StoryPayload:
    """Idempotent; only a READY story the viewer can see (else NOT_FOUND)."""
    viewer_id = info.context.require_viewer()
    try:
        pk = payload_pk(story_id, "Story", "storyId")
        record = await _read(info, pk)
        if record is None or not record.ready or not await _can_see(info, record):
            raise _not_found()
        async with info.context.engine.begin() as conn:
            # False when the cleanup deleted it (or it expired) since the read above.
            if not await story_domain.mark_seen(conn=conn, story_id=pk, viewer_id=viewer_id):
                raise _not_found()
    except DomainError as exc:
        return StoryPayload(errors=[UserError.from_error(exc)])
    return StoryPayload(story=await _build(info, replace(record, seen=True)))


# After the resolvers: schema.stories imports this module for its root fields, and this
# module's types come from there; importing them last lets either module load first.
from schema.stories import Story, StoryPayload, StoryReel  # noqa: E402
