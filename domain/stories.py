"""Stories: one photo or video, visible for 24 hours from READY and never after.

A story goes PENDING -> PROCESSING -> READY or FAILED like a post, through the same
upload targets, checks and rendition pipeline (its media item is a `media` row owned by
the story). READY sets `expires_at = ready_at + TTL`, and every read filters on it in SQL
(`live_until(...) > now()`), so a story vanishes at that instant even if the cleanup cron
(`expired_stories` / `delete_stories`) has not yet removed its row and objects. A story
that never became READY is treated the same way from `created_at + TTL`: discarded.

Who may see what (READY and live; the author also sees their own unfinished ones;
private accounts and blocks) is decided by the resolvers over `StoryRecord`s, with the
same helpers posts use; the tray's SQL applies the same rules to the followed accounts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    and_,
    any_,
    delete,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from domain import posts as post_domain
from domain.blocks import not_hidden
from domain.errors import DomainError
from domain.outbox import PROCESS_STORY, write_event
from models import IDS, DbRow, Follow, Media, PostStatus, Story, StoryView, table_of
from settings import Settings

stories = table_of(Story)
views = table_of(StoryView)
media = table_of(Media)
follows = table_of(Follow)

# The tray's bounds (what a storiesTray request may return, and what its query cost
# counts, schema/cost.py LIST_SIZES): at most this many reels, each with at most this
# many stories (a reel's newest).
TRAY_MAX_REELS = 100
REEL_MAX_STORIES = 100
# How many stories one cleanup statement takes on; the cron loops until none is left.
CLEANUP_BATCH = 500
# How many stuck stories one sweep takes on (the next sweep takes the rest).
SWEEP_BATCH = 500
# arq re-runs a killed worker's job after job_timeout + ~10 s (FACTS.md): the sweeper
# waits a minute more, so it picks up only what arq itself will not.
STUCK_MARGIN_SECONDS = 60


def story_ttl(settings: Settings) -> timedelta:
    return timedelta(hours=settings.story_ttl_hours)


def cache_control(ttl: timedelta) -> str:
    """The Cache-Control a story's renditions and video are stored with: browsers and
    CDNs may keep them no longer than the story is shown (never the year that post
    renditions get: an expired story must not outlive its TTL in a cache)."""
    return f"public, max-age={int(ttl.total_seconds())}"


def stuck_after(settings: Settings) -> timedelta:
    """How long a story may stay PROCESSING before the sweeper re-enqueues it: the job's
    timeout, plus the margin arq itself waits before re-running a killed worker's job."""
    return timedelta(seconds=settings.job_timeout_seconds + STUCK_MARGIN_SECONDS)


# --- Storage keys: under their own `stories/` prefixes, so a bucket lifecycle rule can
# expire them as a safety net, and one story's objects go with two prefix deletes.


def original_key(story_id: int, media_id: int) -> str:
    return f"originals/stories/{story_id}/{media_id}"


def verified_key(story_id: int, media_id: int, token: str) -> str:
    """The worker's verified copy of the original (S3; as `domain.posts.verified_key`)."""
    return f"verified/stories/{story_id}/{media_id}-{token}"


def rendition_key(story_id: int, media_id: int, size: str, fmt: str) -> str:
    extension = "jpg" if fmt == "JPEG" else fmt.lower()
    return f"renditions/stories/{story_id}/{media_id}/{size.lower()}.{extension}"


def video_key(story_id: int, media_id: int) -> str:
    return f"renditions/stories/{story_id}/{media_id}/video.mp4"


def object_prefixes(story_id: int) -> list[str]:
    """Every object of a story lives under one of these."""
    return [
        f"originals/stories/{story_id}/",
        f"verified/stories/{story_id}/",
        f"renditions/stories/{story_id}/",
    ]


# --- Input


