"""The transactional outbox: every asynchronous side effect of a committed change.

A change that must be followed by work outside PostgreSQL (a job, a Redis write) writes
one row here in its own transaction (`write_event`); the relay (`workers.feed.
relay_outbox`, every second in the worker, and kicked after a READY commit) hands each
unsent row to the dispatcher of its kind and marks it sent only once that succeeded.
So a Redis outage at the moment of the change delays the effect, never loses it, and a
change that rolled back has no effect. Every dispatcher is idempotent (deterministic
job ids, jobs that re-read the truth): the relay may hand a row over more than once.
docs/delivery.md lists every kind, its job and what happens when Redis or the worker is
down.

The kinds (payloads are JSON objects of ids):

    fan_out          a post became READY              {post_id, author_id}
    notify           notifications to deliver         `domain.notifications`
    process_post     a post's upload completed        {post_id}
    process_story    a story's upload completed       {story_id}
    post_deleted     a post was deleted               {post_id, author_id}
    follow_changed   a follow edge appeared or went   {follower_id, followee_id, added,
                                                       followers}
    invalidate       cached values went stale         {likes: [[post, user]],
                                                       comments: [post], users: [user],
                                                       hidden: [user]}

`invalidate` is applied by the relay itself, a batch of rows in one pipelined round
trip (cache deletions are cheap and idempotent: no job per like); the others become arq
jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Collection, Iterable, Sequence
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from infra.logs import current_request_id
from models import OutboxEvent, table_of

log = logging.getLogger("instagraph.outbox")

outbox = table_of(OutboxEvent)

FAN_OUT = "fan_out"
NOTIFY = "notify"
PROCESS_POST = "process_post"
PROCESS_STORY = "process_story"
POST_DELETED = "post_deleted"
FOLLOW_CHANGED = "follow_changed"
INVALIDATE = "invalidate"

# Every payload may also hold the id of the request that caused the row.
REQUEST_ID_KEY = "request_id"


async def write_event(*, conn: AsyncConnection, kind: str, payload: dict[str, Any]) -> None:
    """One outbox row, in the caller's transaction, with the id of the request (or job)
    that caused it: the relay hands it on to the job it enqueues (infra/logs.py)."""
    request_id = current_request_id()
    if request_id is not None:
        payload = {**payload, REQUEST_ID_KEY: request_id}
    await conn.execute(insert(outbox).values(kind=kind, payload=payload))


# A `notify` row may carry the invalidation of its own change under this key (a like:
# one row, not two); the relay applies it with the `invalidate` rows of its batch.
INVALIDATE_KEY = "invalidate"


def invalidation(
    *,
    likes: Sequence[tuple[int, int]] = (),
    comments: Iterable[int] = (),
    users: Iterable[int] = (),
    hidden: Iterable[int] = (),
) -> dict[str, Any] | None:
    """The payload of an invalidation (see `write_invalidation`); None when it names
    nothing."""
    payload = {
        "likes": [[int(p), int(u)] for p, u in likes],
        "comments": sorted({int(p) for p in comments}),
        "users": sorted({int(u) for u in users}),
        "hidden": sorted({int(u) for u in hidden}),
    }
    return payload if any(payload.values()) else None


def invalidation_of(kind: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    """What an outbox row asks the relay to drop: an `invalidate` row's whole payload,
    another row's folded `invalidate` part, or None."""
    if kind == INVALIDATE:
        return payload
    folded = payload.get(INVALIDATE_KEY)
    return folded if isinstance(folded, dict) else None


async def write_invalidation(
    *,
    conn: AsyncConnection,
    likes: Sequence[tuple[int, int]] = (),
    comments: Iterable[int] = (),
    users: Iterable[int] = (),
    hidden: Iterable[int] = (),
) -> None:
    """Cached values this transaction makes stale, dropped after the commit by the relay
    (the request drops them too, at once, best effort): the counts and the liker's liked
    set of each (post, user) like, the counts and first comments of each commented
    post, the cached records of `users`, the hidden sets of `hidden`. Nothing is written
    when nothing is named."""
    payload = invalidation(likes=likes, comments=comments, users=users, hidden=hidden)
    if payload is not None:
        await write_event(conn=conn, kind=INVALIDATE, payload=payload)


def _unsent() -> Any:
    return outbox.c.sent_at.is_(None)


