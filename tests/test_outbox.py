"""No fan-out is ever lost: a post that becomes READY while Redis is down reaches its
followers' feeds once Redis is back (outbox row, relay, idempotent job). Sent rows do
not pile up: a day after they went out, the hourly prune deletes them."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import orjson
from sqlalchemy import text

from domain import follows as follow_domain
from domain.blocks import hidden_key
from domain.engagement import counts_key
from domain.outbox import pending_process_posts
from infra.embedded import EmbeddedRedis
from infra.feedstore import CELEB_EPOCH_KEY, feed_key
from tests.conftest import make_worker
from workers.feed import kick_relay, prune_outbox, relay_outbox
from workers.outbox import (
    OUTBOX_FAILED,
    RELAY_BATCH,
    RELAY_LOCK_KEY,
    RELAY_MAX_BATCHES,
    follow_changed,
)
from workers.settings import shutdown, startup


async def test_a_post_made_ready_during_a_redis_outage_is_fanned_out_after(
    server, factory, tmp_path
):
    redis_server = EmbeddedRedis(tmp_path / "redis", persistent=True).start()
    settings = replace(server.settings, redis_url=redis_server.url)
    ctx: dict = {"settings": settings}
    await startup(ctx)
    try:
        author, reader = await factory.user("author"), await factory.user("reader")
        await factory.follow(reader, author)
        await ctx["resources"].feeds.write_rebuilt(
            reader.pk, [], truncated=False
        )  # reader is active

        # Given Redis is down while the post becomes READY...
        redis_server.stop()
        post_id = await factory.ready_post(author)
        await kick_relay(ctx)  # the relay fails quietly and keeps the row
        async with server.engine.connect() as conn:
            unsent = await conn.scalar(text("SELECT count(*) FROM outbox WHERE sent_at IS NULL"))
        assert unsent == 1

        # ...when Redis comes back (same address, its AOF data intact)...
        redis_server.start(port=redis_server.port)
        assert await relay_outbox(ctx) == 1
        worker = make_worker(settings, burst=True)  # runs what is queued, then stops
        await worker.main()
        await worker.close()

        # ...then the post is in the follower's feed, and nothing is left to send.
        assert await ctx["resources"].redis.zscore(feed_key(reader.pk), str(post_id)) == post_id
        async with server.engine.connect() as conn:
            unsent = await conn.scalar(text("SELECT count(*) FROM outbox WHERE sent_at IS NULL"))
        assert unsent == 0
    finally:
        await shutdown(ctx)
        redis_server.stop()
        redis_server.wipe()


async def test_sent_rows_older_than_a_day_are_pruned_and_the_rest_kept(server):
    # Given rows of every age and state (made, sent: how long ago; None: not sent)...
    ages = {
        "sent two days ago": (timedelta(hours=50), timedelta(hours=49)),
        "sent a week ago": (timedelta(days=7), timedelta(days=7)),
        "made two days ago, sent an hour ago": (timedelta(days=2), timedelta(hours=1)),
        "unsent for two days": (timedelta(days=2), None),
        "sent a minute ago": (timedelta(minutes=2), timedelta(minutes=1)),
        "unsent": (timedelta(0), None),
    }
    async with server.engine.begin() as conn:
        for name, (made, sent) in ages.items():
            await conn.execute(
                text(
                    "INSERT INTO outbox (kind, payload, created_at, sent_at) VALUES ('test',"
                    " jsonb_build_object('name', CAST(:name AS text)),"
                    " now() - CAST(:made AS interval), now() - CAST(:sent AS interval))"
                ),
                {"name": name, "made": made, "sent": sent},
            )

    # ...the hourly prune deletes those sent more than a day ago, and only those.
    assert await prune_outbox({"resources": server.resources}) == 2
    async with server.engine.connect() as conn:
        kept = set((await conn.execute(text("SELECT payload->>'name' FROM outbox"))).scalars())
    assert kept == {
        "made two days ago, sent an hour ago",
        "unsent for two days",
        "sent a minute ago",
        "unsent",
    }
    assert await prune_outbox({"resources": server.resources}) == 0


# -- review findings: one bad row, unknown kinds, block first, the kick, the lock ----


async def insert_rows(server, kind: str, payload: str, count: int = 1) -> None:
    """`count` unsent rows of `kind` with this JSON payload, in one statement."""
    async with server.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO outbox (kind, payload) SELECT :kind, CAST(:payload AS jsonb)"
                " FROM generate_series(1, :count)"
            ),
            {"kind": kind, "payload": payload, "count": count},
        )


async def unsent_kinds(server) -> list[str]:
    async with server.engine.connect() as conn:
        rows = await conn.execute(text("SELECT kind FROM outbox WHERE sent_at IS NULL ORDER BY id"))
        return list(rows.scalars())


async def test_a_bad_row_is_given_up_on_and_blocks_nothing_behind_it(server, factory):
    # Given a fan-out row without a post id, an invalidation naming a post that is not a
    # number (both bugs, not outages), then a good invalidation and a good fan-out...
    post_id = await factory.ready_post(await factory.user("author"))
    await insert_rows(server, "fan_out", "{}")
    await insert_rows(server, "invalidate", '{"likes": [["not a post", 1]]}')
    await insert_rows(server, "invalidate", f'{{"comments": [{post_id}]}}')
    failed = OUTBOX_FAILED.labels("invalidate")._value.get()
    await server.redis.set(counts_key(post_id), b"stale")

    # ...one relay run sends every row: the bad ones logged, counted and marked...
    assert await relay_outbox({"resources": server.resources}) == 4  # + the post's fan-out
    assert await unsent_kinds(server) == []
    assert OUTBOX_FAILED.labels("invalidate")._value.get() == failed + 1
    # ...and the good invalidation behind the bad one was applied.
    assert await server.redis.get(counts_key(post_id)) is None
    assert await server.resources.jobs.exists(f"arq:job:fan_out:{post_id}")


async def test_a_kind_this_relay_does_not_know_stays_unsent(server):
    # A row written by newer code during a rolling deploy: left for a newer worker.
    await insert_rows(server, "from_the_future", '{"x": 1}')
    await insert_rows(server, "invalidate", '{"users": [1]}')
    assert await relay_outbox({"resources": server.resources}) == 1
    assert await unsent_kinds(server) == ["from_the_future"]
    assert await relay_outbox({"resources": server.resources}) == 0


async def test_a_blocks_invalidation_jumps_a_backlog(server, factory):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    hidden = server.resources.hidden
    assert await hidden.of(alice.pk) == frozenset()  # cached, empty
    # Given more older unsent rows than one relay run sends...
    backlog = RELAY_BATCH * RELAY_MAX_BATCHES + 1
    await insert_rows(server, "invalidate", '{"users": [0]}', count=backlog)
    # ...and then a block committed (its invalidation not applied: Redis "refused")...
    async with server.engine.begin() as conn:
        await follow_domain.block(conn=conn, viewer_id=alice.pk, target_id=bob.pk)
    assert await server.redis.get(hidden_key(alice.pk)) == b"[]"

    # ...the first relay run applies the block's row, while the backlog is not done.
    await relay_outbox({"resources": server.resources})
    assert await server.redis.get(hidden_key(alice.pk)) == orjson.dumps([bob.pk])
    assert await hidden.of(bob.pk) == frozenset({alice.pk})
    assert "invalidate" in await unsent_kinds(server)  # some of the backlog waits


async def test_the_kick_after_ready_sends_only_that_posts_fan_out(server, factory):
    await insert_rows(server, "invalidate", '{"users": [0]}', count=3)  # an older backlog
    post_id = await factory.ready_post(await factory.user("author"))
    await kick_relay({"resources": server.resources}, post_id)
    assert await server.resources.jobs.exists(f"arq:job:fan_out:{post_id}")
    # The backlog waits for the cron relay.
    assert await unsent_kinds(server) == ["invalidate"] * 3


async def test_one_relay_at_a_time(server):
    await insert_rows(server, "invalidate", '{"users": [0]}')
    ctx = {"resources": server.resources}
    await server.redis.set(RELAY_LOCK_KEY, b"another relay", px=30_000)
    assert await relay_outbox(ctx) == 0  # another relay holds the lock
    await server.redis.delete(RELAY_LOCK_KEY)
    assert await relay_outbox(ctx) == 1
    assert await server.redis.get(RELAY_LOCK_KEY) is None  # released


async def test_an_unsent_process_post_row_counts_as_a_job_for_the_sweeper(server):
    await insert_rows(server, "process_post", '{"post_id": 7}')
    await insert_rows(server, "process_post", '{"post_id": 8}')
    async with server.engine.begin() as conn:
        await conn.execute(
            text("UPDATE outbox SET sent_at = now() WHERE payload->>'post_id' = '8'")
        )
        assert await pending_process_posts(conn=conn, post_ids=[7, 8, 9]) == {7}


async def test_a_crossing_is_acted_on_once_even_when_the_edge_was_reversed(server, factory):
    # Given a follow row that crossed the celebrity threshold, whose edge is gone since
    # (unfollowed: the unfollow's own row handles the feed)...
    star, fan = await factory.user("star"), await factory.user("fan")
    threshold = server.settings.celebrity_follower_threshold
    payload = {"follower_id": fan.pk, "followee_id": star.pk, "added": True, "followers": threshold}
    ctx = {"resources": server.resources, "job_try": 1, "max_tries": 5}
    epoch = int(await server.redis.get(CELEB_EPOCH_KEY) or 0)

    # ...the job skips the feed but acts on the crossing, under the row's job id...
    assert await follow_changed(ctx, 41, payload) == "skipped+crossing"
    jobs = server.resources.jobs
    assert await jobs.exists(f"arq:job:announce_celebrity:{star.pk}:41")
    # ...and again (a retry, a second relay) enqueues nothing new.
    assert await follow_changed(ctx, 41, payload) == "skipped+crossing"
    assert len(await jobs.keys(f"arq:job:announce_celebrity:{star.pk}:*")) == 1
    assert int(await server.redis.get(CELEB_EPOCH_KEY) or 0) > epoch