def check_story_media(spec: post_domain.MediaSpec, settings: Settings) -> list[DomainError]:
    """A story's one media item is checked exactly as a post's (accepted types and size
    limits live in `domain.posts`); errors name `media.contentType` / `media.byteSize`."""
    errors = post_domain.check_post_input(
        caption=None, items=[spec], idempotency_key=None, settings=settings
    )
    for error in errors:
        if error.field and error.field.startswith("media.0."):
            error.field = "media." + error.field.removeprefix("media.0.")
    return errors


@dataclass(frozen=True)
class CreatedStory:
    story: DbRow
    media: DbRow


async def create_story(
    *, conn: AsyncConnection, author_id: int, spec: post_domain.MediaSpec
) -> CreatedStory:
    """Insert a PENDING story and its media row (keys under the story's prefixes)."""
    content_type = spec.content_type.strip().lower()
    story = (
        await conn.execute(insert(stories).values(author_id=author_id).returning(stories))
    ).one()
    media_id = int(await conn.scalar(select(func.next_snowflake())) or 0)
    item = (
        await conn.execute(
            insert(media)
            .values(
                id=media_id,
                story_id=story.id,
                position=0,
                kind=post_domain.media_kind(content_type),
                content_type=content_type,
                byte_size=spec.byte_size,
                original_key=original_key(story.id, media_id),
            )
            .returning(media)
        )
    ).one()
    return CreatedStory(story=story, media=item)


# --- Reading


@dataclass(frozen=True)
class StoryMedia:
    """What `schema.posts.Media` reads of a story's media row."""

    id: int
    kind: str
    width: int | None
    height: int | None
    placeholder: str | None
    duration_seconds: float | None
    rendition_keys: dict[str, str]
    video_key: str | None


@dataclass(frozen=True)
class StoryRecord:
    """A story with its media and whether the reading viewer has seen it."""

    id: int
    author_id: int
    status: str
    failure_reason: str | None
    created_at: datetime
    ready_at: datetime | None
    # READY: ready_at + TTL. Before: created_at + TTL, when it is discarded unless READY.
    expires_at: datetime
    seen: bool
    media: StoryMedia = field(compare=False)

    @property
    def ready(self) -> bool:
        return self.status == PostStatus.READY


def live_until(ttl: timedelta) -> ColumnElement[Any]:
    """When a story stops being shown: its expires_at once READY, otherwise the moment an
    unfinished story is given up."""
    return func.coalesce(stories.c.expires_at, stories.c.created_at + ttl)


def _before_deadline(ttl: timedelta) -> ColumnElement[bool]:
    """An unfinished story still within its TTL: past it, the cleanup may already have
    deleted its objects, so it must never move on (to PROCESSING, or to READY)."""
    return stories.c.created_at > func.now() - ttl


def _record_query(viewer_id: int | None, ttl: timedelta, source: Any = None) -> Any:
    """Story records (joined with their media row) from `source`, by default the
    stories; the caller adds the WHERE."""
    seen: ColumnElement[bool] = (
        exists().where(views.c.story_id == stories.c.id, views.c.viewer_id == viewer_id)
        if viewer_id is not None
        else false()
    )
    return select(
        stories.c.id,
        stories.c.author_id,
        stories.c.status,
        stories.c.failure_reason,
        stories.c.created_at,
        stories.c.ready_at,
        live_until(ttl).label("expires_at"),
        seen.label("seen"),
        media.c.id.label("media_id"),
        media.c.kind,
        media.c.width,
        media.c.height,
        media.c.placeholder,
        media.c.duration_seconds,
        media.c.rendition_keys,
        media.c.video_key,
    ).select_from(
        (source if source is not None else stories).join(media, media.c.story_id == stories.c.id)
    )


def _record(row: DbRow) -> StoryRecord:
    return StoryRecord(
        id=row.id,
        author_id=row.author_id,
        status=row.status,
        failure_reason=row.failure_reason,
        created_at=row.created_at,
        ready_at=row.ready_at,
        expires_at=row.expires_at,
        seen=row.seen,
        media=StoryMedia(
            id=row.media_id,
            kind=row.kind,
            width=row.width,
            height=row.height,
            placeholder=row.placeholder,
            duration_seconds=row.duration_seconds,
            rendition_keys=dict(row.rendition_keys),
            video_key=row.video_key,
        ),
    )


