"""Fan-out resumes after its last finished batch; slow subscribers never block others."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

from sqlalchemy import text

from domain.feed.home import HomeFeed
from infra.feedstore import feed_key, user_channel
from infra.pubsub import QUEUE_SIZE, PubSubHub


async def test_a_restarted_fan_out_continues_after_its_last_batch(feed_server, factory):
    author = await factory.user("author")
    followers = await factory.users(5)
    feeds = feed_server.resources.feeds
    for follower in followers:
        await factory.follow(follower, author)
        await feeds.write_rebuilt(follower.pk, [], truncated=False)
    post_id = await factory.ready_post(author)
    async with feed_server.engine.begin() as conn:
        # This test runs the job itself: keep the relay from sending it too.
        await conn.execute(text("UPDATE outbox SET sent_at = now()"))
        edges = (
            await conn.execute(text("SELECT follower_id, id FROM follows ORDER BY id DESC"))
        ).all()
    # Five followers, batches of two, below the celebrity threshold.
    settings = replace(feed_server.settings, celebrity_follower_threshold=100, fanout_batch_size=2)
    home_feed = HomeFeed(
        engine=feed_server.engine,
        feeds=feeds,
        cache=feed_server.resources.cache,
        settings=settings,
    )
    # A previous run finished the batch ending at the third newest follower, then died.
    await feed_server.redis.set(f"fanout:progress:{post_id}", edges[2].id)
    await home_feed.fan_out_post(post_id)
    reached = {
        row.follower_id
        for row in edges
        if await feed_server.redis.zscore(feed_key(row.follower_id), str(post_id)) is not None
    }
    assert reached == {edges[3].follower_id, edges[4].follower_id}
    assert not await feed_server.redis.exists(f"fanout:progress:{post_id}")


async def test_a_slow_subscriber_loses_old_events_and_blocks_nobody(feed_server):
    hub = PubSubHub(feed_server.redis)
    received: list[bytes] = []
    slow = hub.listen([user_channel(1)], presence_user=1)
    fast = hub.listen([user_channel(1)], presence_user=2)

    async def consume_fast() -> None:
        async for message in fast:
            received.append(message)
            if len(received) == 500:
                return

    # Both subscribed (the first step of an async generator registers it).
    slow_first = asyncio.ensure_future(slow.__anext__())
    fast_task = asyncio.create_task(consume_fast())
    await asyncio.sleep(0.2)
    for i in range(500):
        await feed_server.redis.publish(user_channel(1), str(i))
    async with asyncio.timeout(10):
        await fast_task
    assert received == [str(i).encode() for i in range(500)]
    # The slow one holds at most its bounded queue, the newest events.
    queue = next(q for q in hub._queues[user_channel(1)] if q.qsize())
    assert queue.qsize() <= QUEUE_SIZE
    slow_first.cancel()
    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
        await slow_first
    await fast.aclose()
    await slow.aclose()
    await hub.close()
