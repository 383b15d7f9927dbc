"""The home feed: fan-out on write, celebrity pull, rebuild, paging, budgets, live updates."""

from __future__ import annotations

import asyncio
import json
import time

import websockets
from arq.jobs import Job
from websockets.typing import Subprotocol

from infra.feedstore import feed_key, seen_key
from infra.ids import to_global_id
from tests.conftest import count_redis_round_trips, count_statements, serve
from tests.media_samples import jpeg_bytes
from tests.posting import publish, wait_for_post
from workers.feed import kick_relay

FEED = """
query ($first: Int, $after: String) {
  feed(first: $first, after: $after) {
    edges { cursor node { id caption author { username } media { url width placeholder } } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
FOLLOW = "mutation ($id: ID!) { follow(userId: $id) { errors { code } } }"
UNFOLLOW = "mutation ($id: ID!) { unfollow(userId: $id) { errors { code } } }"
DELETE = "mutation ($id: ID!) { deletePost(id: $id) { errors { code } } }"


def gid(pk: int) -> str:
    return to_global_id("Post", pk)


async def feed_ids(gql, user, first=20, after=None) -> list[str]:
    data = (await gql(FEED, token=user.token, first=first, after=after))["feed"]
    return [edge["node"]["id"] for edge in data["edges"]]


async def all_pages(gql, user, first) -> list[str]:
    seen, after = [], None
    while True:
        data = (await gql(FEED, token=user.token, first=first, after=after))["feed"]
        seen += [edge["node"]["id"] for edge in data["edges"]]
        if not data["pageInfo"]["hasNextPage"]:
            return seen
        after = data["pageInfo"]["endCursor"]


async def post_and_fan_out(server, factory, author, caption=None) -> int:
    """A post becomes READY; the relay sends its fan-out job; wait for the job."""
    post_id = await factory.ready_post(author, caption)
    await kick_relay(server.worker.ctx)
    await Job(f"fan_out:{post_id}", server.resources.jobs).result(timeout=10)
    return post_id


async def test_fan_out_reaches_active_followers_and_trims(feed_server, gql, factory):
    author, reader, idle = (
        await factory.user("author"),
        await factory.user("reader"),
        await factory.user("idle"),
    )
    await factory.follow(reader, author)
    await factory.follow(idle, author)
    assert await feed_ids(gql, reader) == []  # the first read builds reader's feed
    posts = [await post_and_fan_out(feed_server, factory, author) for _ in range(12)]
    redis = feed_server.redis
    # In the active follower's sorted set, newest first, trimmed to the cap (10) + sentinel.
    members = [int(m) for m in await redis.zrevrange(feed_key(reader.pk), 0, -1)]
    assert members == [*reversed(posts[2:]), 0]
    assert await redis.zscore(feed_key(reader.pk), "0") == 1  # marked truncated
    # The author's own feed has them too, and the feed stays compact (listpack).
    assert await redis.object("encoding", feed_key(reader.pk)) in (b"ziplist", b"listpack")
    # The inactive follower was skipped by fan-out...
    assert not await redis.exists(feed_key(idle.pk))
    # ...and gets the same feed, rebuilt from PostgreSQL, on their next visit.
    assert await all_pages(gql, idle, 5) == [gid(p) for p in reversed(posts)]
    assert await all_pages(gql, reader, 5) == [gid(p) for p in reversed(posts)]
    assert await redis.exists(seen_key(idle.pk))


async def test_author_sees_own_post_immediately(feed_server, gql, factory):
    author = await factory.user("author")
    await feed_ids(gql, author)
    post_id = await post_and_fan_out(feed_server, factory, author)
    assert await feed_ids(gql, author) == [gid(post_id)]


async def test_new_post_is_in_followers_feeds_within_two_seconds(feed_server, gql, factory):
    author = await factory.user("author")
    followers = await factory.users(2)  # below this server's celebrity threshold (3)
    for follower in followers:
        await factory.follow(follower, author)
        await feed_ids(gql, follower)
    # The real pipeline: upload, completeUpload, worker renders, READY, relay, fan-out.
    post_id = await publish(gql, author.token, [("image/jpeg", jpeg_bytes(400, 300))])
    post = await wait_for_post(gql, author.token, post_id)
    assert post["status"] == "READY"
    ready_at = time.monotonic()
    pending = set(range(len(followers)))
    while pending and time.monotonic() - ready_at < 2:
        for index in list(pending):
            if await feed_ids(gql, followers[index], first=1) == [post_id]:
                pending.discard(index)
        await asyncio.sleep(0.02)
    assert pending == set(), "not in every follower's feed within 2 s of READY"


async def test_celebrity_posts_are_pulled_at_read_time(feed_server, gql, factory):
    star = await factory.user("star")
    fans = await factory.users(3)  # threshold is 3: star is a celebrity
    friend = await factory.user("friend")
    for fan in fans:
        await factory.follow(fan, star)
    await factory.follow(fans[0], friend)
    for fan in fans:
        await feed_ids(gql, fan)
    star_post = await post_and_fan_out(feed_server, factory, star)
    friend_post = await post_and_fan_out(feed_server, factory, friend)
    # Not written into any follower's feed...
    assert await feed_server.redis.zscore(feed_key(fans[1].pk), str(star_post)) is None
    # ...yet merged in, in order, for every follower.
    assert await feed_ids(gql, fans[0]) == [gid(friend_post), gid(star_post)]
    assert await feed_ids(gql, fans[1]) == [gid(star_post)]


async def test_crossing_the_threshold_loses_and_duplicates_nothing(feed_server, gql, factory):
    author = await factory.user("author")
    fans = await factory.users(3)
    for fan in fans[:2]:
        await factory.follow(fan, author)
        await feed_ids(gql, fan)
    before = await post_and_fan_out(feed_server, factory, author)  # fanned out (2 followers)
    # Third follower: author becomes a celebrity; the next post is pulled, not pushed.
    await feed_ids(gql, fans[2])
    assert (await gql(FOLLOW, token=fans[2].token, id=to_global_id("User", author.pk)))["follow"][
        "errors"
    ] == []
    during = await post_and_fan_out(feed_server, factory, author)
    for fan in fans:
        assert await feed_ids(gql, fan) == [gid(during), gid(before)]
    # Back below the threshold: readers stop pulling, so the backfill job pushes.
    assert (await gql(UNFOLLOW, token=fans[2].token, id=to_global_id("User", author.pk)))[
        "unfollow"
    ]["errors"] == []
    for _ in range(100):
        if await feed_server.redis.zscore(feed_key(fans[0].pk), str(during)) is not None:
            break
        await asyncio.sleep(0.05)
    after = await post_and_fan_out(feed_server, factory, author)
    for fan in fans[:2]:
        assert await feed_ids(gql, fan) == [gid(after), gid(during), gid(before)]
    assert await feed_ids(gql, fans[2]) == []


async def test_follow_backfills_and_unfollow_removes(feed_server, gql, factory):
    author, reader = await factory.user("author"), await factory.user("reader")
    posts = [await post_and_fan_out(feed_server, factory, author) for _ in range(3)]
    assert await feed_ids(gql, reader) == []
    await gql(FOLLOW, token=reader.token, id=to_global_id("User", author.pk))
    assert await feed_ids(gql, reader) == [gid(p) for p in reversed(posts)]
    await gql(UNFOLLOW, token=reader.token, id=to_global_id("User", author.pk))
    assert await feed_ids(gql, reader) == []
    assert await feed_server.redis.zcard(feed_key(reader.pk)) == 1  # only the sentinel


async def test_a_post_deleted_after_fan_out_disappears_at_once(feed_server, gql, factory):
    author, reader = await factory.user("author"), await factory.user("reader")
    await factory.follow(reader, author)
    await feed_ids(gql, reader)
    keep = await post_and_fan_out(feed_server, factory, author)
    drop = await post_and_fan_out(feed_server, factory, author)
    assert await feed_ids(gql, reader) == [gid(drop), gid(keep)]  # cached by now
    assert (await gql(DELETE, token=author.token, id=gid(drop)))["deletePost"]["errors"] == []
    assert await feed_ids(gql, reader) == [gid(keep)]


async def test_cursors_stay_stable_while_posts_arrive(feed_server, gql, factory):
    author, reader = await factory.user("author"), await factory.user("reader")
    await factory.follow(reader, author)
    await feed_ids(gql, reader)
    old = [await post_and_fan_out(feed_server, factory, author) for _ in range(6)]
    first = (await gql(FEED, token=reader.token, first=3))["feed"]
    new = [await post_and_fan_out(feed_server, factory, author) for _ in range(2)]
    second = (await gql(FEED, token=reader.token, first=3, after=first["pageInfo"]["endCursor"]))[
        "feed"
    ]
    third = (await gql(FEED, token=reader.token, first=3, after=second["pageInfo"]["endCursor"]))[
        "feed"
    ]
    seen = [e["node"]["id"] for page in (first, second, third) for e in page["edges"]]
    assert seen == [gid(p) for p in reversed(old)]
    assert third["pageInfo"]["hasNextPage"] is False
    assert (await feed_ids(gql, reader, first=2)) == [gid(p) for p in reversed(new)]


async def test_scrolling_past_the_cap_continues_from_postgres(feed_server, gql, factory):
    authors = await factory.users(3)
    reader = await factory.user("reader")
    for author in authors:
        await factory.follow(reader, author)
    await feed_ids(gql, reader)
    posts = [await post_and_fan_out(feed_server, factory, authors[i % 3]) for i in range(25)]
    assert await feed_server.redis.zcard(feed_key(reader.pk)) == 11  # cap 10 + sentinel
    assert await all_pages(gql, reader, 7) == [gid(p) for p in reversed(posts)]


async def test_feed_needs_a_viewer_and_validates_paging(feed_server, gql, factory):
    body = await gql.raw(FEED)
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    reader = await factory.user("reader")
    for first in (0, 101):
        body = await gql.raw(FEED, token=reader.token, first=first)
        assert body["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
    body = await gql.raw(FEED, token=reader.token, after="garbage")
    assert body["errors"][0]["extensions"]["code"] == "INVALID_INPUT"


async def test_a_feed_page_costs_few_round_trips(feed_server, gql, factory):
    reader = await factory.user("reader")
    authors = await factory.users(5)
    star = await factory.user("star")
    for fan in await factory.users(3):
        await factory.follow(fan, star)
    await factory.follow(reader, star)
    for author in authors:
        await factory.follow(reader, author)
    await feed_ids(gql, reader)
    # Nine pushed posts (under this server's cap of 10) and one pulled celebrity post.
    for i in range(9):
        await post_and_fan_out(feed_server, factory, authors[i % 5])
    await post_and_fan_out(feed_server, factory, star)
    assert len(await feed_ids(gql, reader)) == 10  # warms every cache

    with (
        count_statements(feed_server.engine) as sql,
        count_redis_round_trips(feed_server.redis) as redis,
    ):
        assert len(await feed_ids(gql, reader)) == 10
    assert sql.count == 0, sql.statements
    # The feed and the celebrity pull in one round trip (the process knows whom this
    # reader pulls from), then posts, then authors unless this process just read them.
    assert redis.count <= 3, redis.statements

    # Cold post and user caches (the feed itself still in Redis): at most 3 statements.
    await feed_server.redis.delete(
        *await feed_server.redis.keys("post:*"), *await feed_server.redis.keys("user:*")
    )
    with count_statements(feed_server.engine) as cold:
        assert len(await feed_ids(gql, reader)) == 10
    assert cold.count <= 3, cold.statements


async def test_a_flushed_redis_costs_one_slower_page_never_a_wrong_one(feed_server, gql, factory):
    reader = await factory.user("reader")
    authors = await factory.users(3)
    star = await factory.user("star")
    for fan in await factory.users(3):
        await factory.follow(fan, star)
    for author in (*authors, star):
        await factory.follow(reader, author)
    await feed_ids(gql, reader)
    for i in range(15):
        await post_and_fan_out(feed_server, factory, (*authors, star)[i % 4])
    before = await all_pages(gql, reader, 4)
    assert len(before) == 15
    await feed_server.redis.flushdb()
    assert await all_pages(gql, reader, 4) == before


async def test_concurrent_reads_rebuild_a_missing_feed_once(feed_server, gql, factory):
    reader = await factory.user("reader")
    author = await factory.user("author")
    await factory.follow(reader, author)
    posts = [await factory.ready_post(author) for _ in range(3)]
    with count_statements(feed_server.engine) as sql:
        pages = await asyncio.gather(*(feed_ids(gql, reader) for _ in range(8)))
    assert all(page == [gid(p) for p in reversed(posts)] for page in pages)
    rebuilds = [s for s in sql.statements if "FROM posts" in s and "follows" in s]
    assert len(rebuilds) == 1, rebuilds


def _ws(server) -> str:
    return server.base_url.replace("http://", "ws://") + "/graphql"


async def _subscribe(url: str, token: str):
    ws = await websockets.connect(url, subprotocols=[Subprotocol("graphql-transport-ws")])
    await ws.send(
        json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
    )
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    query = "subscription { feedItemAdded { id caption author { username } } }"
    await ws.send(json.dumps({"id": "feed", "type": "subscribe", "payload": {"query": query}}))
    return ws


async def test_subscription_delivers_within_a_second_on_any_api_process(feed_server, gql, factory):
    author, fan = await factory.user("author"), await factory.user("fan")
    star = await factory.user("star")
    for other in await factory.users(3):
        await factory.follow(other, star)
    await factory.follow(fan, author)
    await factory.follow(fan, star)
    await feed_ids(gql, fan)
    # A second API process on the same Redis and database: the fan listens there.
    async with serve(feed_server.settings) as other_process:
        ws = await _subscribe(_ws(other_process), fan.token)
        try:
            await asyncio.sleep(0.2)  # the subscription is registered
            for who in (author, star):  # fanned out, and pulled (celebrity channel)
                post_id = await factory.ready_post(who, caption=f"by {who.username}")
                await kick_relay(feed_server.worker.ctx)
                async with asyncio.timeout(1):
                    message = json.loads(await ws.recv())
                assert message["type"] == "next"
                item = message["payload"]["data"]["feedItemAdded"]
                assert item == {
                    "id": gid(post_id),
                    "caption": f"by {who.username}",
                    "author": {"username": who.username},
                }
        finally:
            await ws.close()


async def test_subscription_needs_a_token(feed_server):
    ws = await websockets.connect(
        _ws(feed_server), subprotocols=[Subprotocol("graphql-transport-ws")]
    )
    try:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": "subscription { feedItemAdded { id } }"},
                }
            )
        )
        message = json.loads(await ws.recv())
        assert message["type"] == "error"
        assert message["payload"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    finally:
        await ws.close()


async def test_paging_past_the_cap_keeps_celebrity_and_pushed_posts_in_order(
    feed_server, gql, factory
):
    star, friend = await factory.user("star"), await factory.user("friend")
    reader = await factory.user("reader")
    for fan in await factory.users(2):
        await factory.follow(fan, star)
    await factory.follow(reader, star)  # the third follower: star is a celebrity
    await factory.follow(reader, friend)
    await feed_ids(gql, reader)
    # Interleaved in time: pushed posts overflow the cap (10) while pulled ones reach back.
    posts = [
        await post_and_fan_out(feed_server, factory, star if i % 3 == 0 else friend)
        for i in range(24)
    ]
    assert await all_pages(gql, reader, 4) == [gid(p) for p in reversed(posts)]


async def test_following_an_account_with_more_posts_than_the_cap_reaches_them_all(
    feed_server, gql, factory
):
    author, reader = await factory.user("author"), await factory.user("reader")
    posts = [await factory.ready_post(author) for _ in range(14)]
    assert await feed_ids(gql, reader) == []  # a complete, empty feed
    await gql(FOLLOW, token=reader.token, id=to_global_id("User", author.pk))
    assert await all_pages(gql, reader, 5) == [gid(p) for p in reversed(posts)]


async def test_unfollowing_stops_live_posts_even_from_a_celebrity(feed_server, gql, factory):
    star, friend, fan = (
        await factory.user("star"),
        await factory.user("friend"),
        await factory.user("fan"),
    )
    for other in await factory.users(3):
        await factory.follow(other, star)
    await factory.follow(fan, star)
    await factory.follow(fan, friend)
    await feed_ids(gql, fan)
    ws = await _subscribe(_ws(feed_server), fan.token)
    try:
        await asyncio.sleep(0.2)
        # The subscription listens on the star's channel; unfollowing must stop it.
        assert (await gql(UNFOLLOW, token=fan.token, id=to_global_id("User", star.pk)))["unfollow"][
            "errors"
        ] == []
        await factory.ready_post(star, caption="not for you")
        await factory.ready_post(friend, caption="for you")
        await kick_relay(feed_server.worker.ctx)
        async with asyncio.timeout(2):
            message = json.loads(await ws.recv())
        assert message["payload"]["data"]["feedItemAdded"]["caption"] == "for you"
    finally:
        await ws.close()
