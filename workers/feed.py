"""Feed jobs: the outbox relay, fan-out on write, and backfill after a threshold crossing.

Guarantee: at least once. A post's READY transition writes an outbox row in the
same transaction; the relay enqueues a fan-out job per row (deterministic job id)
and marks the row sent only after the enqueue succeeded, so a Redis outage delays
fan-out but never loses it. Fan-out is idempotent (ZADD of a member already there
changes nothing) and resumable (it records the last finished follower batch).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from domain import feed as feed_domain
from infra.feedstore import FeedStore
from settings import Settings

log = logging.getLogger("instagraph.worker.feed")

PROGRESS_TTL_SECONDS = 24 * 3600


def _progress_key(post_id: int) -> str:
    return f"fanout:progress:{post_id}"


async def relay_outbox(ctx: dict[str, Any]) -> int:
    """Turn unsent outbox rows into arq jobs; returns how many were sent."""
    sent: list[int] = []
    async with ctx["engine"].begin() as conn:
        for event in await feed_domain.unsent_events(conn=conn):
            if event.kind == feed_domain.FAN_OUT:
                post_id = int(event.payload["post_id"])
                try:
                    await ctx["redis"].enqueue_job(
                        "fan_out_post", post_id, _job_id=f"fan_out:{post_id}"
                    )
                except Exception:  # Redis unreachable: leave the rest for the next run
                    log.warning("outbox relay: enqueue failed, will retry", exc_info=True)
                    break
            sent.append(event.id)
        await feed_domain.mark_sent(conn=conn, event_ids=sent)
    return len(sent)


async def kick_relay(ctx: dict[str, Any]) -> None:
    """Relay right away after a READY commit (the cron relay is the safety net)."""
    try:
        await relay_outbox(ctx)
    except Exception:  # the cron relay retries; never fail the job that made the post READY
        log.warning("immediate outbox relay failed; the cron relay will send it", exc_info=True)


async def fan_out_post(ctx: dict[str, Any], post_id: int) -> dict[str, int]:
    """Put a READY post into its author's and followers' feeds.

    Celebrities (follower count at or above the threshold) are not fanned out: their
    posts are merged in at read time from `posts:{author}` and published once on the
    author's channel. Others: followers in keyset batches from PostgreSQL, each batch
    inserted (and trimmed, and published to live followers) by one Lua call.
    """
    settings: Settings = ctx["settings"]
    feeds: FeedStore = ctx["feeds"]
    redis = ctx["redis_app"]
    async with ctx["engine"].connect() as conn:
        post = await feed_domain.post_for_fan_out(conn=conn, post_id=post_id)
    if post is None:  # deleted (or not READY) since: nothing to deliver
        return {"feeds": 0}
    author_id = post.author_id
    await feeds.record_author_post(author_id, post_id)
    await feeds.merge_into(author_id, [post_id])
    if await feeds.is_live(author_id):
        await feeds.publish_to_user(author_id, post_id)
    if post.follower_count >= settings.celebrity_follower_threshold:
        await feeds.publish_author_post(author_id, post_id)
        return {"feeds": 1, "celebrity": 1}

    progress = await redis.get(_progress_key(post_id))
    delivered = 0
    async for followers, last_edge in _follower_batches(
        ctx, author_id, after_edge=int(progress) if progress else None
    ):
        delivered += await feeds.fan_out(followers, post_id)
        # A killed job resumes after the last finished batch, not from the start.
        await redis.set(_progress_key(post_id), last_edge, ex=PROGRESS_TTL_SECONDS)
    await redis.delete(_progress_key(post_id))
    return {"feeds": delivered + 1}


async def _follower_batches(
    ctx: dict[str, Any], author_id: int, *, after_edge: int | None = None
) -> AsyncIterator[tuple[list[int], int]]:
    """An author's followers in keyset batches from PostgreSQL, with each batch's last
    edge id (the resume point)."""
    while True:
        async with ctx["engine"].connect() as conn:
            batch = await feed_domain.follower_batch(
                conn=conn,
                author_id=author_id,
                after_edge=after_edge,
                limit=ctx["settings"].fanout_batch_size,
            )
        if not batch:
            return
        after_edge = batch[-1].id
        yield [row.follower_id for row in batch], after_edge


async def backfill_author(ctx: dict[str, Any], author_id: int) -> int:
    """An author fell below the celebrity threshold: readers stop pulling their posts,
    so push the recent ones into followers' feeds now (no post is lost)."""
    settings: Settings = ctx["settings"]
    feeds: FeedStore = ctx["feeds"]
    cap = settings.feed_cap
    async with ctx["engine"].connect() as conn:
        recent = await feed_domain.recent_post_ids(conn=conn, author_id=author_id, limit=cap + 1)
    delivered = 0
    if not recent:
        return 0
    async for followers, _ in _follower_batches(ctx, author_id):
        for follower_id in followers:
            await feeds.merge_into(follower_id, recent[:cap], more=len(recent) > cap)
        delivered += len(followers)
    return delivered