async def live_stories_by_ids(
    *, conn: AsyncConnection, story_ids: list[int], viewer_id: int | None, ttl: timedelta
) -> dict[int, StoryRecord]:
    """Unexpired stories by id, in any state (the caller decides who sees which), each
    with the viewer's seen flag; one statement."""
    rows = await conn.execute(
        _record_query(viewer_id, ttl).where(
            stories.c.id == any_(IDS), live_until(ttl) > func.now()
        ),
        {"ids": story_ids},
    )
    return {row.id: _record(row) for row in rows}


def tray_query(viewer_id: int, ttl: timedelta) -> Any:
    """Every live READY story of the viewer and of the accounts they follow (approved
    follows: a private account's stories reach its followers only), none of anyone
    hidden by a block either way, with the viewer's seen flags. Ordered by author, then
    oldest first.

    The authors are a derived table joined to the stories, so the plan probes the
    (author_id, expires_at) index of READY stories once per followed account, then the
    media row by its story_id index. Measured (EXPLAIN ANALYZE, 300 followees, 1,515 of
    their stories live among 200,000): 12.7 ms, where a filter `author_id IN (followees)
    OR author_id = viewer` made PostgreSQL scan every live story and hash the whole
    media table (65.8 ms).
    """
    authors = union_all(
        select(literal(viewer_id, BigInteger).label("author_id")),
        select(follows.c.followee_id).where(follows.c.follower_id == viewer_id),
    ).subquery("authors")
    source = authors.join(stories, stories.c.author_id == authors.c.author_id)
    return (
        _record_query(viewer_id, ttl, source)
        .where(
            # expires_at itself (not live_until): the index's column, and set when READY.
            stories.c.status == PostStatus.READY,
            stories.c.expires_at > func.now(),
            not_hidden(viewer_id, stories.c.author_id),
        )
        .order_by(stories.c.author_id, stories.c.ready_at, stories.c.id)
    )


async def tray_stories(
    *, conn: AsyncConnection, viewer_id: int, ttl: timedelta
) -> list[StoryRecord]:
    """The tray's stories (`tray_query`) in one statement."""
    return [_record(row) for row in await conn.execute(tray_query(viewer_id, ttl))]


@dataclass(frozen=True)
class Reel:
    """One author's live stories, oldest first."""

    author_id: int
    stories: list[StoryRecord]

    @property
    def has_unseen(self) -> bool:
        return any(not story.seen for story in self.stories)

    @property
    def latest(self) -> tuple[datetime | None, int]:
        newest = self.stories[-1]
        return newest.ready_at, newest.id


def order_reels(records: list[StoryRecord], viewer_id: int) -> list[Reel]:
    """Group stories (oldest first within an author) into reels: the viewer's own reel
    first when they have live stories, then reels with unseen stories, then the others;
    within each group the reel whose newest story is the most recent comes first. At most
    TRAY_MAX_REELS reels of at most REEL_MAX_STORIES stories (the newest) each."""
    grouped: dict[int, list[StoryRecord]] = {}
    for record in sorted(records, key=lambda r: (r.author_id, r.ready_at or r.created_at, r.id)):
        grouped.setdefault(record.author_id, []).append(record)
    reels = [Reel(author_id, items[-REEL_MAX_STORIES:]) for author_id, items in grouped.items()]
    own = [reel for reel in reels if reel.author_id == viewer_id]
    others = sorted(
        (reel for reel in reels if reel.author_id != viewer_id),
        key=lambda reel: (reel.latest[0] or datetime.min, reel.latest[1]),
        reverse=True,
    )
    # A stable sort: recency order is kept within the unseen and the seen groups.
    return (own + sorted(others, key=lambda reel: not reel.has_unseen))[:TRAY_MAX_REELS]


async def story_row(*, conn: AsyncConnection, story_id: int) -> DbRow | None:
    return (await conn.execute(select(stories).where(stories.c.id == story_id))).one_or_none()


