"""Live subscriptions with clients we did not write: Python `gql` over both WebSocket
subprotocols, Apollo's multipart HTTP subscriptions read by aiohttp's multipart reader,
and the reference Node `graphql-ws` client (what Apollo Client, urql and Relay use).
Then the live feed following the follow graph: a celebrity followed (or unfollowed,
or blocked) during a subscription changes the channels it listens to.

The same clients receive notificationAdded (issue 8, point 5), which rides the same hub
and presence: a notification written by the worker reaches the recipient's running
subscription, and one from an account the recipient blocked meanwhile does not.

"Listening" is observed from Redis itself (`PUBSUB NUMSUB`), never from the hub's
private state: a subscription is registered once its channel has a subscriber.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport
from websockets.typing import Subprotocol

from domain.notifications import NotificationKind, NotificationRecord
from infra.feedstore import FOLLOWS_CHANGED, author_channel, live_key, user_channel
from infra.ids import to_global_id
from infra.pubsub import QUEUE_SIZE, PubSubHub, notification_channel, publish_if_live
from tests.conftest import GraphQLClient, Server
from tests.factories import Factory, MadeUser
from workers.feed import kick_relay

NODE_CLIENT = Path(__file__).parent / "node"
# Generous: a loaded CI machine is slow, and a deadline only keeps a broken test from hanging.
DEADLINE = 30

FEED_ITEM = """
subscription { feedItemAdded { id caption author { username } media { width height placeholder } } }
"""
READ_FEED = "query { feed(first: 1) { edges { cursor } } }"
FOLLOW = "mutation ($id: ID!) { follow(userId: $id) { errors { code } } }"
UNFOLLOW = "mutation ($id: ID!) { unfollow(userId: $id) { errors { code } } }"
BLOCK = "mutation ($id: ID!) { block(userId: $id) { errors { code } } }"


def ws_url(server: Server) -> str:
    return server.base_url.replace("http://", "ws://") + "/graphql"


def expected_item(post_id: int, caption: str, author: MadeUser) -> dict[str, Any]:
    """feedItemAdded as the factory's READY post looks (one 1080x1080 photo)."""
    return {
        "id": to_global_id("Post", post_id),
        "caption": caption,
        "author": {"username": author.username},
        "media": [{"width": 1080, "height": 1080, "placeholder": "LEHV6nWB2yk8pyo0adR*.7kCMdnj"}],
    }


async def subscribers(server: Server, channel: str) -> int:
    counts = dict(await server.redis.pubsub_numsub(channel))
    return int(counts.get(channel.encode(), 0))


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll until the check holds (failing after the deadline)."""
    async with asyncio.timeout(DEADLINE):
        # Polls state in Redis or in another task, which have no event to wait on.
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def wait_for_subscribers(server: Server, channel: str) -> None:
    """Until some process subscribed the channel in Redis (a subscription is live)."""

    async def subscribed() -> bool:
        return await subscribers(server, channel) > 0

    await until(subscribed)


async def wait_for_no_subscribers(server: Server, channel: str) -> None:
    async def unsubscribed() -> bool:
        return await subscribers(server, channel) == 0

    await until(unsubscribed)


async def live_reader(server: Server, gql: GraphQLClient, factory: Factory, name: str) -> MadeUser:
    """A user who read their feed (fan-out only writes to, and publishes for, active
    readers) and whose channel no earlier test's subscription still holds (ids restart
    with every test)."""
    user = await factory.user(name)
    await gql(READ_FEED, token=user.token)
    await wait_for_no_subscribers(server, user_channel(user.pk))
    return user


async def celebrity(factory: Factory, name: str) -> MadeUser:
    """An author at this server's celebrity threshold (3): pulled, not fanned out."""
    star = await factory.user(name)
    for fan in await factory.users(3):
        await factory.follow(fan, star)
    return star


async def make_ready(server: Server, factory: Factory, author: MadeUser, caption: str) -> int:
    """A post becomes READY and the relay hands its fan-out to the worker at once."""
    post_id = await factory.ready_post(author, caption)
    assert server.worker is not None
    await kick_relay(server.worker.ctx)
    return post_id


