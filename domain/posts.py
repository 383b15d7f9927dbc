"""Posts and their media: creation, the processing state machine, reading, deletion.

A post moves PENDING -> PROCESSING -> READY or FAILED. `mark_ready` is the single
place a post becomes READY: the feed hooks its fan-out outbox row onto that
transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, any_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.errors import DomainError, ErrorCode
from domain.feed.queries import write_fan_out_event
from domain.hashtags import sync_post_tags
from domain.notifications import NotificationKind, record_notification
from domain.outbox import POST_DELETED, PROCESS_POST, write_event
from domain.text import hashtags_of, mentioned_user_ids
from infra.images import PHOTO_TYPES, VIDEO_TYPES
from models import IDS, DbRow, Media, Post, PostStatus, User, table_of
from settings import Settings

posts = table_of(Post)
media = table_of(Media)
users = table_of(User)

MAX_CAPTION = 2200
MAX_MEDIA_ITEMS = 10
MAX_IDEMPOTENCY_KEY = 128
# Instagram's limit: tags past the 30th are ignored (kept in the caption, not indexed).
MAX_HASHTAGS = 30


@dataclass(frozen=True)
class MediaSpec:
    content_type: str
    byte_size: int


def media_kind(content_type: str) -> str:
    return "PHOTO" if content_type in PHOTO_TYPES else "VIDEO"


def check_post_input(
    *, caption: str | None, items: list[MediaSpec], idempotency_key: str | None, settings: Settings
) -> list[DomainError]:
    """Every problem with a createPost input, so the client can fix them all at once."""
    errors: list[DomainError] = []
    if caption is not None and len(caption) > MAX_CAPTION:
        errors.append(
            DomainError(
                ErrorCode.INVALID_INPUT,
                f"Captions are at most {MAX_CAPTION} characters.",
                field="caption",
            )
        )
    if not 1 <= len(items) <= MAX_MEDIA_ITEMS:
        errors.append(
            DomainError(
                ErrorCode.INVALID_INPUT,
                f"A post has 1 to {MAX_MEDIA_ITEMS} photos or videos.",
                field="media",
            )
        )
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        errors.append(
            DomainError(
                ErrorCode.INVALID_INPUT,
                f"idempotencyKey is 1 to {MAX_IDEMPOTENCY_KEY} characters.",
                field="idempotencyKey",
            )
        )
    for index, item in enumerate(items[:MAX_MEDIA_ITEMS]):
        where = f"media.{index}"
        content_type = item.content_type.strip().lower()
        if content_type not in PHOTO_TYPES | VIDEO_TYPES:
            allowed = ", ".join(sorted(PHOTO_TYPES | VIDEO_TYPES))
            errors.append(
                DomainError(
                    ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                    f"{item.content_type!r} is not supported; use one of {allowed}.",
                    field=f"{where}.contentType",
                )
            )
            continue
        limit = (
            settings.photo_max_bytes
            if media_kind(content_type) == "PHOTO"
            else settings.video_max_bytes
        )
        if item.byte_size < 1:
            errors.append(
                DomainError(
                    ErrorCode.INVALID_INPUT, "byteSize must be positive.", field=f"{where}.byteSize"
                )
            )
        elif item.byte_size > limit:
            errors.append(
                DomainError(
                    ErrorCode.TOO_LARGE,
                    f"{media_kind(content_type).title()}s are at most {limit} bytes.",
                    field=f"{where}.byteSize",
                )
            )
    return errors


def original_key(post_id: int, media_id: int) -> str:
    return f"originals/{post_id}/{media_id}"


def verified_prefix(post_id: int) -> str:
    return f"verified/{post_id}/"


def verified_key(post_id: int, media_id: int, token: str) -> str:
    """Where the worker keeps the original it verified (S3): a key no upload URL names,
    new for each attempt (`token`), so a later POST to the upload key never reaches it
    and two attempts never write the same key (docs/uploads-hardening.md)."""
    return f"{verified_prefix(post_id)}{media_id}-{token}"


def rendition_key(post_id: int, media_id: int, size: str, fmt: str) -> str:
    extension = "jpg" if fmt == "JPEG" else fmt.lower()
    return f"renditions/{post_id}/{media_id}/{size.lower()}.{extension}"


def video_key(post_id: int, media_id: int) -> str:
    return f"renditions/{post_id}/{media_id}/video.mp4"


@dataclass
class CreatedPost:
    post: DbRow
    media: list[DbRow]
    created: bool


async def create_post(
    *,
    conn: AsyncConnection,
    author_id: int,
    caption: str | None,
    items: list[MediaSpec],
    idempotency_key: str | None,
) -> CreatedPost:
    """Insert a PENDING post and its media rows; a repeated idempotency key returns the
    first post instead (also when two retries race)."""
    post_id = await conn.scalar(
        insert(posts)
        .values(
            author_id=author_id,
            caption=caption,
            hashtags=hashtags_of(caption)[:MAX_HASHTAGS],
            idempotency_key=idempotency_key,
        )
        .on_conflict_do_nothing(
            index_elements=[posts.c.author_id, posts.c.idempotency_key],
            index_where=posts.c.idempotency_key.isnot(None),
        )
        .returning(posts.c.id)
    )
    created = post_id is not None
    if post_id is None:
        post_id = await conn.scalar(
            select(posts.c.id).where(
                posts.c.author_id == author_id, posts.c.idempotency_key == idempotency_key
            )
        )
    else:
        for position, item in enumerate(items):
            media_id = int(await conn.scalar(select(func.next_snowflake())) or 0)
            await conn.execute(
                insert(media).values(
                    id=media_id,
                    post_id=post_id,
                    position=position,
                    kind=media_kind(item.content_type.strip().lower()),
                    content_type=item.content_type.strip().lower(),
                    byte_size=item.byte_size,
                    original_key=original_key(post_id, media_id),
                )
            )
    if post_id is None:  # pragma: no cover - the conflicting row is visible to us
        raise DomainError(ErrorCode.CONFLICT, "Retry the request.", field="idempotencyKey")
    post = await post_row(conn=conn, post_id=post_id)
    if post is None:  # pragma: no cover - deleted between statements
        raise DomainError(ErrorCode.NOT_FOUND, "No such post.")
    return CreatedPost(
        post=post, media=await media_rows(conn=conn, post_ids=[post_id]), created=created
    )


async def set_upload_id(*, conn: AsyncConnection, media_id: int, upload_id: str) -> None:
    await conn.execute(update(media).where(media.c.id == media_id).values(upload_id=upload_id))


async def post_row(*, conn: AsyncConnection, post_id: int, lock: bool = False) -> DbRow | None:
    statement = select(posts).where(posts.c.id == post_id, posts.c.deleted_at.is_(None))
    if lock:
        statement = statement.with_for_update()
    return (await conn.execute(statement)).one_or_none()


async def posts_by_ids(*, conn: AsyncConnection, post_ids: list[int]) -> list[DbRow]:
    return list(
        (
            await conn.execute(
                select(posts).where(posts.c.id == any_(IDS), posts.c.deleted_at.is_(None)),
                {"ids": post_ids},
            )
        ).all()
    )


async def media_rows(*, conn: AsyncConnection, post_ids: list[int]) -> list[DbRow]:
    return list(
        (
            await conn.execute(
                select(media)
                .where(media.c.post_id == any_(IDS))
                .order_by(media.c.post_id, media.c.position),
                {"ids": post_ids},
            )
        ).all()
    )


def owned_post(row: DbRow | None, viewer_id: int) -> DbRow:
    """The post if the viewer wrote it: NOT_FOUND if missing, FORBIDDEN if someone else's."""
    if row is None:
        raise DomainError(ErrorCode.NOT_FOUND, "No such post.", field="postId")
    if row.author_id != viewer_id:
        raise DomainError(ErrorCode.FORBIDDEN, "Only the author can do this.", field="postId")
    return row


