"""Feed jobs: the outbox relay, fan-out on write, and backfill after a threshold crossing.
The rules are `domain.feed.home.HomeFeed`'s; these are the arq entry points.

Guarantee: at least once. A post's READY transition writes an outbox row in the
same transaction; the relay enqueues a fan-out job per row (deterministic job id)
and marks the row sent only after the enqueue succeeded, so a Redis outage delays
fan-out but never loses it. Fan-out is idempotent (ZADD of a member already there
changes nothing) and resumable (it records the last finished follower batch).
"""

from __future__ import annotations

import logging
from typing import Any

from domain.feed import queries
from infra.resources import Resources
from workers.jobs import enqueue_fan_out

log = logging.getLogger("instagraph.worker.feed")


async def relay_outbox(ctx: dict[str, Any]) -> int:
    """Turn unsent outbox rows into arq jobs; returns how many were sent."""
    resources: Resources = ctx["resources"]
    sent: list[int] = []
    async with resources.engine.begin() as conn:
        for event in await queries.unsent_events(conn=conn):
            if event.kind == queries.FAN_OUT:
                try:
                    await enqueue_fan_out(resources.jobs, int(event.payload["post_id"]))
                except Exception:  # Redis unreachable: leave the rest for the next run
                    log.warning("outbox relay: enqueue failed, will retry", exc_info=True)
                    break
            sent.append(event.id)
        await queries.mark_sent(conn=conn, event_ids=sent)
    return len(sent)


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
