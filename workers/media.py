"""Media jobs: verify and render uploaded bytes, delete a post's objects, sweep stuck posts.

The worker trusts nothing the client said: it checks each object's size against
the declared size and the limit, sniffs its real type from the bytes, and only
then decodes it (with Pillow's format allowlist and decompression-bomb guard, or
PyAV for video). Bad media fails the post at once with a reason the author can
read; transient faults (storage or database unreachable) retry with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import secrets
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from arq.constants import job_key_prefix

from domain import posts as post_domain
from domain import uploads as upload_domain
from domain.outbox import best_effort, pending_process_posts, write_invalidation
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
from infra.storage import ObjectNotFound, Storage
from models import DbRow, PostStatus
from settings import Settings
from workers import liveness
from workers.feed import kick_relay
from workers.jobs import (
    enqueue_late_upload_sweep,
    enqueue_process_post,
    enqueue_stray_upload_sweep,
    process_post_job_id,
    retry_later,
)

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


async def _fetch_verified(
    storage: Storage, settings: Settings, item: DbRow, source: Path
) -> tuple[str, str | None]:
    """Read the uploaded object ONCE into `source` and check that copy (its size is the
    declared one, its sniffed type an accepted one); return its real content type and
    the ETag of the object read (when the store gives one).

    Everything after this reads `source`, never the store again: on S3 a presigned POST
    cannot be revoked, and a body written to the upload key later (or between two reads)
    never reaches the renditions (docs/uploads-hardening.md). A HEAD first refuses an
    object of the wrong size before downloading it.
    """
    number = item.position + 1
    limit = settings.photo_max_bytes if item.kind == "PHOTO" else settings.video_max_bytes

    async def reject(size: int) -> MediaRejected:
        await storage.delete_many([item.original_key])
        return MediaRejected(
            f"Media {number} is {size} bytes, but {item.byte_size} were declared (limit {limit})."
        )

    info = await storage.head(item.original_key)
    if info is None:
        raise MediaRejected(f"Media {number} was not uploaded.")
    if info.size > limit or info.size != item.byte_size:
        raise await reject(info.size)
    try:
        etag = await storage.download_to(item.original_key, source)
    except ObjectNotFound as exc:
        raise MediaRejected(f"Media {number} was not uploaded.") from exc

    def read_head() -> tuple[int, bytes]:
        with source.open("rb") as fh:
            return source.stat().st_size, fh.read(SNIFF_BYTES)

    size, head = await asyncio.to_thread(read_head)
    if size != item.byte_size:  # replaced between the HEAD and the download
        raise await reject(size)
    detected = sniff_content_type(head)
    accepted = PHOTO_TYPES if item.kind == "PHOTO" else VIDEO_TYPES
    if detected not in accepted:
        await storage.delete_many([item.original_key])
        what = (
            "a JPEG, PNG, WebP or HEIC photo"
            if item.kind == "PHOTO"
            else "an MP4, MOV or WebM video"
        )
        raise MediaRejected(f"Media {number} is not {what}.")
    return detected, etag


def _md5_hex(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def _keep_verified(
    storage: Storage, item: DbRow, source: Path, etag: str | None, dest: str
) -> None:
    """Put the bytes the worker verified (`source`, downloaded from the upload key with
    `etag`) at `dest`, a key no upload URL names: a server-side copy of the upload key
    conditioned on `etag` (S3 refuses it if the body was replaced since), checked
    against the local copy's MD5; if the copy is refused or is not those bytes (a store
    that ignores the condition, or whose ETags are not MD5s), the local copy itself is
    uploaded. Either way `dest` holds exactly the verified bytes."""
    digest = await asyncio.to_thread(_md5_hex, source)
    copied = await storage.copy_if_match(item.original_key, dest, etag) if etag else None
    if copied is None or copied.strip('"') != digest:
        await storage.put(dest, source, item.content_type)


async def process_media_item(
    ctx: dict[str, Any],
    item: DbRow,
    work: Path,
    *,
    rendition_key: RenditionKey,
    video_key: str,
    frame: tuple[int, int] | None = None,
    cache_control: str | None = None,
    verified_key: str | None = None,
) -> MediaOutcome:
    """Verify one uploaded media row's object (size, sniffed type), render it and store
    its renditions under `rendition_key(size, format)` (and a video under `video_key`).
    With `verified_key` (S3), the verified bytes are kept there (`_keep_verified`) and
    the outcome points the row's `original_key` at them.

    Shared by posts and stories (a story passes its `STORY_FRAME`, and a `cache_control`
    no longer than its TTL; posts keep the store's year-long immutable default). Raises
    `MediaRejected` for bad media; anything else is a transient fault for the caller.
    """
    storage: Storage = ctx["resources"].storage
    source = work / f"{item.id}.original"
    detected, etag = await _fetch_verified(storage, ctx["settings"], item, source)
    if item.kind == "PHOTO":
        photo = await _cpu(ctx, functools.partial(render_photo, frame=frame), source)
        if verified_key is not None:
            await _keep_verified(storage, item, source, etag, verified_key)
        return MediaOutcome(
            media_id=item.id,
            detected_type=photo.detected_type,
            width=photo.width,
            height=photo.height,
            placeholder=photo.placeholder,
            rendition_keys=await _store_renditions(storage, rendition_key, photo, cache_control),
            original_key=verified_key,
        )
    out_dir = work / f"{item.id}.out"
    out_dir.mkdir()
    video = await _cpu(ctx, functools.partial(render_video, frame=frame), source, out_dir)
    if verified_key is not None:
        await _keep_verified(storage, item, source, etag, verified_key)
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
        original_key=verified_key,
    )


def verified_keys(
    settings: Settings, items: list[DbRow], key: Callable[[int, str], str]
) -> dict[int, str]:
    """This attempt's keys for the verified originals (`key(media_id, token)`), one per
    media row, on S3 only: there a presigned POST can write the upload key until it
    expires; the local route's gate closes it (docs/uploads-hardening.md)."""
    if settings.storage_backend == "local":
        return {}
    token = secrets.token_hex(8)
    return {item.id: key(item.id, token) for item in items}


async def _process_media(
    ctx: dict[str, Any], post_id: int, item: DbRow, work: Path, verified_key: str | None
) -> MediaOutcome:
    return await process_media_item(
        ctx,
        item,
        work,
        rendition_key=functools.partial(post_domain.rendition_key, post_id, item.id),
        video_key=post_domain.video_key(post_id, item.id),
        verified_key=verified_key,
    )


# A PROCESSING post with neither a worker on it nor a queued job is orphaned (its job
# was lost) after this long: completeUpload commits PROCESSING just before the job (or
# its outbox row) is sent. Which worker runs a post's job is arq's `on_job_start` record
# (`liveness.job_started`), per attempt: `worker:job:process_post:<id>:<attempt>`.
ORPHAN_GRACE_SECONDS = 30


async def process_post(ctx: dict[str, Any], post_id: int) -> str:
    """Verify and render a post's media, then mark it READY (`_process_post`)."""
    return await _process_post(ctx, post_id)


async def _process_post(ctx: dict[str, Any], post_id: int) -> str:
    """Verify and render every media item, then mark the post READY in one transaction.

    Idempotent: rendition keys are deterministic, and `mark_ready` only moves a post
    that is still PROCESSING, so a second run (a retry, a sweeper re-enqueue racing
    the first) rewrites the same objects and changes no row. On S3 each attempt keeps
    the originals it verified under keys of its own (`verified_keys`); the one that
    marks the post READY points the media rows at its copies in that transaction, and
    the others' copies are deleted.
    """
    engine = ctx["resources"].engine
    storage: Storage = ctx["resources"].storage
    async with engine.connect() as conn:
        post = await post_domain.post_row(conn=conn, post_id=post_id)
        items = await post_domain.media_rows(conn=conn, post_ids=[post_id])
    if post is None or post.status != PostStatus.PROCESSING:
        return "skipped"
    kept = verified_keys(
        ctx["settings"], items, functools.partial(post_domain.verified_key, post_id)
    )
    try:
        try:
            with tempfile.TemporaryDirectory(prefix="instagraph-media-") as work:
                outcomes = [
                    await _process_media(ctx, post_id, item, Path(work), kept.get(item.id))
                    for item in items
                ]
        except Exception:
            # This attempt's verified copies are no one's (a retry makes its own).
            await _forget(storage, list(kept.values()), f"post {post_id}")
            raise
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
        if ready is not None:  # its post count moved: the cached record goes (domain.outbox)
            await write_invalidation(conn=conn, users=[ready.author_id])
    if ready is None:
        await _forget(storage, list(kept.values()), f"post {post_id}")
        async with engine.connect() as conn:
            still_there = await post_domain.post_row(conn=conn, post_id=post_id)
        if still_there is None:
            # Deleted while we rendered: the delete job may have run before our writes.
            await delete_post_objects(ctx, post_id)
        return "skipped"
    if kept:
        await _retire_upload_keys(ctx, post_id, items)
    # Its post count moved: at once, best effort (mark_ready's `invalidate` row is the
    # guarantee); then its own fan-out row, not behind the backlog.
    await best_effort(
        ctx["resources"].recent.forget_users([ready.author_id]), f"user {ready.author_id}: record"
    )
    await kick_relay(ctx, post_id)
    return "ready"


async def _forget(storage: Storage, keys: list[str], what: str) -> None:
    """Best effort: delete verified copies no row points at (a failure leaves a private
    object under `verified/<post>/`, which deletePost's clean-up removes)."""
    if not keys:
        return
    try:
        await storage.delete_many(keys)
    except Exception as exc:
        log.warning("%s: could not delete unused verified originals: %r", what, exc)


async def _retire_upload_keys(ctx: dict[str, Any], post_id: int, items: list[DbRow]) -> None:
    """A READY post's originals now live under `verified/`: its upload keys go, and a
    pass is scheduled for when their URLs have expired (`delete_late_uploads`), which
    deletes whatever a POST wrote there since. The pass first (if Redis is down, the
    upload keys still go now); best effort: the post is READY whatever happens here."""
    settings: Settings = ctx["settings"]
    when = datetime.now(UTC) + timedelta(
        seconds=settings.upload_ttl_seconds + LATE_UPLOAD_MARGIN_SECONDS
    )
    try:
        await enqueue_stray_upload_sweep(ctx["resources"].jobs, post_id, when)
    except Exception as exc:
        log.warning("post %s: could not schedule the stray-upload pass: %r", post_id, exc)
    uploads = [post_domain.original_key(post_id, item.id) for item in items]
    try:
        await ctx["resources"].storage.delete_many(uploads)
    except Exception as exc:
        log.warning("post %s: could not delete its upload keys: %r", post_id, exc)


async def delete_post_objects(ctx: dict[str, Any], post_id: int) -> None:
    """Remove every object of a deleted post (originals, renditions, open multipart uploads)."""
    storage: Storage = ctx["resources"].storage
    async with ctx["resources"].engine.connect() as conn:
        items = await post_domain.media_rows(conn=conn, post_ids=[post_id])
    # The late pass first (idempotent): if the store fails below, the job retries, and
    # should it give up, the late pass still deletes the originals. (Redis down: the
    # objects still go, and the job's retry schedules the pass.)
    try:
        await schedule_late_upload_sweep(ctx, post_id)
    finally:
        await _delete_originals(storage, post_id, items)
        await storage.delete_prefix(f"renditions/{post_id}/")


async def _delete_originals(storage: Storage, post_id: int, items: list[DbRow]) -> None:
    """A deleted post's uploads: its open multipart uploads aborted (an unknown or
    finished one is fine), then its originals, at the upload keys and verified."""
    for item in items:
        if item.upload_id is not None:
            upload_key = post_domain.original_key(post_id, item.id)
            await storage.abort_multipart(upload_key, item.upload_id)
    await storage.delete_prefix(f"originals/{post_id}/")
    await storage.delete_prefix(post_domain.verified_prefix(post_id))


# Past the last upload URL's expiry: a URL signed as the post was being deleted (a
# createPost retry racing deletePost) expires within this margin too.
LATE_UPLOAD_MARGIN_SECONDS = 300


async def schedule_late_upload_sweep(ctx: dict[str, Any], post_id: int) -> None:
    """Once a deleted post's objects are gone, come back when its last upload URL has
    expired (`delete_late_uploads`): an S3 presigned POST cannot be revoked, and one
    used after the deletion writes an object no one would delete. Nothing to schedule
    when that moment has passed (this is the late pass itself, or a late retry)."""
    settings: Settings = ctx["settings"]
    if settings.storage_backend == "local":
        return  # the local upload route asks the gate: a deleted post's URL refuses
    async with ctx["resources"].engine.connect() as conn:
        deleted = await upload_domain.deleted_at(conn=conn, post_id=post_id)
    if deleted is None:
        return
    when = deleted + timedelta(seconds=settings.upload_ttl_seconds + LATE_UPLOAD_MARGIN_SECONDS)
    if when > datetime.now(UTC):
        await enqueue_late_upload_sweep(ctx["resources"].jobs, post_id, when)


async def delete_late_uploads(ctx: dict[str, Any], post_id: int) -> str:
    """The deleted post's objects, again: what an upload URL wrote after the first
    clean-up, and whatever that clean-up left if the store failed it for good (open
    multipart uploads, renditions: the worker writes none for a deleted post).

    For a live READY post (scheduled by `_retire_upload_keys`): only what a POST wrote
    to its upload keys since, never a key a media row points at (the verified copies)."""
    storage: Storage = ctx["resources"].storage
    try:
        async with ctx["resources"].engine.connect() as conn:
            deleted = await upload_domain.deleted_at(conn=conn, post_id=post_id)
            live = await post_domain.post_row(conn=conn, post_id=post_id)
            items = await post_domain.media_rows(conn=conn, post_ids=[post_id])
        if deleted is None:
            if live is None or live.status != PostStatus.READY:
                return "skipped"
            strays = [post_domain.original_key(post_id, item.id) for item in items]
            kept = {item.original_key for item in items}
            await storage.delete_many([key for key in strays if key not in kept])
            return "strays"
        await _delete_originals(storage, post_id, items)
        await storage.delete_prefix(f"renditions/{post_id}/")
    except Exception as exc:
        retry_later(ctx, exc, f"deleted post {post_id}: late uploads")
    return "deleted"


async def abandon_post(ctx: dict[str, Any], post_id: int) -> bool:
    """Delete a PENDING post whose bytes never came, with its objects; False, touching
    nothing, when it left PENDING since the sweeper saw it (its author completed the
    upload just then: its photos must stay)."""
    async with ctx["resources"].engine.begin() as conn:
        items = await post_domain.abandon_pending(conn=conn, post_id=post_id)
    if items is None:
        return False
    # The late pass first: the post is abandoned now, so no later sweep sees it again;
    # if the store fails below, the late pass still deletes what is left.
    try:
        await schedule_late_upload_sweep(ctx, post_id)
    finally:
        await _delete_originals(ctx["resources"].storage, post_id, items)
    return True


async def _unattended(
    ctx: dict[str, Any], *, dead_only: bool = False
) -> tuple[dict[int, int], set[int]]:
    """PROCESSING posts no live worker is on: (orphans, busy), orphans with the attempt
    count they were seen at.

    Orphans are posts whose current attempt's worker is dead (`liveness.dead`: gone from
    this machine, at once; elsewhere, once its heartbeat expired) or, unless `dead_only`,
    that have neither a worker nor a queued job ORPHAN_GRACE_SECONDS (by PostgreSQL's
    clock) after they last changed (the job was lost). Busy posts have a worker on them
    that is not known dead: never retried, however long they take.
    """
    resources = ctx["resources"]
    async with resources.engine.connect() as conn:
        rows = await post_domain.processing_posts(conn=conn, grace_seconds=ORPHAN_GRACE_SECONDS)
    if not rows:
        return {}, set()
    job_ids = [process_post_job_id(row.id, row.processing_attempts) for row in rows]
    owners = await liveness.job_owners(resources.redis, job_ids)
    queued: list[Any] = [True] * len(rows)
    if not dead_only:
        async with resources.jobs.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.exists(job_key_prefix + job_id)
            queued = await pipe.execute()
    gone = await liveness.dead(
        resources.redis,
        {owner for owner in owners if owner is not None},
        ctx["worker"].name,
        watched_for=liveness.watched_for(ctx),
        interval=ctx["settings"].worker_heartbeat_seconds,
    )
    orphans: dict[int, int] = {}
    busy: set[int] = set()
    for row, owner, has_job in zip(rows, owners, queued, strict=True):
        if owner is not None and owner not in gone:
            busy.add(row.id)
        elif owner is not None or (not has_job and row.past_grace):
            orphans[row.id] = row.processing_attempts
    return orphans, busy


async def sweep_posts(ctx: dict[str, Any]) -> dict[str, int]:
    """Re-enqueue PROCESSING posts whose worker died mid-job (at once: the start-up
    sweep of a replacement worker finishes them) or whose job was lost, and those stuck
    past PROCESSING_TIMEOUT_SECONDS with no live worker on them; fail those that keep
    failing, and clean up PENDING posts whose bytes never came."""
    settings: Settings = ctx["settings"]
    engine = ctx["resources"].engine
    counts = {"retried": 0, "failed": 0, "abandoned": 0}
    async with engine.connect() as conn:
        stuck = await post_domain.stuck_posts(conn=conn, settings=settings)
    orphans, busy = await _unattended(ctx)
    retry = {
        row.id: row.processing_attempts for row in stuck if row.status == PostStatus.PROCESSING
    }
    retry.update(orphans)
    for row in stuck:
        if row.status != PostStatus.PENDING:
            continue
        try:
            if await abandon_post(ctx, row.id):
                counts["abandoned"] += 1
        except Exception as exc:  # one post's trouble must not stop the sweep
            log.warning("sweep: abandoning post %s failed: %r", row.id, exc)
    async with engine.connect() as conn:  # attempt 1 still on its way (the relay is behind)
        busy |= await pending_process_posts(conn=conn, post_ids=retry)
    await _retry_posts(ctx, {pk: seen for pk, seen in retry.items() if pk not in busy}, counts)
    if any(counts.values()):
        log.info("sweep: %s", counts)
    return counts


async def retry_dead_workers_posts(ctx: dict[str, Any]) -> dict[str, int]:
    """The cheap part of `sweep_posts`, run every heartbeat interval by each worker
    (workers.settings): only the posts whose worker is known dead."""
    counts = {"retried": 0, "failed": 0}
    orphans, _ = await _unattended(ctx, dead_only=True)
    await _retry_posts(ctx, orphans, counts)
    if any(counts.values()):
        log.info("dead workers' posts: %s", counts)
    return counts


async def _retry_posts(ctx: dict[str, Any], seen: dict[int, int], counts: dict[str, int]) -> None:
    """One more attempt for each post, if its attempt count is still the one seen (two
    sweeps at once: only one retries a post), or FAILED past MAX_PROCESSING_ATTEMPTS."""
    settings: Settings = ctx["settings"]
    for post_id, attempts_seen in sorted(seen.items()):
        async with ctx["resources"].engine.begin() as conn:
            attempts = await post_domain.note_retry(
                conn=conn, post_id=post_id, seen_attempts=attempts_seen
            )
            if attempts and attempts > settings.max_processing_attempts:
                await post_domain.mark_failed(
                    conn=conn,
                    post_id=post_id,
                    reason="Processing kept failing; please post again.",
                )
                counts["failed"] += 1
                continue
        if attempts:
            # The dead attempt's owner record goes (arq re-runs that job ~610 s later,
            # and it finds the post READY); the new attempt has its own job id.
            with contextlib.suppress(Exception):
                await liveness.job_ended(
                    ctx["resources"].redis, process_post_job_id(post_id, attempts_seen)
                )
            await enqueue_process_post(ctx["resources"].jobs, post_id, attempt=attempts)
            counts["retried"] += 1