async def start_processing(*, conn: AsyncConnection, post_id: int) -> DbRow:
    """PENDING -> PROCESSING. Any other state is left alone (completeUpload is idempotent)."""
    return (await _start_processing(conn, post_id))[0]


async def hand_to_worker(*, conn: AsyncConnection, post_id: int) -> tuple[DbRow, bool]:
    """completeUpload's transition: PENDING -> PROCESSING (`start_processing`) and, when
    this call moved it, the processing job's outbox row in the same transaction, so a
    Redis outage at that moment delays processing instead of leaving the post stuck
    until the sweeper. Returns the row and whether it moved (the caller may then also
    enqueue the job at once, under the same job id: `workers.jobs.enqueue_process_post`)."""
    row, moved = await _start_processing(conn, post_id)
    if moved:
        await write_event(conn=conn, kind=PROCESS_POST, payload={"post_id": post_id})
    return row, moved


async def _start_processing(conn: AsyncConnection, post_id: int) -> tuple[DbRow, bool]:
    row = await conn.execute(
        update(posts)
        .where(posts.c.id == post_id, posts.c.status == PostStatus.PENDING)
        .values(status=PostStatus.PROCESSING, status_changed_at=func.now(), processing_attempts=1)
        .returning(posts)
    )
    updated = row.one_or_none()
    if updated is not None:
        return updated, True
    current = await post_row(conn=conn, post_id=post_id)
    if current is None:
        raise DomainError(ErrorCode.NOT_FOUND, "No such post.", field="postId")
    return current, False


