"""Fan-out resumes after its last finished batch; slow subscribers never block others."""

from __future__ import annotations

import asyncio
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
        recent=feed_server.resources.recent,
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
    channel = user_channel(1)
    try:
        async with (
            hub.subscribe([channel], presence_user=1) as slow,
            hub.subscribe([channel], presence_user=2) as fast,
        ):

            async def consume_fast() -> list[bytes]:
                return [await anext(fast) for _ in range(500)]

            # The fast subscriber gets every event while the slow one reads nothing...
            fast_task = asyncio.create_task(consume_fast())
            for i in range(500):
                await feed_server.redis.publish(channel, str(i))
            async with asyncio.timeout(10):
                received = await fast_task
            assert received == [str(i).encode() for i in range(500)]
            # ...which holds only its bounded queue: the newest events, the oldest dropped.
            assert slow.queue.qsize() == QUEUE_SIZE
            kept = [await anext(slow) for _ in range(QUEUE_SIZE)]
            assert kept == [str(i).encode() for i in range(500 - QUEUE_SIZE, 500)]
    finally:
        await hub.close()
