"""Story jobs: verify and render a story's media (the posts' pipeline, with the 1080x1920
full-screen frame), the sweeper that re-enqueues stories stuck in PROCESSING, and the
cron that deletes expired stories' objects and rows."""

from __future__ import annotations

import functools
import logging
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from domain import stories as story_domain
from infra.images import STORY_FRAME, MediaRejected
from infra.storage import Storage
from models import PostStatus
from settings import Settings
from workers.jobs import enqueue_late_story_upload_sweep, enqueue_process_story, retry_later
from workers.media import LATE_UPLOAD_MARGIN_SECONDS, process_media_item, verified_keys

log = logging.getLogger("instagraph.worker.stories")


async def process_story(ctx: dict[str, Any], story_id: int) -> str:
    """Verify and render the story's media, then mark it READY (live for the TTL from now).

    Idempotent like `process_post`: rendition keys are deterministic and `mark_ready`
    only moves a story still PROCESSING and within its TTL. A story discarded while it
    rendered (past its deadline: the cleanup of unfinished stories may have deleted its
    objects, and its row, already) gets the objects just written deleted.
    """
    engine = ctx["resources"].engine
    ttl = story_domain.story_ttl(ctx["settings"])
    async with engine.connect() as conn:
        story = await story_domain.story_row(conn=conn, story_id=story_id)
        if story is None or story.status != PostStatus.PROCESSING:
            return "skipped"
        item = await story_domain.story_media_row(conn=conn, story_id=story_id)
    storage: Storage = ctx["resources"].storage
    # S3: the verified original is kept at a key no upload URL names (as for posts).
    kept = verified_keys(
        ctx["settings"], [item], functools.partial(story_domain.verified_key, story_id)
    ).get(item.id)
    try:
        try:
            with tempfile.TemporaryDirectory(prefix="instagraph-story-") as work:
                outcome = await process_media_item(
                    ctx,
                    item,
                    Path(work),
                    rendition_key=functools.partial(story_domain.rendition_key, story_id, item.id),
                    video_key=story_domain.video_key(story_id, item.id),
                    frame=STORY_FRAME,
                    cache_control=story_domain.cache_control(ttl),
                    verified_key=kept,
                )
        except Exception:
            await _forget(storage, kept, story_id)
            raise
    except MediaRejected as rejected:
        async with engine.begin() as conn:
            await story_domain.mark_failed(conn=conn, story_id=story_id, reason=rejected.reason)
        log.info("story %s failed: %s", story_id, rejected.reason)
        return "failed"
    except Exception as exc:
        # Storage or database trouble: try again later, backing off (as posts do).
        retry_later(ctx, exc, f"story {story_id}")
    async with engine.begin() as conn:
        ready = await story_domain.mark_ready(
            conn=conn, story_id=story_id, outcome=outcome, ttl=ttl
        )
    if ready is None:
        await _forget(storage, kept, story_id)
        async with engine.connect() as conn:
            discarded = await story_domain.is_discarded(conn=conn, story_id=story_id, ttl=ttl)
        if discarded:
            # The cleanup may have deleted the objects before these writes: delete them
            # again (the row, if still there, is the cleanup's).
            await _delete_objects(ctx["resources"].storage, story_id, upload_id=None, key=None)
            log.info("story %s discarded while it rendered", story_id)
            return "discarded"
        return "skipped"
    if kept is not None:
        # Its original now lives under `verified/`: the upload key goes. What a POST
        # writes there later goes with the story's clean-up (its `originals/` prefix),
        # or with the late pass when the URL outlives the story.
        try:
            await storage.delete_many([story_domain.original_key(story_id, item.id)])
        except Exception as exc:
            log.warning("story %s: could not delete its upload key: %r", story_id, exc)
    return "ready"


async def _forget(storage: Storage, key: str | None, story_id: int) -> None:
    """Best effort: this attempt's verified copy, which no row points at."""
    if key is None:
        return
    try:
        await storage.delete_many([key])
    except Exception as exc:
        log.warning("story %s: could not delete an unused verified original: %r", story_id, exc)


async def _delete_objects(
    storage: Storage, story_id: int, *, upload_id: str | None, key: str | None
) -> None:
    if upload_id is not None and key is not None:
        await storage.abort_multipart(key, upload_id)
    for prefix in story_domain.object_prefixes(story_id):
        await storage.delete_prefix(prefix)