def first_of(results: AsyncIterator[Any]) -> asyncio.Task[Any]:
    """Start iterating (which opens the subscription) and return the first item's task."""

    async def first() -> Any:
        return await anext(results)

    return asyncio.ensure_future(first())


# -- Python gql over both WebSocket subprotocols --------------------------------------


@pytest.mark.parametrize(
    "subprotocol",
    [WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL, WebsocketsTransport.APOLLO_SUBPROTOCOL],
    ids=["graphql-transport-ws", "legacy-graphql-ws"],
)
async def test_gql_client_receives_a_followed_authors_post(feed_server, gql, factory, subprotocol):
    author = await factory.user("author")
    fan = await live_reader(feed_server, gql, factory, "fan")
    await factory.follow(fan, author)
    transport = WebsocketsTransport(
        url=ws_url(feed_server),
        init_payload={"authorization": f"Bearer {fan.token}"},
        subprotocols=[subprotocol],
        # Legacy protocol: the server's `ka` messages must keep arriving.
        keep_alive_timeout=60 if subprotocol == WebsocketsTransport.APOLLO_SUBPROTOCOL else None,
    )
    async with Client(transport=transport) as session:
        results = session.subscribe(GraphQLRequest(FEED_ITEM))
        first = first_of(results)
        await wait_for_subscribers(feed_server, user_channel(fan.pk))
        post_id = await make_ready(feed_server, factory, author, "hello gql")
        async with asyncio.timeout(DEADLINE):
            result = await first
        await results.aclose()
    assert transport.subprotocol == subprotocol
    assert result == {"feedItemAdded": expected_item(post_id, "hello gql", author)}


async def test_graphql_transport_ws_refuses_a_forged_token(feed_server):
    async with websockets.connect(
        ws_url(feed_server), subprotocols=[Subprotocol("graphql-transport-ws")]
    ) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": "Bearer forged"}})
        )
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(DEADLINE):
                await ws.recv()
    assert (ws.close_code, ws.close_reason) == (4403, "Forbidden")


async def test_legacy_graphql_ws_refuses_a_forged_token(feed_server):
    # Auth over the legacy protocol goes through the same on_ws_connect as the new one.
    async with websockets.connect(
        ws_url(feed_server), subprotocols=[Subprotocol("graphql-ws")]
    ) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": "Bearer forged"}})
        )
        async with asyncio.timeout(DEADLINE):
            message = json.loads(await ws.recv())
        assert message == {"type": "connection_error", "payload": {"code": "UNAUTHENTICATED"}}


# -- Apollo's multipart subscriptions over plain HTTP ---------------------------------


async def read_parts(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    """(content type, decoded JSON) of every part, as aiohttp's multipart reader sees them."""
    reader = aiohttp.MultipartReader.from_response(response)
    while True:
        part = await reader.next()
        if part is None:
            return
        assert isinstance(part, aiohttp.BodyPartReader)
        yield part.headers["Content-Type"], json.loads(await part.read())


async def test_multipart_http_subscription_delivers_with_heartbeats(feed_server, gql, factory):
    author = await factory.user("author")
    fan = await live_reader(feed_server, gql, factory, "fan")
    await factory.follow(fan, author)
    headers = {
        "Authorization": f"Bearer {fan.token}",
        "Accept": 'multipart/mixed;subscriptionSpec="1.0", application/json',
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            feed_server.base_url + "/graphql", json={"query": FEED_ITEM}, headers=headers
        ) as response,
    ):
        assert response.status == 200
        content_type = response.headers["Content-Type"]
        assert content_type.startswith("multipart/mixed")
        assert "boundary=graphql" in content_type.replace('"', "")
        assert "subscriptionSpec=1.0" in content_type.replace('"', "")
        await wait_for_subscribers(feed_server, user_channel(fan.pk))
        post_id = await make_ready(feed_server, factory, author, "hello multipart")
        heartbeats = 0
        payloads: list[dict[str, Any]] = []
        async with asyncio.timeout(DEADLINE):
            # A heartbeat (`{}`) opens the stream, then one comes every 5 seconds.
            async for part_type, body in read_parts(response):
                assert part_type.startswith("application/json")
                if body == {}:
                    heartbeats += 1
                else:
                    payloads.append(body)
                if heartbeats and payloads:
                    break
    assert heartbeats >= 1
    assert payloads == [
        {"payload": {"data": {"feedItemAdded": expected_item(post_id, "hello multipart", author)}}}
    ]


