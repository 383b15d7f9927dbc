"""The outbox relay and the jobs of the effects that follow a committed change.

Guarantee: at least once (docs/delivery.md). A change writes its outbox row in its own
transaction (`domain.outbox`); the relay, every second in the worker (and kicked after
a READY commit), hands each unsent row to its kind's dispatcher (`DISPATCH`: one table)
and marks it sent only after that succeeded, so a Redis outage delays an effect but
never loses it. Dispatchers enqueue jobs under deterministic ids (a repeat is refused)
or, for `invalidate` rows, drop the stale cache entries themselves, a whole batch in one
pipelined round trip; every effect is idempotent. Sent rows are pruned a day later
(`prune_outbox`, hourly).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from prometheus_client import Counter
from redis.exceptions import RedisError
from sqlalchemy import delete, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

from domain import follows as follow_domain
from domain import outbox as kinds
from infra.logs import JOB, request_context
from infra.outages import is_outage
from infra.resources import Resources
from models import OutboxEvent, table_of
from workers.jobs import (
    enqueue_deliver_notifications,
    enqueue_fan_out,
    enqueue_follow_changed,
    enqueue_post_deleted,
    enqueue_process_post,
    enqueue_process_story,
    retry_later,
)

log = logging.getLogger("instagraph.worker.outbox")

outbox = table_of(OutboxEvent)

Dispatch = Callable[[Resources, int, dict[str, Any]], Awaitable[None]]


async def _fan_out(resources: Resources, event_id: int, payload: dict[str, Any]) -> None:
    await enqueue_fan_out(resources.jobs, int(payload["post_id"]), ready_at=payload.get("ready_at"))


async def _notify(resources: Resources, event_id: int, payload: dict[str, Any]) -> None:
    await enqueue_deliver_notifications(resources.jobs, event_id, payload)


async def _process_post(resources: Resources, event_id: int, payload: dict[str, Any]) -> None:
    # Attempt 1, the id completeUpload enqueues at once: one of the two is refused.
    await enqueue_process_post(resources.jobs, int(payload["post_id"]), attempt=1)


async def _process_story(resources: Resources, event_id: int, payload: dict[str, Any]) -> None:
    await enqueue_process_story(resources.jobs, int(payload["story_id"]), attempt=1)


async def _post_deleted(resources: Resources, event_id: int, payload: dict[str, Any]) -> None:
    await enqueue_post_deleted(resources.jobs, int(payload["post_id"]), int(payload["author_id"]))


async def _follow_changed(resources: Resources, event_id: int, payload: dict[str, Any]) -> None:
    await enqueue_follow_changed(resources.jobs, event_id, payload)


# Every kind but `invalidate` (applied by the relay itself, a batch at a time).
DISPATCH: dict[str, Dispatch] = {
    kinds.FAN_OUT: _fan_out,
    kinds.NOTIFY: _notify,
    kinds.PROCESS_POST: _process_post,
    kinds.PROCESS_STORY: _process_story,
    kinds.POST_DELETED: _post_deleted,
    kinds.FOLLOW_CHANGED: _follow_changed,
}
# The kinds this relay selects. A row of any other kind (written by newer code during a
# rolling deploy) stays unsent for a worker that knows it: never marked sent unsent.
KNOWN_KINDS = frozenset({*DISPATCH, kinds.INVALIDATE})

# Rows whose dispatch failed with something other than an outage (a bug, a payload the
# dispatcher cannot read): logged, counted, and marked sent so that they block nothing.
OUTBOX_FAILED = Counter(
    "instagraph_outbox_failed_total",
    "Outbox rows given up on: their dispatch raised something other than an outage.",
    ["kind"],
)


def _outage(error: BaseException) -> bool:
    """A failure that ends the relay run (the rows stay unsent for the next one): Redis
    or a connection refused, reset or timed out. Anything else is one row's trouble."""
    return isinstance(error, (RedisError, OSError)) or is_outage(error)


