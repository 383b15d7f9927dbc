"""Nothing is lost when Redis is down at the moment of a write (issue 10, point 4).

Each test: the app on a private redis-server (AOF on, so it comes back with what it
held); the server really stopped; the mutation through GraphQL, answered without error;
PostgreSQL has the change and its outbox row; the server started again on the same
port; the relay and a real worker run; the effect happened, once (a second relay sends
nothing, the job ran once). docs/delivery.md lists every effect.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from domain import outbox as kinds
from domain.blocks import hidden_key
from domain.engagement import counts_key
from infra.embedded import EmbeddedRedis
from infra.feedstore import feed_key
from infra.ids import from_global_id, to_global_id
from settings import Settings
from tests.conftest import GraphQLClient, Server, clean_state, make_worker, serve
from tests.factories import Factory, MadeUser
from tests.media_samples import jpeg_bytes
from tests.posting import COMPLETE, create_post, upload
from tests.social_factories import until
from workers.outbox import relay_outbox

LIKE = "mutation ($id: ID!) { likePost(postId: $id) { errors { code } } }"
COUNTS = "query ($id: ID!) { post(id: $id) { likeCount } }"
DELETE = "mutation ($id: ID!) { deletePost(id: $id) { deletedId errors { code } } }"
FOLLOW = "mutation ($id: ID!) { follow(userId: $id) { errors { code } } }"
BLOCK = "mutation ($id: ID!) { block(userId: $id) { errors { code } } }"


@dataclass
class Outage:
    """The app on a private Redis this test may stop and start."""

    server: Server
    redis_server: EmbeddedRedis
    gql: GraphQLClient
    factory: Factory

    @property
    def settings(self) -> Settings:
        return self.server.settings

    def stop_redis(self) -> None:
        self.redis_server.stop()

    async def start_redis(self) -> None:
        """Redis again, on the same port, with its AOF data; back once the app's own
        client answers (its circuit breaker lets a probe through within a second)."""
        self.redis_server.start(port=self.redis_server.port)

        async def answers() -> bool:
            try:
                return bool(await self.server.redis.ping())
            except Exception:
                return False

        await until(answers)

    async def catch_up(self) -> int:
        """What the worker does once Redis is back: the relay (retried until Redis takes
        it), then the queued jobs, in a real worker that stops when the queue is empty.
        Returns how many outbox rows the relay sent."""
        ctx: dict[str, Any] = {"resources": self.server.resources, "settings": self.settings}
        sent = 0

        async def relayed() -> bool:
            nonlocal sent
            sent += await relay_outbox(ctx)
            return await unsent(self.server) == 0

        await until(relayed)
        worker = make_worker(self.settings, burst=True)
        try:
            await worker.main()
        finally:
            await worker.close()
        return sent

    async def outbox_rows(self, kind: str) -> list[dict[str, Any]]:
        async with self.server.engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT payload FROM outbox WHERE kind = :kind ORDER BY id"), {"kind": kind}
            )
            return [row[0] for row in rows]


EDGE = ("follower_id", "followee_id", "added", "followers")
STALE = ("likes", "comments", "users", "hidden")


def only(payload: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The payload's expected keys (rows also carry `request_id`, fan-out `ready_at`)."""
    return {key: payload.get(key) for key in keys}


async def unsent(server: Server) -> int:
    async with server.engine.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM outbox WHERE sent_at IS NULL")))


async def unsent_rows(server: Server) -> list[dict[str, Any]]:
    """Unsent rows, oldest first: their payloads, with their kind under "kind"."""
    async with server.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT kind, payload FROM outbox WHERE sent_at IS NULL ORDER BY id")
        )
        return [{**row.payload, "kind": row.kind} for row in rows]


async def scalar(server: Server, sql: str, **params: Any) -> Any:
    async with server.engine.connect() as conn:
        return await conn.scalar(text(sql), params)