@pytest.mark.parametrize(
    "accept",
    [
        'multipart/mixed;subscriptionSpec="1.0", application/json',
        "multipart/mixed;boundary=graphql;subscriptionSpec=1.0,application/json",
        'multipart/mixed;boundary="graphql";subscriptionSpec=1.0,application/json',
    ],
    ids=["protocol-docs", "apollo-client", "apollo-ios-kotlin"],
)
async def test_multipart_http_subscription_needs_a_token(feed_server, accept):
    # Each Accept header a client really sends is taken for a multipart subscription.
    headers = {"Accept": accept}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            feed_server.base_url + "/graphql", json={"query": FEED_ITEM}, headers=headers
        ) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("multipart/mixed")
        async with asyncio.timeout(DEADLINE):
            async for _, body in read_parts(response):
                if body != {}:
                    break
    errors = body["payload"]["errors"]
    assert [e["extensions"]["code"] for e in errors] == ["UNAUTHENTICATED"]


async def test_multipart_http_subscription_opens_with_a_delimiter(feed_server, factory):
    # Apollo's router starts its stream with `\r\n--graphql\r\n`: the first part is a part.
    fan = await factory.user("fan")
    headers = {
        "Authorization": f"Bearer {fan.token}",
        "Accept": 'multipart/mixed;subscriptionSpec="1.0", application/json',
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            feed_server.base_url + "/graphql", json={"query": FEED_ITEM}, headers=headers
        ) as response,
    ):
        async with asyncio.timeout(DEADLINE):
            start = await response.content.readexactly(len(b"\r\n--graphql\r\n"))
    assert start.lstrip(b"\r\n").startswith(b"--graphql\r\n")


# -- The reference Node graphql-ws client ---------------------------------------------


