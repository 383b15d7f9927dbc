"""Media jobs: verify and render uploaded bytes, delete a post's objects, sweep stuck posts.

The worker trusts nothing the client said: it checks each object's size against
the declared size and the limit, sniffs its real type from the bytes, and only
then decodes it (with Pillow's format allowlist and decompression-bomb guard, or
PyAV for video). Bad media fails the post at once with a reason the author can
read; transient faults (storage or database unreachable) retry with backoff.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from domain import posts as post_domain
from domain.posts import MediaOutcome
from infra.images import (
    PHOTO_TYPES,
    SNIFF_BYTES,
    VIDEO_TYPES,
    MediaRejected,
    PhotoResult,
    render_photo,
    render_video,
    sniff_content_type,
)
from infra.storage import Storage
from models import DbRow, PostStatus
from settings import Settings
from workers.feed import kick_relay
from workers.jobs import enqueue_process_post, retry_later

log = logging.getLogger("instagraph.worker.media")

T = TypeVar("T")


async def _cpu(ctx: dict[str, Any], fn: Callable[..., T], *args: Any) -> T:
    """Run CPU-bound rendering in a thread, at most one per core at a time: Pillow and
    FFmpeg release the GIL, and the semaphore keeps memory bounded under max_jobs."""
    async with ctx["cpu_slots"]:
        return await asyncio.to_thread(fn, *args)


# Where one media item's rendition of a (size, format) goes in the store.
RenditionKey = Callable[[str, str], str]


async def _store_renditions(
    storage: Storage,
    rendition_key: RenditionKey,
    result: PhotoResult,
    cache_control: str | None,
) -> dict[str, str]:
    keys: dict[str, str] = {}
    for rendition in result.renditions:
        key = rendition_key(rendition.size, rendition.format)
        await storage.put(key, rendition.data, rendition.content_type, cache_control=cache_control)
        keys[f"{rendition.size}:{rendition.format}"] = key
    return keys


async def _verify(storage: Storage, settings: Settings, item: DbRow) -> str:
    """The object's real content type, after checking it exists and its size is honest."""
    number = item.position + 1
    info = await storage.head(item.original_key)
    if info is None:
        raise MediaRejected(f"Media {number} was not uploaded.")
    limit = settings.photo_max_bytes if item.kind == "PHOTO" else settings.video_max_bytes
    if info.size > limit or info.size != item.byte_size:
        await storage.delete_many([item.original_key])
        raise MediaRejected(
            f"Media {number} is {info.size} bytes, but {item.byte_size} were declared "
            f"(limit {limit})."
        )
    detected = sniff_content_type(await storage.read_head(item.original_key, SNIFF_BYTES))
    accepted = PHOTO_TYPES if item.kind == "PHOTO" else VIDEO_TYPES
    if detected not in accepted:
        await storage.delete_many([item.original_key])
        what = (
            "a JPEG, PNG, WebP or HEIC photo"
            if item.kind == "PHOTO"
            else "an MP4, MOV or WebM video"
        )
        raise MediaRejected(f"Media {number} is not {what}.")
    return detected


async def process_media_item(
    ctx: dict[str, Any],
    item: DbRow,
    work: Path,
    *,
    rendition_key: RenditionKey,
    video_key: str,
    frame: tuple[int, int] | None = None,
    cache_control: str | None = None,
) -> MediaOutcome:
    """Verify one uploaded media row's object (size, sniffed type), render it and store
    its renditions under `rendition_key(size, format)` (and a video under `video_key`).

    Shared by posts and stories (a story passes its `STORY_FRAME`, and a `cache_control`
    no longer than its TTL; posts keep the store's year-long immutable default). Raises
    `MediaRejected` for bad media; anything else is a transient fault for the caller.
    """
    storage: Storage = ctx["resources"].storage
    detected = await _verify(storage, ctx["settings"], item)
    source = work / f"{item.id}.original"
    await storage.download_to(item.original_key, source)
    if item.kind == "PHOTO":
        photo = await _cpu(ctx, functools.partial(render_photo, frame=frame), source)
        return MediaOutcome(
            media_id=item.id,
            detected_type=photo.detected_type,
            width=photo.width,
            height=photo.height,
            placeholder=photo.placeholder,
            rendition_keys=await _store_renditions(storage, rendition_key, photo, cache_control),
        )
    out_dir = work / f"{item.id}.out"
    out_dir.mkdir()
    video = await _cpu(ctx, functools.partial(render_video, frame=frame), source, out_dir)
    await storage.put(video_key, video.mp4_path, "video/mp4", cache_control=cache_control)
    return MediaOutcome(
        media_id=item.id,
        detected_type=detected,
        width=video.width,
        height=video.height,
        placeholder=video.poster.placeholder,
        rendition_keys=await _store_renditions(storage, rendition_key, video.poster, cache_control),
        duration_seconds=video.duration_seconds,
        video_key=video_key,
    )