@dataclass
class MediaOutcome:
    """What processing learnt about one media item."""

    media_id: int
    detected_type: str
    width: int
    height: int
    placeholder: str
    rendition_keys: dict[str, str]
    duration_seconds: float | None = None
    video_key: str | None = None
    # The verified copy of the original (S3): the row's `original_key` moves to it.
    original_key: str | None = None


def media_outcome_values(outcome: MediaOutcome) -> dict[str, object]:
    """A media row's columns once processed (posts and stories)."""
    values: dict[str, object] = {
        "detected_type": outcome.detected_type,
        "width": outcome.width,
        "height": outcome.height,
        "placeholder": outcome.placeholder,
        "rendition_keys": outcome.rendition_keys,
        "duration_seconds": outcome.duration_seconds,
        "video_key": outcome.video_key,
    }
    if outcome.original_key is not None:
        values["original_key"] = outcome.original_key
    return values


async def mark_ready(
    *, conn: AsyncConnection, post_id: int, outcomes: list[MediaOutcome]
) -> DbRow | None:
    """PROCESSING -> READY, in the caller's transaction, with every media row filled in.

    THE one READY transition: the author's post count moves here, and the feed's
    fan-out outbox row is written here, so neither can happen without the other.
    Returns None when the post is no longer PROCESSING (deleted, or a duplicate job
    finished first), which makes a repeated job a no-op.
    """
    row = (
        await conn.execute(
            update(posts)
            .where(
                posts.c.id == post_id,
                posts.c.status == PostStatus.PROCESSING,
                posts.c.deleted_at.is_(None),
            )
            .values(status=PostStatus.READY, status_changed_at=func.now(), failure_reason=None)
            .returning(posts)
        )
    ).one_or_none()
    if row is None:
        return None
    for outcome in outcomes:
        await conn.execute(
            update(media)
            .where(media.c.id == outcome.media_id, media.c.post_id == post_id)
            .values(**media_outcome_values(outcome))
        )
    await conn.execute(
        update(users).where(users.c.id == row.author_id).values(post_count=users.c.post_count + 1)
    )
    await write_fan_out_event(conn=conn, post_id=post_id, author_id=row.author_id)
    # Discovery: the accounts the caption @mentions are told, now that others can see
    # the post, and it enters its hashtags' pages: last, as a popular tag's counter row
    # is this transaction's most contended lock (held until the commit).
    mentioned = await mentioned_user_ids(conn=conn, author_id=row.author_id, text=row.caption)
    if mentioned:
        await record_notification(
            conn=conn,
            kind=NotificationKind.MENTION,
            actor_id=row.author_id,
            recipient_ids=mentioned,
            post_id=post_id,
        )
    await sync_post_tags(conn=conn, post_id=post_id)
    return row


async def mark_failed(*, conn: AsyncConnection, post_id: int, reason: str) -> bool:
    """PROCESSING (or PENDING) -> FAILED with a reason the author can read."""
    result = await conn.execute(
        update(posts)
        .where(
            posts.c.id == post_id,
            posts.c.status.in_([PostStatus.PENDING, PostStatus.PROCESSING]),
        )
        .values(status=PostStatus.FAILED, status_changed_at=func.now(), failure_reason=reason)
        .returning(posts.c.id)
    )
    return result.one_or_none() is not None