@pytest.fixture(scope="module")
async def outage_instance(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Any:
    redis_server = EmbeddedRedis(tmp_path_factory.mktemp("outbox-redis"), persistent=True).start()
    base = replace(
        settings, redis_url=redis_server.url, media_root=settings.media_root / "outbox-effects"
    )
    try:
        async with serve(base) as running:
            yield running, redis_server
    finally:
        redis_server.stop()
        redis_server.wipe()


@pytest.fixture
async def outage(outage_instance: Any) -> AsyncIterator[Outage]:
    server, redis_server = outage_instance
    if not redis_server.alive():
        redis_server.start(port=redis_server.port)
    await clean_state(server)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        yield Outage(
            server=server,
            redis_server=redis_server,
            gql=GraphQLClient(client),
            factory=Factory(engine=server.engine, settings=server.settings),
        )


async def act(outage: Outage, document: str, user: MadeUser, **variables: Any) -> Any:
    data = await outage.gql(document, token=user.token, **variables)
    [payload] = data.values()
    assert payload["errors"] == [], payload
    return payload


# -- counters and notifications: a like ------------------------------------------------


async def test_a_like_during_an_outage_counts_notifies_and_refreshes_the_cache_after(
    outage: Outage,
) -> None:
    author, liker = await outage.factory.user("author"), await outage.factory.user("liker")
    post_id = await outage.factory.ready_post(author)
    gid = to_global_id("Post", post_id)
    # The post's counts are cached (0 likes) before the outage.
    assert (await outage.gql(COUNTS, token=liker.token, id=gid))["post"]["likeCount"] == 0
    assert await outage.server.redis.get(counts_key(post_id)) is not None

    # Given Redis is down, when the like is made, it is committed with its outbox rows...
    outage.stop_redis()
    await act(outage, LIKE, liker, id=gid)
    assert await scalar(outage.server, "SELECT count(*) FROM likes") == 1
    # One row for the like: its notification, carrying the cache invalidation.
    assert [row for row in await outage.outbox_rows(kinds.INVALIDATE) if row["likes"]] == []
    [notify] = await outage.outbox_rows(kinds.NOTIFY)
    assert only(notify, "kind", "actor_id", "recipient_ids", "post_id") == {
        "kind": "LIKE",
        "actor_id": liker.pk,
        "recipient_ids": [author.pk],
        "post_id": post_id,
    }
    assert notify[kinds.INVALIDATE_KEY] == {
        "likes": [[post_id, liker.pk]],
        "comments": [],
        "users": [],
        "hidden": [],
    }
    pending = await unsent(outage.server)

    # ...and once Redis is back (with the stale count it held)...
    await outage.start_redis()
    assert await outage.server.redis.get(counts_key(post_id)) is not None
    assert await outage.catch_up() == pending

    # ...the stale count is gone, the count reads 1, the author is notified once.
    assert await outage.server.redis.get(counts_key(post_id)) is None
    assert (await outage.gql(COUNTS, token=liker.token, id=gid))["post"]["likeCount"] == 1
    assert await scalar(outage.server, "SELECT count(*) FROM notifications") == 1
    assert await relay_outbox({"resources": outage.server.resources}) == 0


# -- processing: completeUpload --------------------------------------------------------


async def test_an_upload_completed_during_an_outage_is_processed_once_after(
    outage: Outage,
) -> None:
    author = await outage.factory.user("author")
    data = jpeg_bytes(64, 48)
    created = await create_post(outage.gql, author.token, [("image/jpeg", data)])
    assert (await upload(created["uploads"][0], data)).status_code in (200, 201, 204)
    gid = created["post"]["id"]

    # Given Redis is down, completeUpload answers PROCESSING, with the job's outbox row...
    outage.stop_redis()
    completed = (await outage.gql(COMPLETE, token=author.token, id=gid))["completeUpload"]
    assert completed["errors"] == [] and completed["post"]["status"] == "PROCESSING"
    post_id = from_global_id(gid)[1]
    assert [only(row, "post_id") for row in await outage.outbox_rows(kinds.PROCESS_POST)] == [
        {"post_id": post_id}
    ]

    # ...and once Redis is back, the worker processes it (at once, not after the
    # sweeper's timeout), once: READY after one attempt, its fan-out relayed.
    await outage.start_redis()
    await outage.catch_up()
    row = await scalar(
        outage.server,
        "SELECT status || ':' || processing_attempts FROM posts WHERE id = :id",
        id=post_id,
    )
    assert row == "READY:1"
    assert [
        only(row, "post_id", "author_id") for row in await outage.outbox_rows(kinds.FAN_OUT)
    ] == [{"post_id": post_id, "author_id": author.pk}]
    # Its fan-out row went out with the job (kick_relay: that row alone); the author's
    # record invalidation of the same transaction waits for the relay.
    [left] = await unsent_rows(outage.server)
    assert left["kind"] == kinds.INVALIDATE and left["users"] == [author.pk]
    assert await relay_outbox({"resources": outage.server.resources}) == 1
    assert await relay_outbox({"resources": outage.server.resources}) == 0


# -- blob deletion and feeds: deletePost -----------------------------------------------


async def test_a_post_deleted_during_an_outage_leaves_feeds_and_the_store_after(
    outage: Outage,
) -> None:
    author, reader = await outage.factory.user("author"), await outage.factory.user("reader")
    await outage.factory.follow(reader, author)
    post_id = await outage.factory.ready_post(author)
    feeds = outage.server.resources.feeds
    await feeds.write_rebuilt(reader.pk, [post_id], truncated=False)
    storage = outage.server.storage
    keys = [f"originals/{post_id}/0", f"renditions/{post_id}/0/feed.jpg"]
    for key in keys:
        await storage.put(key, b"bytes", "image/jpeg")

    # Given Redis is down, deletePost is answered, the post hidden, the clean-up queued...
    outage.stop_redis()
    payload = await act(outage, DELETE, author, id=to_global_id("Post", post_id))
    assert payload["deletedId"] == to_global_id("Post", post_id)
    assert await scalar(
        outage.server, "SELECT deleted_at IS NOT NULL FROM posts WHERE id = :id", id=post_id
    )
    assert [
        only(row, "post_id", "author_id") for row in await outage.outbox_rows(kinds.POST_DELETED)
    ] == [{"post_id": post_id, "author_id": author.pk}]
    assert all([await storage.head(key) is not None for key in keys])

    # ...and once Redis is back, the post leaves the reader's feed and the store.
    await outage.start_redis()
    assert await outage.server.redis.zscore(feed_key(reader.pk), str(post_id)) is not None
    await outage.catch_up()
    assert [await storage.head(key) for key in keys] == [None, None]
    assert await outage.server.resources.cache.get_posts([post_id]) == ({}, {post_id})
    assert await relay_outbox({"resources": outage.server.resources}) == 0


# -- the follow graph: follow and block ------------------------------------------------


async def test_a_follow_during_an_outage_fills_the_followers_feed_after(outage: Outage) -> None:
    author, reader = await outage.factory.user("author"), await outage.factory.user("reader")
    post_id = await outage.factory.ready_post(author)
    feeds = outage.server.resources.feeds
    await feeds.write_rebuilt(reader.pk, [], truncated=False)  # the reader's feed is kept

    outage.stop_redis()
    await act(outage, FOLLOW, reader, id=author.id)
    assert await scalar(outage.server, "SELECT count(*) FROM follows") == 1
    assert [only(row, *EDGE) for row in await outage.outbox_rows(kinds.FOLLOW_CHANGED)] == [
        {"follower_id": reader.pk, "followee_id": author.pk, "added": True, "followers": 1}
    ]

    await outage.start_redis()
    assert await outage.server.redis.zscore(feed_key(reader.pk), str(post_id)) is None
    await outage.catch_up()
    assert await outage.server.redis.zscore(feed_key(reader.pk), str(post_id)) == post_id
    assert await relay_outbox({"resources": outage.server.resources}) == 0


async def test_a_block_during_an_outage_stands_and_refreshes_the_hidden_sets_after(
    outage: Outage,
) -> None:
    alice, bob = await outage.factory.user("alice"), await outage.factory.user("bob")
    hidden = outage.server.resources.hidden
    assert await hidden.of(alice.pk) == frozenset()  # both sets cached, empty
    assert await hidden.of(bob.pk) == frozenset()

    # Given Redis is down, the block is committed (it needs only PostgreSQL)...
    outage.stop_redis()
    await act(outage, BLOCK, alice, id=bob.id)
    assert await scalar(outage.server, "SELECT count(*) FROM blocks") == 1
    assert [
        only(row, *STALE) for row in await outage.outbox_rows(kinds.INVALIDATE) if row["hidden"]
    ] == [{"likes": [], "comments": [], "users": [], "hidden": sorted([alice.pk, bob.pk])}]

    # ...and once Redis is back, the stale cached sets give way to the block.
    await outage.start_redis()
    assert await outage.server.redis.get(hidden_key(alice.pk)) == b"[]"
    await outage.catch_up()
    assert await hidden.of(alice.pk) == frozenset({bob.pk})
    assert await hidden.of(bob.pk) == frozenset({alice.pk})
    assert await relay_outbox({"resources": outage.server.resources}) == 0


async def test_outbox_rows_stay_unsent_while_redis_is_down(outage: Outage) -> None:
    """The relay itself during the outage: it sends nothing and marks nothing."""
    author, liker = await outage.factory.user("author"), await outage.factory.user("liker")
    post_id = await outage.factory.ready_post(author)
    outage.stop_redis()
    await act(outage, LIKE, liker, id=to_global_id("Post", post_id))
    before = await unsent(outage.server)
    assert before == 2  # fan-out, and the like's notification carrying its invalidation
    ctx = {"resources": outage.server.resources}
    assert await relay_outbox(ctx) == 0
    assert await unsent(outage.server) == before
    await outage.start_redis()
    await asyncio.sleep(0)  # nothing else: catch_up relays until every row is sent
    assert await outage.catch_up() == before
