"""Feed jobs: the outbox relay, fan-out on write, and backfill after a threshold crossing.
The rules are `domain.feed.home.HomeFeed`'s; these are the arq entry points.

Guarantee: at least once. A post's READY transition writes an outbox row in the
same transaction (and so does an action that notifies someone: `workers.notifications`);
the relay enqueues a job per row (deterministic job id)
and marks the row sent only after the enqueue succeeded, so a Redis outage delays
fan-out but never loses it. Fan-out is idempotent (ZADD of a member already there
changes nothing) and resumable (it records the last finished follower batch). Sent
rows are pruned a day later (`prune_outbox`, hourly).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select

from domain import notifications
from domain.feed import queries
from infra.resources import Resources
from models import OutboxEvent, table_of
from workers.jobs import enqueue_deliver_notifications, enqueue_fan_out

log = logging.getLogger("instagraph.worker.feed")

outbox = table_of(OutboxEvent)


# Rows per relay transaction, and how many batches one relay run sends at most. Each
# enqueue is a few Redis round trips in series (arq's WATCH/MULTI), ~1 ms on a quiet
# machine and several on a loaded one: 10 batches (2,000 jobs) take a few seconds, and
# the time budget stops a slow run from starting another batch, so a run ends well
# inside the cron's 30 s timeout (one killed mid-batch rolls back its marks after its
# jobs went out: the whole batch is relayed again, on job ids that mostly refuse it).
# A burst (10,000 likes make 10,000 notification rows) still drains within seconds,
# since the cron runs every second.
RELAY_BATCH = 200
RELAY_MAX_BATCHES = 10
RELAY_BUDGET_SECONDS = 10.0


async def relay_outbox(ctx: dict[str, Any]) -> int:
    """Turn unsent outbox rows into arq jobs; returns how many were sent."""
    resources: Resources = ctx["resources"]
    total = 0
    deadline = time.monotonic() + RELAY_BUDGET_SECONDS
    for _ in range(RELAY_MAX_BATCHES):
        sent, complete = await _relay_batch(resources)
        total += sent
        if not complete or time.monotonic() > deadline:
            break
    return total


async def _relay_batch(resources: Resources) -> tuple[int, bool]:
    """One batch in one transaction: (rows sent, whether a full batch went out and more
    may be waiting)."""
    sent: list[int] = []
    async with resources.engine.begin() as conn:
        events = await queries.unsent_events(conn=conn, limit=RELAY_BATCH)
        for event in events:
            try:
                if event.kind == queries.FAN_OUT:
                    await enqueue_fan_out(resources.jobs, int(event.payload["post_id"]))
                elif event.kind == notifications.OUTBOX_KIND:
                    await enqueue_deliver_notifications(resources.jobs, event.id, event.payload)
            except Exception:  # Redis unreachable: leave the rest for the next run
                log.warning("outbox relay: enqueue failed, will retry", exc_info=True)
                break
            sent.append(event.id)
        await queries.mark_sent(conn=conn, event_ids=sent)
    return len(sent), len(sent) == RELAY_BATCH


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


async def kick_relay(ctx: dict[str, Any]) -> None:
    """Relay right away after a READY commit (the cron relay is the safety net)."""
    try:
        await relay_outbox(ctx)
    except Exception:  # the cron relay retries; never fail the job that made the post READY
        log.warning("immediate outbox relay failed; the cron relay will send it", exc_info=True)


async def fan_out_post(ctx: dict[str, Any], post_id: int) -> dict[str, int]:
    """Put a READY post into its author's and followers' feeds (`HomeFeed.fan_out_post`)."""
    resources: Resources = ctx["resources"]
    return await resources.home_feed.fan_out_post(post_id)


async def backfill_author(ctx: dict[str, Any], author_id: int) -> int:
    """An author fell below the celebrity threshold (`HomeFeed.backfill_author`)."""
    resources: Resources = ctx["resources"]
    return await resources.home_feed.backfill_author(author_id)


async def announce_celebrity(ctx: dict[str, Any], author_id: int) -> int:
    """An author crossed the threshold upwards (`HomeFeed.announce_celebrity`)."""
    resources: Resources = ctx["resources"]
    return await resources.home_feed.announce_celebrity(author_id)