async def sweep_stories(ctx: dict[str, Any]) -> dict[str, int]:
    """Re-enqueue stories stuck in PROCESSING (Redis was down at completeStoryUpload, a
    worker died, or the job's last try failed), each attempt under its own job id, and
    fail those that keep failing after `max_processing_attempts`, as `sweep_posts` does
    for posts. Stories past their TTL are left to `cleanup_stories`."""
    settings: Settings = ctx["settings"]
    engine = ctx["resources"].engine
    ttl = story_domain.story_ttl(settings)
    stuck_after = story_domain.stuck_after(settings)
    counts = {"retried": 0, "failed": 0}
    async with engine.connect() as conn:
        stuck = await story_domain.stuck_stories(conn=conn, ttl=ttl, stuck_after=stuck_after)
    for row in stuck:
        async with engine.begin() as conn:
            attempts = await story_domain.note_retry(
                conn=conn, story_id=row.id, ttl=ttl, stuck_after=stuck_after
            )
            if attempts > settings.max_processing_attempts:
                await story_domain.mark_failed(
                    conn=conn,
                    story_id=row.id,
                    reason="Processing kept failing; please post the story again.",
                )
                counts["failed"] += 1
                continue
        if attempts:  # 0: no longer stuck (READY meanwhile, or another sweeper took it)
            await enqueue_process_story(ctx["resources"].jobs, row.id, attempt=attempts)
            counts["retried"] += 1
    if any(counts.values()):
        log.info("stories sweep: %s", counts)
    return counts


async def cleanup_stories(ctx: dict[str, Any]) -> int:
    """Delete the objects, then the rows, of stories past their time (expired, or never
    READY within the TTL); returns how many rows went.

    Idempotent and safe to run on several workers at once: objects go first, so a
    failure leaves the row for the next run to find; deleting an absent object is a
    no-op; the row delete re-checks the expiry. Reads never wait for this: they filter
    on `expires_at` themselves.
    """
    engine = ctx["resources"].engine
    storage: Storage = ctx["resources"].storage
    ttl = story_domain.story_ttl(ctx["settings"])
    late = late_upload_delay(ctx["settings"], ttl)
    deleted = 0
    while True:
        async with engine.connect() as conn:
            gone = await story_domain.expired_stories(conn=conn, ttl=ttl)
        if not gone:
            break
        for row in gone:
            if late is not None:  # first: idempotent, and it covers a failure below
                when = datetime.now(UTC) + late
                await enqueue_late_story_upload_sweep(ctx["resources"].jobs, row.id, when)
            await _delete_objects(storage, row.id, upload_id=row.upload_id, key=row.original_key)
        async with engine.begin() as conn:
            count = await story_domain.delete_stories(
                conn=conn, story_ids=[row.id for row in gone], ttl=ttl
            )
        deleted += count
        if count == 0 or len(gone) < story_domain.CLEANUP_BATCH:
            break
    if deleted:
        log.info("stories cleanup: %s deleted", deleted)
    return deleted


def late_upload_delay(settings: Settings, ttl: timedelta) -> timedelta | None:
    """How long after a story's clean-up its upload URL may still work, or None when it
    cannot (docs/uploads-hardening.md). A story's one URL is signed as it is created,
    and a story is cleaned up `ttl` after its creation at the earliest, so the URL is
    dead by then unless UPLOAD_TTL_SECONDS (plus the margin) exceeds the story TTL. The
    local route asks the gate instead: never needed there."""
    if settings.storage_backend == "local":
        return None
    delay = timedelta(seconds=settings.upload_ttl_seconds + LATE_UPLOAD_MARGIN_SECONDS) - ttl
    return delay if delay > timedelta(0) else None


async def delete_late_story_uploads(ctx: dict[str, Any], story_id: int) -> str:
    """A cleaned-up story's objects, again, once its upload URL has expired: what a
    presigned POST wrote after the clean-up (story ids are never reused)."""
    try:
        async with ctx["resources"].engine.connect() as conn:
            if await story_domain.story_row(conn=conn, story_id=story_id) is not None:
                return "skipped"  # never for a story still there
        await _delete_objects(ctx["resources"].storage, story_id, upload_id=None, key=None)
    except Exception as exc:
        retry_later(ctx, exc, f"deleted story {story_id}: late uploads")
    return "deleted"