async def story_media_row(*, conn: AsyncConnection, story_id: int) -> DbRow:
    """The story's media row, shaped as a post's (for the upload and render pipeline)."""
    return (await conn.execute(select(media).where(media.c.story_id == story_id))).one()


# --- The state machine


async def start_processing(*, conn: AsyncConnection, story_id: int, ttl: timedelta) -> bool:
    """PENDING -> PROCESSING; False when the story was not PENDING (a repeat) or is past
    its deadline (discarded)."""
    moved = await conn.execute(
        update(stories)
        .where(
            stories.c.id == story_id,
            stories.c.status == PostStatus.PENDING,
            _before_deadline(ttl),
        )
        # The first attempt: the sweeper counts its re-enqueues from here.
        .values(status=PostStatus.PROCESSING, status_changed_at=func.now(), processing_attempts=1)
        .returning(stories.c.id)
    )
    return moved.one_or_none() is not None


async def hand_to_worker(*, conn: AsyncConnection, story_id: int, ttl: timedelta) -> bool:
    """completeStoryUpload's transition (`start_processing`) and, when it moved the story,
    the processing job's outbox row in the same transaction (a Redis outage at that
    moment delays processing, see `domain.outbox`); returns whether it moved."""
    moved = await start_processing(conn=conn, story_id=story_id, ttl=ttl)
    if moved:
        await write_event(conn=conn, kind=PROCESS_STORY, payload={"story_id": story_id})
    return moved


async def mark_ready(
    *, conn: AsyncConnection, story_id: int, outcome: post_domain.MediaOutcome, ttl: timedelta
) -> DbRow | None:
    """PROCESSING -> READY with its media row filled in, live from now for `ttl`.
    None when the story is no longer PROCESSING (a duplicate job won) or is past its
    deadline: the cleanup may have deleted its objects already, so it is discarded
    rather than shown with missing media (see `is_discarded`)."""
    row = (
        await conn.execute(
            update(stories)
            .where(
                stories.c.id == story_id,
                stories.c.status == PostStatus.PROCESSING,
                _before_deadline(ttl),
            )
            .values(
                status=PostStatus.READY,
                status_changed_at=func.now(),
                ready_at=func.now(),
                expires_at=func.now() + ttl,
                failure_reason=None,
            )
            .returning(stories)
        )
    ).one_or_none()
    if row is None:
        return None
    await conn.execute(
        update(media)
        .where(media.c.id == outcome.media_id, media.c.story_id == story_id)
        .values(**post_domain.media_outcome_values(outcome))
    )
    return row


async def mark_failed(*, conn: AsyncConnection, story_id: int, reason: str) -> bool:
    """PROCESSING -> FAILED with a reason the author can read."""
    moved = await conn.execute(
        update(stories)
        .where(stories.c.id == story_id, stories.c.status == PostStatus.PROCESSING)
        .values(status=PostStatus.FAILED, status_changed_at=func.now(), failure_reason=reason)
        .returning(stories.c.id)
    )
    return moved.one_or_none() is not None


async def is_discarded(*, conn: AsyncConnection, story_id: int, ttl: timedelta) -> bool:
    """Whether the story is gone or will be: deleted, or never READY within its TTL (the
    cleanup's to delete, objects first). A job that wrote objects for such a story
    deletes them itself: the cleanup may have run before the writes."""
    kept = await conn.scalar(
        select(
            exists().where(
                stories.c.id == story_id,
                or_(stories.c.status == PostStatus.READY, _before_deadline(ttl)),
            )
        )
    )
    return not kept


