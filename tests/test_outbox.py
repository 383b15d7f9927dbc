"""No fan-out is ever lost: a post that becomes READY while Redis is down reaches its
followers' feeds once Redis is back (outbox row, relay, idempotent job). Sent rows do
not pile up: a day after they went out, the hourly prune deletes them."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sqlalchemy import text

from infra.embedded import EmbeddedRedis
from infra.feedstore import feed_key
from tests.conftest import make_worker
from workers.feed import kick_relay, prune_outbox, relay_outbox
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