async def delete_post(*, conn: AsyncConnection, post_id: int, viewer_id: int) -> DbRow:
    """Hide the post from every view at once; its objects are deleted by a job (the
    `post_deleted` outbox row written here, see `domain.outbox`)."""
    row = owned_post(await post_row(conn=conn, post_id=post_id, lock=True), viewer_id)
    # The key is freed too: a client may reuse it for a new post.
    await conn.execute(
        update(posts)
        .where(posts.c.id == post_id)
        .values(deleted_at=func.now(), idempotency_key=None)
    )
    if row.status == PostStatus.READY:
        await conn.execute(
            update(users)
            .where(users.c.id == row.author_id)
            .values(post_count=users.c.post_count - 1)
        )
    # Tags from the caption and from the author's comments leave the tag pages.
    await sync_post_tags(conn=conn, post_id=post_id)
    # What follows the commit (feeds, caches, the objects in the store), in this
    # transaction: a Redis outage at the commit delays it, never loses it.
    await write_event(
        conn=conn, kind=POST_DELETED, payload={"post_id": post_id, "author_id": row.author_id}
    )
    return row


async def author_posts_page(
    *,
    conn: AsyncConnection,
    author_id: int,
    include_unready: bool,
    first: int,
    after: int | None,
) -> list[DbRow]:
    """first + 1 posts of an author, newest first (keyset on the time-ordered id)."""
    statement = (
        select(posts)
        .where(posts.c.author_id == author_id, posts.c.deleted_at.is_(None))
        .order_by(posts.c.id.desc())
        .limit(first + 1)
    )
    if not include_unready:
        statement = statement.where(posts.c.status == PostStatus.READY)
    if after is not None:
        statement = statement.where(posts.c.id < after)
    return list((await conn.execute(statement)).all())


async def stuck_posts(*, conn: AsyncConnection, settings: Settings) -> list[DbRow]:
    """PROCESSING longer than the timeout, or PENDING longer than a day (abandoned)."""
    now = datetime.now(UTC)
    processing_cutoff = now - timedelta(seconds=settings.processing_timeout_seconds)
    pending_cutoff = now - timedelta(seconds=settings.pending_ttl_seconds)
    statement = (
        select(posts.c.id, posts.c.status, posts.c.processing_attempts)
        .where(
            or_(
                and_(
                    posts.c.status == PostStatus.PROCESSING,
                    posts.c.status_changed_at < processing_cutoff,
                ),
                and_(
                    posts.c.status == PostStatus.PENDING,
                    posts.c.status_changed_at < pending_cutoff,
                ),
            ),
            posts.c.deleted_at.is_(None),
        )
        .order_by(posts.c.status_changed_at)
        .limit(500)
    )
    return list((await conn.execute(statement)).all())


async def processing_posts(
    *, conn: AsyncConnection, grace_seconds: float, limit: int = 1000
) -> list[DbRow]:
    """Posts in PROCESSING, longest first, for the sweeper to check that a live worker
    (or a queued job) still has each (workers.media.sweep_posts); `past_grace` says
    whether it last changed more than `grace_seconds` ago, by the database's clock."""
    past_grace = posts.c.status_changed_at < func.now() - timedelta(seconds=grace_seconds)
    statement = (
        select(posts.c.id, posts.c.processing_attempts, past_grace.label("past_grace"))
        .where(posts.c.status == PostStatus.PROCESSING, posts.c.deleted_at.is_(None))
        .order_by(posts.c.status_changed_at)
        .limit(limit)
    )
    return list((await conn.execute(statement)).all())


async def note_retry(*, conn: AsyncConnection, post_id: int, seen_attempts: int) -> int:
    """Count one more processing attempt and restart the stuck clock; returns the count,
    or 0 when the post is no longer PROCESSING at `seen_attempts` (another sweep retried
    it first, or it finished): then nothing changed."""
    attempts = await conn.scalar(
        update(posts)
        .where(
            posts.c.id == post_id,
            posts.c.status == PostStatus.PROCESSING,
            posts.c.processing_attempts == seen_attempts,
        )
        .values(processing_attempts=posts.c.processing_attempts + 1, status_changed_at=func.now())
        .returning(posts.c.processing_attempts)
    )
    return int(attempts or 0)


async def abandon_pending(*, conn: AsyncConnection, post_id: int) -> list[DbRow] | None:
    """Delete an abandoned PENDING post; returns its media rows so objects can go too, or
    None when the post is no longer PENDING (its upload was completed meanwhile): then
    nothing changed and nothing of it may be deleted."""
    abandoned = await conn.scalar(
        update(posts)
        .where(posts.c.id == post_id, posts.c.status == PostStatus.PENDING)
        .values(
            deleted_at=func.now(),
            status=PostStatus.FAILED,
            failure_reason="Upload abandoned.",
            idempotency_key=None,
        )
        .returning(posts.c.id)
    )
    if abandoned is None:
        return None
    return await media_rows(conn=conn, post_ids=[post_id])