@pytest.fixture(scope="session")
async def node_client() -> Path:
    """tests/node with its locked packages installed (`npm ci`, once, when the lockfile
    changed since the last install). Skipped only when node or npm is not installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        reason = "node and npm are needed to run the reference graphql-ws client"
        if os.environ.get("REQUIRE_NODE", "") not in ("", "0"):  # CI: fail, never skip
            pytest.fail(reason)
        pytest.skip(reason)
    installed = NODE_CLIENT / "node_modules" / ".package-lock.json"
    lockfile = NODE_CLIENT / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lockfile.stat().st_mtime:
        process = await asyncio.create_subprocess_exec(
            npm,
            "ci",
            "--no-audit",
            "--no-fund",
            cwd=NODE_CLIENT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            pytest.fail(f"npm ci failed in {NODE_CLIENT}:\n{output.decode(errors='replace')}")
    return NODE_CLIENT


async def node_events(process: asyncio.subprocess.Process) -> AsyncIterator[dict[str, Any]]:
    """The JSON lines the Node script prints, as they come."""
    assert process.stdout is not None
    while line := await process.stdout.readline():
        yield json.loads(line)


async def test_reference_graphql_ws_client_receives_a_followed_authors_post(
    feed_server, gql, factory, node_client
):
    author = await factory.user("author")
    fan = await live_reader(feed_server, gql, factory, "fan")
    await factory.follow(fan, author)
    process = await asyncio.create_subprocess_exec(
        "node",
        str(node_client / "subscribe.mjs"),
        ws_url(feed_server),
        fan.token,
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    events: list[dict[str, Any]] = []
    post_id = None
    try:
        async with asyncio.timeout(DEADLINE):
            async for event in node_events(process):
                events.append(event)
                if event["event"] == "connected":
                    await wait_for_subscribers(feed_server, user_channel(fan.pk))
                    post_id = await make_ready(feed_server, factory, author, "hello node")
            assert process.stderr is not None
            stderr = (await process.stderr.read()).decode(errors="replace")
            assert await process.wait() == 0, (events, stderr)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert post_id is not None, events  # the client connected
    nexts = [e["result"] for e in events if e["event"] == "next"]
    assert nexts == [{"data": {"feedItemAdded": expected_item(post_id, "hello node", author)}}]
    frames = [e for e in events if e["event"] == "frame"]
    assert len(frames) >= 2  # connection_ack and next at least
    assert all(frame["binary"] is False for frame in frames)


# -- What browsers need: every message a text frame -----------------------------------


async def test_every_graphql_transport_ws_message_is_a_text_frame(feed_server, gql, factory):
    author = await factory.user("author")
    fan = await live_reader(feed_server, gql, factory, "fan")
    await factory.follow(fan, author)
    async with websockets.connect(
        ws_url(feed_server), subprotocols=[Subprotocol("graphql-transport-ws")]
    ) as ws:

        async def receive() -> dict[str, Any]:
            async with asyncio.timeout(DEADLINE):
                frame = await ws.recv()
            assert isinstance(frame, str), frame  # bytes would be a binary frame
            message: dict[str, Any] = json.loads(frame)
            return message

        auth = {"authorization": f"Bearer {fan.token}"}
        await ws.send(json.dumps({"type": "connection_init", "payload": auth}))
        assert (await receive())["type"] == "connection_ack"
        await ws.send(json.dumps({"type": "ping"}))
        assert (await receive())["type"] == "pong"
        await ws.send(
            json.dumps({"id": "q", "type": "subscribe", "payload": {"query": "{ __typename }"}})
        )
        assert await receive() == {
            "id": "q",
            "type": "next",
            "payload": {"data": {"__typename": "Query"}},
        }
        assert await receive() == {"id": "q", "type": "complete"}
        await ws.send(
            json.dumps({"id": "bad", "type": "subscribe", "payload": {"query": "{ nope }"}})
        )
        error = await receive()
        assert (error["id"], error["type"]) == ("bad", "error")
        await ws.send(
            json.dumps({"id": "feed", "type": "subscribe", "payload": {"query": FEED_ITEM}})
        )
        await wait_for_subscribers(feed_server, user_channel(fan.pk))
        post_id = await make_ready(feed_server, factory, author, "text only")
        item = await receive()
        assert item["type"] == "next"
        assert item["payload"]["data"]["feedItemAdded"] == expected_item(
            post_id, "text only", author
        )


async def test_every_legacy_graphql_ws_message_is_a_text_frame(feed_server, gql, factory):
    author = await factory.user("author")
    fan = await live_reader(feed_server, gql, factory, "fan")
    await factory.follow(fan, author)
    async with websockets.connect(
        ws_url(feed_server), subprotocols=[Subprotocol("graphql-ws")]
    ) as ws:

        async def receive() -> dict[str, Any]:
            while True:
                async with asyncio.timeout(DEADLINE):
                    frame = await ws.recv()
                assert isinstance(frame, str), frame
                message: dict[str, Any] = json.loads(frame)
                if message["type"] != "ka":
                    return message

        auth = {"authorization": f"Bearer {fan.token}"}
        await ws.send(json.dumps({"type": "connection_init", "payload": auth}))
        assert (await receive())["type"] == "connection_ack"
        async with asyncio.timeout(DEADLINE):
            keep_alive = await ws.recv()  # sent right after the ack, then every 15 s
        assert isinstance(keep_alive, str)
        assert json.loads(keep_alive) == {"type": "ka"}
        # The legacy protocol carries subscriptions only: a query is refused, in text too.
        await ws.send(
            json.dumps({"id": "q", "type": "start", "payload": {"query": "{ __typename }"}})
        )
        refused = await receive()
        assert (refused["id"], refused["type"]) == ("q", "error")
        await ws.send(json.dumps({"id": "feed", "type": "start", "payload": {"query": FEED_ITEM}}))
        await wait_for_subscribers(feed_server, user_channel(fan.pk))
        post_id = await make_ready(feed_server, factory, author, "legacy text")
        item = await receive()
        assert item["type"] == "data"
        assert item["payload"]["data"]["feedItemAdded"] == expected_item(
            post_id, "legacy text", author
        )
        await ws.send(json.dumps({"id": "feed", "type": "stop"}))
        assert await receive() == {"id": "feed", "type": "complete"}


# -- Celebrity channels follow the follow graph ---------------------------------------


async def raw_subscription(server: Server, user: MadeUser) -> websockets.ClientConnection:
    ws = await websockets.connect(
        ws_url(server), subprotocols=[Subprotocol("graphql-transport-ws")]
    )
    auth = {"authorization": f"Bearer {user.token}"}
    await ws.send(json.dumps({"type": "connection_init", "payload": auth}))
    async with asyncio.timeout(DEADLINE):
        assert json.loads(await ws.recv())["type"] == "connection_ack"
    await ws.send(json.dumps({"id": "feed", "type": "subscribe", "payload": {"query": FEED_ITEM}}))
    await wait_for_subscribers(server, user_channel(user.pk))
    return ws


async def next_item(ws: websockets.ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(DEADLINE):
        message = json.loads(await ws.recv())
    assert message["type"] == "next", message
    item: dict[str, Any] = message["payload"]["data"]["feedItemAdded"]
    return item


async def test_a_celebrity_followed_during_a_subscription_is_delivered(feed_server, gql, factory):
    star = await celebrity(factory, "star")
    fan = await live_reader(feed_server, gql, factory, "fan")
    await wait_for_no_subscribers(feed_server, author_channel(star.pk))  # no earlier test's
    ws = await raw_subscription(feed_server, fan)
    try:
        assert await subscribers(feed_server, author_channel(star.pk)) == 0
        followed = await gql(FOLLOW, token=fan.token, id=star.id)
        assert followed["follow"]["errors"] == []
        # The same subscription now listens to the star's channel too.
        await wait_for_subscribers(feed_server, author_channel(star.pk))
        post_id = await make_ready(feed_server, factory, star, "for my new fan")
        assert await next_item(ws) == expected_item(post_id, "for my new fan", star)
    finally:
        await ws.close()


@pytest.mark.parametrize("how", ["unfollow", "block"])
async def test_a_celebrity_unfollowed_during_a_subscription_is_no_longer_heard(
    feed_server, gql, factory, how
):
    star, friend = await celebrity(factory, "star"), await factory.user("friend")
    fan = await live_reader(feed_server, gql, factory, "fan")
    await factory.follow(fan, star)
    await factory.follow(fan, friend)
    ws = await raw_subscription(feed_server, fan)
    try:
        await wait_for_subscribers(feed_server, author_channel(star.pk))
        if how == "unfollow":
            result = await gql(UNFOLLOW, token=fan.token, id=star.id)
        else:  # the star blocks the fan: the fan's follow ends too
            result = await gql(BLOCK, token=star.token, id=fan.id)
        assert result[how]["errors"] == []
        # The channel itself is dropped, not only filtered event by event.
        await wait_for_no_subscribers(feed_server, author_channel(star.pk))
        await make_ready(feed_server, factory, star, "not for you")
        post_id = await make_ready(feed_server, factory, friend, "for you")
        assert await next_item(ws) == expected_item(post_id, "for you", friend)
    finally:
        await ws.close()


# -- The hub: changing channels keeps shared channels right ---------------------------


async def test_changing_channels_keeps_a_channel_another_listener_shares(feed_server):
    hub = PubSubHub(feed_server.redis)
    shared, mine, new = (f"test:{name}:{uuid.uuid4().hex}" for name in ("shared", "mine", "new"))
    received: dict[str, list[bytes]] = {"changer": [], "other": []}

    async def collect(name: str, messages: AsyncIterator[bytes]) -> None:
        async for message in messages:
            received[name].append(message)

    async def counts(expected: list[int]) -> bool:
        # One Redis subscription per channel per process, however many listeners share it.
        return [await subscribers(feed_server, c) for c in (shared, mine, new)] == expected

    async def got(name: str, *messages: bytes) -> bool:
        return received[name] == list(messages)

    try:
        async with (
            hub.subscribe([shared, mine], presence_user=1) as changer,
            hub.subscribe([shared], presence_user=2) as other,
        ):
            tasks = [
                asyncio.create_task(collect("changer", changer)),
                asyncio.create_task(collect("other", other)),
            ]
            await until(lambda: counts([1, 1, 0]))
            await changer.update_channels([new])
            await until(lambda: counts([1, 0, 1]))
            # In one connection's order: a message on `mine` would reach the changer first.
            await feed_server.redis.publish(mine, "to nobody")
            await feed_server.redis.publish(shared, "to the other")
            await feed_server.redis.publish(new, "to the changer")
            await until(lambda: got("changer", b"to the changer"))
            await until(lambda: got("other", b"to the other"))
            await changer.update_channels([new, shared])
            await feed_server.redis.publish(shared, "to both")
            await until(lambda: got("changer", b"to the changer", b"to both"))
            await until(lambda: got("other", b"to the other", b"to both"))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        # Both listeners gone: nothing stays subscribed.
        await until(lambda: counts([0, 0, 0]))
    finally:
        await hub.close()


async def test_an_author_who_becomes_a_celebrity_is_heard_by_live_followers(
    feed_server, gql, factory
):
    # Given a fan subscribed while the author is below the threshold (3)...
    star = await factory.user("rising")
    fan = await live_reader(feed_server, gql, factory, "fan")
    await factory.follow(fan, star)
    ws = await raw_subscription(feed_server, fan)
    try:
        assert await subscribers(feed_server, author_channel(star.pk)) == 0
        # ...when two others follow the author through the API, crossing the threshold...
        for other in await factory.users(2):
            assert (await gql(FOLLOW, token=other.token, id=star.id))["follow"]["errors"] == []
        # ...then the fan's running subscription listens to the new celebrity's channel
        # (posts are no longer fanned out to the fan's own channel) and hears the post.
        await wait_for_subscribers(feed_server, author_channel(star.pk))
        post_id = await make_ready(feed_server, factory, star, "famous now")
        assert await next_item(ws) == expected_item(post_id, "famous now", star)
    finally:
        await ws.close()


async def test_a_control_message_is_never_lost_to_a_full_queue(feed_server):
    # A slow client's queue overflows and drops its oldest messages; a follows-changed
    # among them must still make its subscription re-read whom to listen to.
    hub = PubSubHub(feed_server.redis)
    channel = f"test:slow:{uuid.uuid4().hex}"
    total = QUEUE_SIZE + 50
    try:
        async with (
            hub.subscribe([channel], presence_user=3) as slow,
            hub.subscribe([channel], presence_user=4) as fast,
        ):

            async def drain_fast() -> None:
                for _ in range(total + 1):
                    await anext(fast)

            # The hub hands each message to both listeners at once: when the fast one
            # has the last, the slow one's queue holds all it will ever hold.
            reader = asyncio.create_task(drain_fast())
            await feed_server.redis.publish(channel, FOLLOWS_CHANGED)
            for i in range(total):
                await feed_server.redis.publish(channel, str(i))
            async with asyncio.timeout(DEADLINE):
                await reader
            kept = [await anext(slow) for _ in range(QUEUE_SIZE)]
            assert kept == [str(i).encode() for i in range(total - QUEUE_SIZE, total)]
            assert FOLLOWS_CHANGED not in kept  # the message was dropped...
            assert slow.stale  # ...its effect was not
    finally:
        await hub.close()


async def test_a_dropped_pubsub_connection_makes_every_listener_resync(feed_server):
    # redis-py reconnects and re-subscribes by itself; what was published meanwhile is
    # lost, so each listener is marked stale and woken to re-read its channels.
    hub = PubSubHub(feed_server.redis)
    channel = f"test:drop:{uuid.uuid4().hex}"
    try:
        async with hub.subscribe([channel], presence_user=5) as listener:
            await wait_for_subscribers(feed_server, channel)
            assert not listener.stale
            await feed_server.redis.client_kill_filter(_type="pubsub")
            async with asyncio.timeout(DEADLINE):
                event = await listener.next_event()
            assert event is not None and event.data == FOLLOWS_CHANGED
            assert listener.stale
            # And it hears its channel again afterwards.
            listener.stale = False
            await wait_for_subscribers(feed_server, channel)
            await feed_server.redis.publish(channel, "after")
            async with asyncio.timeout(DEADLINE):
                while (event := await listener.next_event()) is not None and event.data != b"after":
                    pass
            assert event is not None and event.channel == channel
    finally:
        await hub.close()


# -- notificationAdded: the same clients, the same hub and presence -------------------

NOTIFICATION_ADDED = (
    "subscription { notificationAdded { kind read actor { username } post { id } comment { id } } }"
)


def expected_notification(kind: str, actor: MadeUser) -> dict[str, Any]:
    return {
        "kind": kind,
        "read": False,
        "actor": {"username": actor.username},
        "post": None,
        "comment": None,
    }


async def wait_for_notification_listener(server: Server, user: MadeUser) -> None:
    """Until a subscription listens on the user's notification channel and marks them
    present (the worker announces only to present users)."""
    await wait_for_subscribers(server, notification_channel(user.pk))

    async def present() -> bool:
        return bool(await server.redis.exists(live_key(user.pk)))

    await until(present)


async def follow_and_deliver(server: Server, gql: GraphQLClient, fan: MadeUser, star: MadeUser):
    """fan follows star through the API; the relay hands the notification to the worker."""
    assert (await gql(FOLLOW, token=fan.token, id=star.id))["follow"]["errors"] == []
    assert server.worker is not None
    await kick_relay(server.worker.ctx)


@pytest.mark.parametrize(
    "subprotocol",
    [WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL, WebsocketsTransport.APOLLO_SUBPROTOCOL],
    ids=["graphql-transport-ws", "legacy-graphql-ws"],
)
async def test_gql_client_receives_a_new_follower_notification(
    feed_server, gql, factory, subprotocol
):
    star, fan = await factory.user("star"), await factory.user("fan")
    transport = WebsocketsTransport(
        url=ws_url(feed_server),
        init_payload={"authorization": f"Bearer {star.token}"},
        subprotocols=[subprotocol],
        keep_alive_timeout=60 if subprotocol == WebsocketsTransport.APOLLO_SUBPROTOCOL else None,
    )
    async with Client(transport=transport) as session:
        results = session.subscribe(GraphQLRequest(NOTIFICATION_ADDED))
        first = first_of(results)
        await wait_for_notification_listener(feed_server, star)
        await follow_and_deliver(feed_server, gql, fan, star)
        async with asyncio.timeout(DEADLINE):
            result = await first
        await results.aclose()
    assert transport.subprotocol == subprotocol
    assert result == {"notificationAdded": expected_notification("FOLLOW", fan)}
    # The subscription let go of its channel when the client stopped.
    await wait_for_no_subscribers(feed_server, notification_channel(star.pk))


async def test_reference_graphql_ws_client_receives_a_notification(
    feed_server, gql, factory, node_client
):
    star, fan = await factory.user("star"), await factory.user("fan")
    process = await asyncio.create_subprocess_exec(
        "node",
        str(node_client / "subscribe.mjs"),
        ws_url(feed_server),
        star.token,
        "1",
        NOTIFICATION_ADDED,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    events: list[dict[str, Any]] = []
    followed = False
    try:
        async with asyncio.timeout(DEADLINE):
            async for event in node_events(process):
                events.append(event)
                if event["event"] == "connected":
                    await wait_for_notification_listener(feed_server, star)
                    await follow_and_deliver(feed_server, gql, fan, star)
                    followed = True
            assert process.stderr is not None
            stderr = (await process.stderr.read()).decode(errors="replace")
            assert await process.wait() == 0, (events, stderr)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert followed, events  # the client connected
    nexts = [e["result"] for e in events if e["event"] == "next"]
    assert nexts == [{"data": {"notificationAdded": expected_notification("FOLLOW", fan)}}]
    frames = [e for e in events if e["event"] == "frame"]
    assert all(frame["binary"] is False for frame in frames)


async def test_multipart_http_subscription_delivers_a_notification(feed_server, gql, factory):
    star, fan = await factory.user("star"), await factory.user("fan")
    headers = {
        "Authorization": f"Bearer {star.token}",
        "Accept": 'multipart/mixed;subscriptionSpec="1.0", application/json',
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            feed_server.base_url + "/graphql",
            json={"query": NOTIFICATION_ADDED},
            headers=headers,
        ) as response,
    ):
        assert response.status == 200
        await wait_for_notification_listener(feed_server, star)
        await follow_and_deliver(feed_server, gql, fan, star)
        async with asyncio.timeout(DEADLINE):
            async for _, body in read_parts(response):
                if body != {}:  # heartbeats aside
                    break
    assert body == {
        "payload": {"data": {"notificationAdded": expected_notification("FOLLOW", fan)}}
    }


async def test_a_notification_from_an_account_blocked_meanwhile_is_not_delivered(
    feed_server, gql, factory
):
    star, fan, troll = await factory.users(3)
    ws = await websockets.connect(
        ws_url(feed_server), subprotocols=[Subprotocol("graphql-transport-ws")]
    )
    try:
        auth = {"authorization": f"Bearer {star.token}"}
        await ws.send(json.dumps({"type": "connection_init", "payload": auth}))
        async with asyncio.timeout(DEADLINE):
            assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(
            json.dumps({"id": "n", "type": "subscribe", "payload": {"query": NOTIFICATION_ADDED}})
        )
        await wait_for_notification_listener(feed_server, star)
        # The star blocks the troll just after a worker wrote (and checked) the troll's
        # notification: its announcement arrives after the block.
        assert (await gql(BLOCK, token=star.token, id=troll.id))["block"]["errors"] == []
        stale = NotificationRecord(
            id=1,
            recipient_id=star.pk,
            kind=NotificationKind.FOLLOW,
            actor_id=troll.pk,
            post_id=None,
            comment_id=None,
            created_at=datetime.now(UTC),
            read_at=None,
        )
        channel = notification_channel(star.pk)
        assert await publish_if_live(feed_server.redis, [(star.pk, channel, stale.to_message())])
        # Then a fan follows: the subscription's next message is the fan's.
        await follow_and_deliver(feed_server, gql, fan, star)
        async with asyncio.timeout(DEADLINE):
            message = json.loads(await ws.recv())
        assert message["type"] == "next", message
        assert message["payload"]["data"]["notificationAdded"] == expected_notification(
            "FOLLOW", fan
        )
    finally:
        await ws.close()


SOCIAL_ITEM = """
subscription { feedItemAdded { id likeCount commentCount viewerHasLiked
  comments(first: 2) { edges { node { text } } } } }
"""


async def test_a_live_post_carries_its_social_fields(feed_server, gql, factory):
    author = await factory.user("author")
    fan = await live_reader(feed_server, gql, factory, "fan")
    await factory.follow(fan, author)
    transport = WebsocketsTransport(
        url=ws_url(feed_server), init_payload={"authorization": f"Bearer {fan.token}"}
    )
    async with Client(transport=transport) as session:
        results = session.subscribe(GraphQLRequest(SOCIAL_ITEM))
        first = first_of(results)
        await wait_for_subscribers(feed_server, user_channel(fan.pk))
        post_id = await make_ready(feed_server, factory, author, "fresh")
        async with asyncio.timeout(DEADLINE):
            result = await first
        await results.aclose()
    assert result == {
        "feedItemAdded": {
            "id": to_global_id("Post", post_id),
            "likeCount": 0,
            "commentCount": 0,
            "viewerHasLiked": False,
            "comments": {"edges": []},
        }
    }