async def mark_seen(*, conn: AsyncConnection, story_id: int, viewer_id: int) -> bool:
    """Record that the viewer saw a READY, live story; False (nothing written) when there
    is no such story. Idempotent: the (story_id, viewer_id) primary key keeps one row.

    One statement: the story row is read with FOR KEY SHARE, so a cleanup deleting it
    concurrently either commits first (the story is not found) or waits for this insert;
    an INSERT checked only by the foreign key would instead fail on a story deleted
    between the resolver's read and the write."""
    live = (
        select(stories.c.id)
        .where(
            stories.c.id == story_id,
            stories.c.status == PostStatus.READY,
            stories.c.expires_at > func.now(),
        )
        .with_for_update(read=True, key_share=True)  # FOR KEY SHARE
        .cte("live")
    )
    seen = (
        insert(views)
        .from_select(["story_id", "viewer_id"], select(live.c.id, literal(viewer_id, BigInteger)))
        .on_conflict_do_nothing()
        .cte("seen")
    )
    found = await conn.scalar(select(func.count()).select_from(live).add_cte(seen))
    return bool(found)


# --- Stuck processing


async def stuck_stories(
    *, conn: AsyncConnection, ttl: timedelta, stuck_after: timedelta
) -> list[DbRow]:
    """Up to SWEEP_BATCH stories PROCESSING for longer than `stuck_after` (the job was
    never enqueued, its worker died, or its last try failed) and still within their
    TTL (past it they are the cleanup's), with their attempts so far."""
    rows = await conn.execute(
        select(stories.c.id, stories.c.processing_attempts)
        .where(
            stories.c.status == PostStatus.PROCESSING,
            stories.c.status_changed_at < func.now() - stuck_after,
            _before_deadline(ttl),
        )
        .order_by(stories.c.status_changed_at)
        .limit(SWEEP_BATCH)
    )
    return list(rows)


async def note_retry(
    *, conn: AsyncConnection, story_id: int, ttl: timedelta, stuck_after: timedelta
) -> int:
    """Count one more processing attempt of a stuck story and restart its clock; returns
    the count, or 0 when it is no longer stuck (finished, or another sweeper took it)."""
    attempts = await conn.scalar(
        update(stories)
        .where(
            stories.c.id == story_id,
            stories.c.status == PostStatus.PROCESSING,
            stories.c.status_changed_at < func.now() - stuck_after,
            _before_deadline(ttl),
        )
        .values(processing_attempts=stories.c.processing_attempts + 1, status_changed_at=func.now())
        .returning(stories.c.processing_attempts)
    )
    return int(attempts or 0)


# --- Cleanup


def _gone(ttl: timedelta) -> ColumnElement[bool]:
    # Two branches, each matching a partial index (READY by expires_at, the rest by
    # created_at); equivalent to live_until(ttl) <= now().
    return or_(
        and_(stories.c.status == PostStatus.READY, stories.c.expires_at <= func.now()),
        and_(stories.c.status != PostStatus.READY, stories.c.created_at <= func.now() - ttl),
    )


async def expired_stories(*, conn: AsyncConnection, ttl: timedelta) -> list[DbRow]:
    """Up to CLEANUP_BATCH stories past their time (expired, or never READY within the
    TTL), with their media row's original key and open multipart upload."""
    branches = [
        select(stories.c.id)
        .where(stories.c.status == PostStatus.READY, stories.c.expires_at <= func.now())
        .limit(CLEANUP_BATCH),
        select(stories.c.id)
        .where(stories.c.status != PostStatus.READY, stories.c.created_at <= func.now() - ttl)
        .limit(CLEANUP_BATCH),
    ]
    gone = union_all(*(branch.subquery().select() for branch in branches)).subquery()
    rows = await conn.execute(
        select(stories.c.id, media.c.original_key, media.c.upload_id)
        .select_from(stories.outerjoin(media, media.c.story_id == stories.c.id))
        .where(stories.c.id.in_(select(gone.c.id)))
        .order_by(stories.c.id)
        .limit(CLEANUP_BATCH)
    )
    return list(rows)


async def delete_stories(*, conn: AsyncConnection, story_ids: list[int], ttl: timedelta) -> int:
    """Delete these stories' rows (their media rows and views go with them) if they are
    still past their time; returns how many went."""
    result = await conn.execute(
        delete(stories).where(stories.c.id == any_(IDS), _gone(ttl)).returning(stories.c.id),
        {"ids": story_ids},
    )
    return len(result.all())