def _give_up(event: Any, error: BaseException) -> None:
    log.error(
        "outbox row %d (%s) failed, given up: %r; payload %s",
        event.id,
        event.kind,
        error,
        event.payload,
        exc_info=error,
    )
    OUTBOX_FAILED.labels(event.kind).inc()


# Rows per relay transaction, and how many batches one relay run sends at most. Each
# enqueue is a few Redis round trips in series (arq's WATCH/MULTI), ~1 ms on a quiet
# machine and several on a loaded one: 10 batches (2,000 jobs) take a few seconds, and
# the time budget stops a slow run from starting another batch, so a run ends well
# inside the cron's 30 s timeout (one killed mid-batch rolls back its marks after its
# jobs went out: the whole batch is relayed again, on job ids that mostly refuse it).
# A burst (10,000 likes make 10,000 notification rows) still drains within seconds,
# since the cron runs every second; their invalidations cost one round trip a batch.
RELAY_BATCH = 200
RELAY_MAX_BATCHES = 10
RELAY_BUDGET_SECONDS = 10.0
# One relay at a time across workers (the cron fires every second in every worker, and
# a slow run may overlap the next tick): a Redis lock, expiring with the cron's timeout.
RELAY_LOCK_KEY = "outbox:relay:lock"
RELAY_LOCK_SECONDS = 30.0


class _Outage(Exception):
    """Redis (or PostgreSQL) unreachable mid-batch: stop the run, mark what went out."""


async def relay_outbox(ctx: dict[str, Any], *, wait: float | None = None) -> int:
    """Hand unsent outbox rows to their dispatchers; returns how many were handled
    (sent, or given up on). Pending hidden-set invalidations first, then the rest
    oldest first. Returns 0 while Redis is down, and at once while another relay runs
    (or, with `wait`, once it waited that many seconds for it to end)."""
    resources: Resources = ctx["resources"]
    lock = resources.redis.lock(
        RELAY_LOCK_KEY,
        timeout=RELAY_LOCK_SECONDS,
        blocking=wait is not None,
        blocking_timeout=wait,
    )
    try:
        if not await lock.acquire():
            return 0
    except (RedisError, OSError):
        log.warning("outbox relay: Redis unreachable, will retry", exc_info=True)
        return 0
    try:
        return await _relay(resources)
    finally:
        with contextlib.suppress(RedisError, OSError):  # expired or Redis gone: it expires
            await lock.release()


async def _relay(resources: Resources) -> int:
    # A block's hidden sets first: behind a backlog, a stale set would show a blocked
    # user the blocker's things for as long as the backlog takes (docs/delivery.md).
    total, ok = await _relay_batch(resources, hidden_only=True)
    deadline = time.monotonic() + RELAY_BUDGET_SECONDS
    for _ in range(RELAY_MAX_BATCHES if ok else 0):
        handled, ok = await _relay_batch(resources)
        total += handled
        if not ok or handled < RELAY_BATCH or time.monotonic() > deadline:
            break
    return total


async def _relay_batch(resources: Resources, *, hidden_only: bool = False) -> tuple[int, bool]:
    """One batch in one transaction: (rows handled, False when an outage stopped it)."""
    async with resources.engine.begin() as conn:
        if hidden_only:
            events = await kinds.unsent_hidden_invalidations(conn=conn, limit=RELAY_BATCH)
        else:
            events = await kinds.unsent_events(conn=conn, limit=RELAY_BATCH, kinds=KNOWN_KINDS)
        done, ok = await _dispatch(resources, events)
        await kinds.mark_sent(conn=conn, event_ids=done)
    return len(done), ok