async def unsent_events(
    *, conn: AsyncConnection, limit: int = 200, kinds: Collection[str] | None = None
) -> list[Any]:
    """Unsent outbox rows, oldest first, locked so that two relays never send the same
    row at once. `kinds`: only these (a relay selects the kinds it knows: a row of a
    kind newer code wrote waits for a worker that knows it, docs/delivery.md)."""
    query = (
        select(outbox.c.id, outbox.c.kind, outbox.c.payload)
        .where(_unsent())
        .order_by(outbox.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if kinds is not None:
        query = query.where(outbox.c.kind.in_(sorted(kinds)))
    return list((await conn.execute(query)).all())


async def unsent_hidden_invalidations(*, conn: AsyncConnection, limit: int = 200) -> list[Any]:
    """Unsent `invalidate` rows naming hidden sets (a block made or lifted), oldest
    first, locked: the relay applies them before any backlog, since a stale hidden set
    shows a blocked user what the block hides."""
    return list(
        (
            await conn.execute(
                select(outbox.c.id, outbox.c.kind, outbox.c.payload)
                .where(
                    _unsent(),
                    outbox.c.kind == INVALIDATE,
                    func.jsonb_array_length(outbox.c.payload["hidden"]) > 0,
                )
                .order_by(outbox.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
    )


async def unsent_fan_out_of(*, conn: AsyncConnection, post_id: int) -> list[Any]:
    """The unsent `fan_out` row of one post (none, or one), locked: sent right after
    READY without waiting behind older rows (`workers.outbox.kick_relay`)."""
    return list(
        (
            await conn.execute(
                select(outbox.c.id, outbox.c.kind, outbox.c.payload)
                .where(
                    _unsent(),
                    outbox.c.kind == FAN_OUT,
                    outbox.c.payload["post_id"].astext == str(int(post_id)),
                )
                .with_for_update(skip_locked=True)
            )
        ).all()
    )


async def pending_process_posts(*, conn: AsyncConnection, post_ids: Iterable[int]) -> set[int]:
    """Which of these posts have an unsent `process_post` row: their first processing
    job is still on its way (the relay is behind), so a sweeper must not start another
    attempt beside it."""
    ids = sorted({str(int(p)) for p in post_ids})
    if not ids:
        return set()
    rows = await conn.execute(
        select(outbox.c.payload["post_id"].astext).where(
            _unsent(),
            outbox.c.kind == PROCESS_POST,
            outbox.c.payload["post_id"].astext.in_(ids),
        )
    )
    return {int(value) for value in rows.scalars()}


async def mark_sent(*, conn: AsyncConnection, event_ids: list[int]) -> None:
    if event_ids:
        await conn.execute(
            update(outbox).where(outbox.c.id.in_(event_ids)).values(sent_at=func.now())
        )


async def best_effort(effect: Awaitable[Any], what: str) -> bool:
    """Run a committed change's effect at once (a job enqueued, a cache entry dropped)
    when Redis answers; when it does not, log and go on: the change's outbox row,
    committed with it, brings the effect about once Redis is back. Returns whether it
    ran. Only Redis and connection failures are swallowed; anything else is a bug."""
    try:
        await effect
    except (RedisError, OSError):
        log.warning("%s: not done at once, the outbox will", what, exc_info=True)
        return False
    return True


async def unsent_follow_change(
    *, conn: AsyncConnection, follower_id: int, followee_id: int, added: bool
) -> tuple[int, dict[str, Any]] | None:
    """The newest unsent `follow_changed` row of this edge change, (id, payload): a
    request whose change crossed the celebrity threshold enqueues its job at once
    (`workers.jobs.enqueue_follow_changed`, the id the relay uses) instead of waiting
    for the relay."""
    row = (
        await conn.execute(
            select(outbox.c.id, outbox.c.payload)
            .where(
                _unsent(),
                outbox.c.kind == FOLLOW_CHANGED,
                outbox.c.payload["follower_id"].astext == str(int(follower_id)),
                outbox.c.payload["followee_id"].astext == str(int(followee_id)),
                outbox.c.payload["added"].astext == ("true" if added else "false"),
            )
            .order_by(outbox.c.id.desc())
            .limit(1)
        )
    ).first()
    return None if row is None else (int(row.id), dict(row.payload))