async def _process_media(
    ctx: dict[str, Any], post_id: int, item: DbRow, work: Path
) -> MediaOutcome:
    return await process_media_item(
        ctx,
        item,
        work,
        rendition_key=functools.partial(post_domain.rendition_key, post_id, item.id),
        video_key=post_domain.video_key(post_id, item.id),
    )


async def process_post(ctx: dict[str, Any], post_id: int) -> str:
    """Verify and render every media item, then mark the post READY in one transaction.

    Idempotent: rendition keys are deterministic, and `mark_ready` only moves a post
    that is still PROCESSING, so a second run (a retry, a sweeper re-enqueue racing
    the first) rewrites the same objects and changes no row.
    """
    engine = ctx["resources"].engine
    async with engine.connect() as conn:
        post = await post_domain.post_row(conn=conn, post_id=post_id)
        items = await post_domain.media_rows(conn=conn, post_ids=[post_id])
    if post is None or post.status != PostStatus.PROCESSING:
        return "skipped"
    try:
        with tempfile.TemporaryDirectory(prefix="instagraph-media-") as work:
            outcomes = [await _process_media(ctx, post_id, item, Path(work)) for item in items]
    except MediaRejected as rejected:
        async with engine.begin() as conn:
            await post_domain.mark_failed(conn=conn, post_id=post_id, reason=rejected.reason)
        log.info("post %s failed: %s", post_id, rejected.reason)
        return "failed"
    except Exception as exc:
        # Storage or database trouble: try again later, backing off. When arq gives up,
        # the sweeper picks the post up again (up to max_processing_attempts).
        retry_later(ctx, exc, f"post {post_id}")
    async with engine.begin() as conn:
        ready = await post_domain.mark_ready(conn=conn, post_id=post_id, outcomes=outcomes)
    if ready is None:
        async with engine.connect() as conn:
            still_there = await post_domain.post_row(conn=conn, post_id=post_id)
        if still_there is None:
            # Deleted while we rendered: the delete job may have run before our writes.
            await delete_post_objects(ctx, post_id)
        return "skipped"
    await ctx["resources"].recent.forget_users([ready.author_id])  # its post count moved
    await kick_relay(ctx)
    return "ready"


async def delete_post_objects(ctx: dict[str, Any], post_id: int) -> None:
    """Remove every object of a deleted post (originals, renditions, open multipart uploads)."""
    storage: Storage = ctx["resources"].storage
    async with ctx["resources"].engine.connect() as conn:
        items = await post_domain.media_rows(conn=conn, post_ids=[post_id])
    for item in items:
        if item.upload_id is not None:
            await storage.abort_multipart(item.original_key, item.upload_id)
    await storage.delete_prefix(f"originals/{post_id}/")
    await storage.delete_prefix(f"renditions/{post_id}/")


async def abandon_post(ctx: dict[str, Any], post_id: int) -> bool:
    """Delete a PENDING post whose bytes never came, with its objects; False, touching
    nothing, when it left PENDING since the sweeper saw it (its author completed the
    upload just then: its photos must stay)."""
    async with ctx["resources"].engine.begin() as conn:
        items = await post_domain.abandon_pending(conn=conn, post_id=post_id)
    if items is None:
        return False
    storage = ctx["resources"].storage
    for item in items:
        if item.upload_id is not None:
            await storage.abort_multipart(item.original_key, item.upload_id)
    await storage.delete_prefix(f"originals/{post_id}/")
    return True


async def sweep_posts(ctx: dict[str, Any]) -> dict[str, int]:
    """Re-enqueue posts stuck in PROCESSING (a worker died mid-job), fail those that
    keep failing, and clean up PENDING posts whose bytes never came."""
    settings: Settings = ctx["settings"]
    engine = ctx["resources"].engine
    counts = {"retried": 0, "failed": 0, "abandoned": 0}
    async with engine.connect() as conn:
        stuck = await post_domain.stuck_posts(conn=conn, settings=settings)
    for row in stuck:
        if row.status == PostStatus.PENDING:
            if await abandon_post(ctx, row.id):
                counts["abandoned"] += 1
            continue
        async with engine.begin() as conn:
            attempts = await post_domain.note_retry(conn=conn, post_id=row.id)
            if attempts > settings.max_processing_attempts:
                await post_domain.mark_failed(
                    conn=conn,
                    post_id=row.id,
                    reason="Processing kept failing; please post again.",
                )
                counts["failed"] += 1
                continue
        if attempts:
            await enqueue_process_post(ctx["resources"].jobs, row.id, attempt=attempts)
            counts["retried"] += 1
    if any(counts.values()):
        log.info("sweep: %s", counts)
    return counts