async def _dispatch(resources: Resources, events: list[Any]) -> tuple[list[int], bool]:
    """Apply and hand on these rows: (ids handled, False when an outage stopped it)."""
    done: list[int] = []
    try:
        done += await _invalidate(resources, events)
    except _Outage:
        return done, False
    for event in events:
        dispatch = DISPATCH.get(event.kind)
        if dispatch is None:  # `invalidate`: applied above
            continue
        try:
            # The job logs under the request that wrote the row (infra/logs.py); the relay's
            # own lines keep the relay's job name.
            with request_context(event.payload.get(kinds.REQUEST_ID_KEY), JOB.get()):
                await dispatch(resources, event.id, event.payload)
        except Exception as error:
            if _outage(error):  # leave the rest for the next run
                log.warning("outbox relay: enqueue failed, will retry", exc_info=True)
                return done, False
            _give_up(event, error)
        done.append(event.id)
    return done, True


async def _invalidate(resources: Resources, events: list[Any]) -> list[int]:
    """Apply the invalidations of these rows (`invalidate` rows, and those folded into
    others), all in one go, or row by row when that failed for one row's sake. Returns
    the `invalidate` rows handled (the others are dispatched after); raises `_Outage`
    when Redis or PostgreSQL is unreachable (rows whose invalidation did not happen
    are then not dispatched either)."""
    stale = [
        (event, payload)
        for event in events
        if (payload := kinds.invalidation_of(event.kind, event.payload)) is not None
    ]
    if not stale:
        return []
    try:
        await apply_invalidations(resources, [payload for _, payload in stale])
    except Exception as error:
        if _outage(error):
            log.warning("outbox relay: invalidation failed, will retry", exc_info=True)
            raise _Outage from error
        for event, payload in stale:  # one bad row must not hold back the others
            try:
                await apply_invalidations(resources, [payload])
            except Exception as row_error:
                if _outage(row_error):
                    raise _Outage from row_error
                _give_up(event, row_error)
    return [event.id for event, _ in stale if event.kind == kinds.INVALIDATE]


async def apply_invalidations(resources: Resources, payloads: list[dict[str, Any]]) -> None:
    """Drop what these invalidations name (`domain.outbox.invalidation`): engagement
    counts, liked sets and first comments in one pipelined round trip, user records in
    another, the hidden sets (first) re-read from PostgreSQL. Raises when Redis refuses
    (the rows then stay unsent)."""
    likes = [(int(p), int(u)) for payload in payloads for p, u in payload.get("likes", ())]
    comments = [int(p) for payload in payloads for p in payload.get("comments", ())]
    users = sorted({int(u) for payload in payloads for u in payload.get("users", ())})
    hidden = sorted({int(u) for payload in payloads for u in payload.get("hidden", ())})
    if hidden:  # first: the one a stale value of which reveals something
        await resources.hidden.refresh(*hidden)
    if likes or comments:
        await resources.engagement.changed(likes=likes, comments=comments, best_effort=False)
    if users:
        await resources.recent.forget_users(users)


async def kick_relay(ctx: dict[str, Any], post_id: int | None = None) -> None:
    """Right after a READY commit: send that post's own `fan_out` row at once, not
    behind the backlog (the cron relay is the safety net, and sends the rest). Without
    a post, a whole relay run."""
    try:
        if post_id is None:  # after another relay running now, if one is
            await relay_outbox(ctx, wait=RELAY_BUDGET_SECONDS)
            return
        resources: Resources = ctx["resources"]
        async with resources.engine.begin() as conn:
            events = await kinds.unsent_fan_out_of(conn=conn, post_id=post_id)
            done, _ = await _dispatch(resources, events)
            await kinds.mark_sent(conn=conn, event_ids=done)
    except Exception:  # the cron relay retries; never fail the job that made the post READY
        log.warning("immediate outbox relay failed; the cron relay will send it", exc_info=True)


# Sent rows are kept a day (to look into a delivery), then pruned in batches of this
# many rows, each its own short transaction, at most PRUNE_MAX_BATCHES per run.
OUTBOX_KEEP = timedelta(days=1)
PRUNE_BATCH = 5000
PRUNE_MAX_BATCHES = 200


async def prune_outbox(ctx: dict[str, Any]) -> int:
    """Delete outbox rows sent more than a day ago (the hourly cron); returns how many.

    The rows are walked in primary-key order from the oldest: the newest row older
    than a day bounds the walk, so a run reads the rows it deletes (and the rare row
    still unsent, which it leaves), never the day of rows it keeps."""
    resources: Resources = ctx["resources"]
    total = 0
    async with resources.engine.connect() as conn:
        cutoff = await conn.scalar(select(func.now() - OUTBOX_KEEP))
        bound = await conn.scalar(
            select(outbox.c.id).where(outbox.c.created_at >= cutoff).order_by(outbox.c.id).limit(1)
        )
    for _ in range(PRUNE_MAX_BATCHES):
        oldest = (
            select(outbox.c.id)
            .where(outbox.c.sent_at < cutoff)
            .order_by(outbox.c.id)
            .limit(PRUNE_BATCH)
        )
        if bound is not None:
            oldest = oldest.where(outbox.c.id < bound)
        async with resources.engine.begin() as conn:
            result = await conn.execute(
                delete(outbox).where(outbox.c.id.in_(oldest.scalar_subquery()))
            )
        deleted = int(result.rowcount or 0)
        total += deleted
        if deleted < PRUNE_BATCH:
            break
    if total:
        log.info("outbox: pruned %d sent rows", total)
    return total


# -- the effects' jobs --------------------------------------------------------------

TRANSIENT = (RedisError, OSError, DBAPIError, SQLAlchemyTimeoutError)


async def follow_changed(ctx: dict[str, Any], event_id: int, payload: dict[str, Any]) -> str:
    """A follow edge appeared or went away (`domain.follows`): the follower's feed gains
    or loses the followee's recent posts, celebrity lists go stale, and both users'
    cached records go; a threshold crossing is acted on here only, under job ids named
    by this row (`HomeFeed.act_on_crossing`), so once.

    The request did the feed part at once, best effort; this is the guarantee.
    Idempotent (merging posts already there, removing posts already gone change
    nothing) and safe out of order: when the edge has been reversed since (an unfollow
    after this follow), the feed is left to the reversing change's own row, but the
    crossing this change made is still acted on (the reversal's is its own). Returns
    "applied" or "skipped" (the feed part), "+crossing" when the threshold was crossed."""
    resources: Resources = ctx["resources"]
    follower_id, followee_id = int(payload["follower_id"]), int(payload["followee_id"])
    added, followers = bool(payload["added"]), int(payload["followers"])
    home_feed = resources.home_feed
    try:
        async with resources.engine.connect() as conn:
            following = followee_id in await follow_domain.followees_among(
                conn=conn, follower_id=follower_id, user_ids=[followee_id]
            )
        outcome = "skipped"
        if following == added:
            await home_feed.follow_changed(
                follower_id, followee_id, added=added, followers=followers
            )
            outcome = "applied"
        if await home_feed.act_on_crossing(
            followee_id, added=added, followers=followers, crossing=event_id
        ):
            outcome += "+crossing"
        await resources.recent.forget_users([follower_id, followee_id])
    except TRANSIENT as exc:
        retry_later(ctx, exc, f"outbox row {event_id}: follow change", patient=True)
    return outcome


async def post_deleted(ctx: dict[str, Any], post_id: int, author_id: int) -> None:
    """A deleted post leaves every feed and cache (`HomeFeed.post_deleted`: its cached
    copy becomes a tombstone, the author's pull set and cached counts lose it), then its
    objects go (originals, renditions, open multipart uploads). deletePost did the first
    part at once, best effort; both parts are idempotent. Retried for about an hour
    (`retry_later(patient=True)`): the row is sent, this job is the only carrier left."""
    # Here, not at the top: workers.media imports the relay (kick_relay) from this side.
    from workers.media import delete_post_objects

    resources: Resources = ctx["resources"]
    try:
        await resources.home_feed.post_deleted(author_id, post_id)
        await delete_post_objects(ctx, post_id)
    except Exception as exc:  # Redis, PostgreSQL or the store: all transient here
        retry_later(ctx, exc, f"deleted post {post_id}: clean-up", patient=True)
