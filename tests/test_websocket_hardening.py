"""The WebSocket transports against hostile clients (issue 10): every malformed message
is answered the way graphql-transport-ws (or the legacy graphql-ws) says, never with a
server-side TypeError and a socket dropped without a close frame; and the limits hold:
the `connection_init` timeout, operations per socket, sockets per user across API
processes (counted in Redis, with leases that outlive no process).

The server here has small limits (init timeout 1 s, 3 operations per socket, 2 sockets
per user) and its own Redis database (8). What the well-behaved clients see (gql, the
reference Node graphql-ws client) is in tests/test_subscription_clients.py, which runs
on the same handlers; the reference client's view of the limits is here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import signal
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
from redis.asyncio import Redis
from starlette.websockets import WebSocket, WebSocketState
from uvicorn.main import main as uvicorn_main
from websockets.typing import Subprotocol

from infra.feedstore import user_channel
from run import api_commands
from schema.websocket import (
    ConnectionLimiter,
    TextFrameWebSocketAdapter,
    address_subject,
    connections_key,
)
from settings import Settings
from tests.conftest import Server, clean_state, serve, with_redis_db
from tests.factories import Factory, MadeUser
from tests.test_degradation import private_redis, workdir  # noqa: F401  # the fixture
from tests.test_subscription_clients import (
    node_client,  # noqa: F401  # the fixture, made available here (`reference_client`)
    node_events,
    read_parts,
    wait_for_subscribers,
)

DEADLINE = 30  # generous: only keeps a broken test from hanging
TRANSPORT = Subprotocol("graphql-transport-ws")
LEGACY = Subprotocol("graphql-ws")
OPERATIONS_PER_SOCKET = 3
SOCKETS_PER_USER = 2
FEED_ITEM = "subscription { feedItemAdded { id } }"


def limited(settings: Settings) -> Settings:
    return replace(
        settings,
        redis_url=with_redis_db(settings.redis_url, 8),
        ws_init_timeout_seconds=1.0,
        ws_max_operations_per_connection=OPERATIONS_PER_SOCKET,
        ws_max_connections_per_user=SOCKETS_PER_USER,
    )


@pytest.fixture(scope="module")
async def ws_server_instance(settings: Settings) -> AsyncIterator[Server]:
    async with serve(limited(settings)) as running:
        yield running


@pytest.fixture
async def ws_server(ws_server_instance: Server) -> Server:
    await clean_state(ws_server_instance)
    return ws_server_instance


@pytest.fixture
def users(ws_server: Server) -> Factory:
    return Factory(engine=ws_server.engine, settings=ws_server.settings)


def ws_url(server: Server) -> str:
    return server.base_url.replace("http://", "ws://") + "/graphql"


async def receive(ws: websockets.ClientConnection) -> dict[str, Any]:
    """The next message, skipping the legacy protocol's keep-alives."""
    while True:
        async with asyncio.timeout(DEADLINE):
            frame = await ws.recv()
        message: dict[str, Any] = json.loads(frame)
        if message.get("type") != "ka":
            return message


async def closed(ws: websockets.ClientConnection) -> tuple[int | None, str | None]:
    """Wait for the server's close frame; (code, reason). Messages before it are skipped."""
    with pytest.raises(websockets.ConnectionClosed):
        async with asyncio.timeout(DEADLINE):
            while True:
                await ws.recv()
    return ws.close_code, ws.close_reason


async def connect(
    server: Server, token: str | None = None, subprotocol: Subprotocol = TRANSPORT
) -> websockets.ClientConnection:
    """An acknowledged connection."""
    ws = await websockets.connect(ws_url(server), subprotocols=[subprotocol])
    payload = {"authorization": f"Bearer {token}"} if token else {}
    await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
    assert (await receive(ws))["type"] == "connection_ack"
    return ws


async def assert_alive(ws: websockets.ClientConnection) -> None:
    """The socket still runs operations (graphql-transport-ws)."""
    await ws.send(
        json.dumps({"id": "alive", "type": "subscribe", "payload": {"query": "{ __typename }"}})
    )
    assert await receive(ws) == {
        "id": "alive",
        "type": "next",
        "payload": {"data": {"__typename": "Query"}},
    }
    assert await receive(ws) == {"id": "alive", "type": "complete"}


# -- graphql-transport-ws: invalid messages close with 4400 -----------------------------

INVALID_MESSAGES = {
    # Each was a TypeError on the server and a socket dropped without a close frame.
    "a list": "[1,2]",
    "null": "null",
    "a number": "5",
    "a string": '"subscribe"',
    "a string payload": '{"type":"subscribe","id":"a","payload":"{ __typename }"}',
    # Each was run or ignored.
    "an integer id": '{"type":"subscribe","id":1,"payload":{"query":"{ __typename }"}}',
    "an empty id": '{"type":"subscribe","id":"","payload":{"query":"{ __typename }"}}',
    # Echoed in every message about the operation: a megabyte id was taken.
    "an id of 257 characters": (
        '{"type":"subscribe","id":"' + "x" * 257 + '","payload":{"query":"{ __typename }"}}'
    ),
    "a query that is a number": '{"type":"subscribe","id":"a","payload":{"query":5}}',
    "no query": '{"type":"subscribe","id":"a","payload":{}}',
    "variables that are a number": (
        '{"type":"subscribe","id":"a","payload":{"query":"{ __typename }","variables":5}}'
    ),
    "an operation name that is a list": (
        '{"type":"subscribe","id":"a","payload":{"query":"{ __typename }","operationName":[]}}'
    ),
    "extensions that are a string": (
        '{"type":"subscribe","id":"a","payload":{"query":"{ __typename }","extensions":"x"}}'
    ),
    "a complete without an id": '{"type":"complete"}',
    "a ping with a number payload": '{"type":"ping","payload":5}',
    "no type": "{}",
    "a number type": '{"type":5}',
    "a server-only type": '{"type":"next","id":"a","payload":{}}',
    "an unknown type": '{"type":"' + "x" * 500 + '"}',
    # The standard parser's RecursionError and ValueError were not caught either.
    "JSON nested 5,000 deep": "[" * 5000 + "]" * 5000,
    "a 5,000-digit number": '{"type":"ping","payload":{"n":' + "9" * 5000 + "}}",
    "not JSON": "{type: ping}",
}


@pytest.mark.parametrize("frame", INVALID_MESSAGES.values(), ids=INVALID_MESSAGES.keys())
async def test_an_invalid_message_closes_the_socket_with_4400(ws_server, frame):
    ws = await connect(ws_server)
    await ws.send(frame)
    code, reason = await closed(ws)
    assert code == 4400
    assert reason
    assert len(reason.encode()) <= 123


async def test_an_invalid_connection_init_closes_with_4400(ws_server):
    ws = await websockets.connect(ws_url(ws_server), subprotocols=[TRANSPORT])
    await ws.send('{"type":"connection_init","payload":"Bearer x"}')
    assert await closed(ws) == (4400, "connection_init payload must be an object or null")


async def test_a_binary_frame_closes_with_4400(ws_server):
    ws = await connect(ws_server)
    await ws.send(b'{"type":"ping"}')
    assert await closed(ws) == (4400, "WebSocket message type must be text")


async def test_a_null_connection_init_payload_is_accepted(ws_server):
    # The protocol allows a nullish payload; Strawberry refused it with 4400.
    ws = await websockets.connect(ws_url(ws_server), subprotocols=[TRANSPORT])
    await ws.send('{"type":"connection_init","payload":null}')
    assert (await receive(ws))["type"] == "connection_ack"
    await assert_alive(ws)
    await ws.close()


async def test_a_duplicate_long_id_closes_with_4409_and_a_reason_that_fits(ws_server, users):
    fan = await users.user("fan")
    ws = await connect(ws_server, fan.token)
    long_id = "x" * 256  # the longest id allowed; its close reason would not fit
    subscribe = {"id": long_id, "type": "subscribe", "payload": {"query": FEED_ITEM}}
    await ws.send(json.dumps(subscribe))
    await wait_for_subscribers(ws_server, user_channel(fan.pk))
    await ws.send(json.dumps(subscribe))
    code, reason = await closed(ws)
    assert code == 4409
    assert reason is not None
    assert reason.startswith("Subscriber for xxx")
    assert len(reason.encode()) <= 123


# -- graphql-transport-ws: a bad document is the operation's `error` ---------------------

BAD_DOCUMENTS = {
    # Was a bare `complete` (the parser cache raised outside Strawberry's handling).
    "a syntax error": ("{ nope", "INVALID_INPUT", "Syntax Error"),
    "a validation error": ("{ nope }", "INVALID_INPUT", "Cannot query field 'nope'"),
    # Strawberry closed the socket for this one.
    "an unknown operation name": ("query A { __typename }", "INVALID_INPUT", 'named "B"'),
    "too many tokens": ("{ " + "__typename " * 3000 + "}", "QUERY_TOO_COMPLEX", "tokens"),
}


@pytest.mark.parametrize(
    ("document", "code", "message"), BAD_DOCUMENTS.values(), ids=BAD_DOCUMENTS.keys()
)
async def test_a_bad_document_gets_an_error_message_and_the_socket_stays(
    ws_server, document, code, message
):
    ws = await connect(ws_server)
    payload = {"query": document, "operationName": "B" if "query A" in document else None}
    await ws.send(json.dumps({"id": "bad", "type": "subscribe", "payload": payload}))
    error = await receive(ws)
    assert (error["id"], error["type"]) == ("bad", "error")
    assert [e["extensions"]["code"] for e in error["payload"]] == [code]
    assert message in error["payload"][0]["message"]
    # No `complete` follows an `error`; the socket runs the next operation.
    await assert_alive(ws)
    await ws.close()


async def test_variables_that_do_not_coerce_get_an_error_message(ws_server):
    # Refused before anything ran: an `error`, not a `next` carrying errors.
    ws = await connect(ws_server)
    payload = {"query": "query ($n: Int!) { __typename }", "variables": {"n": "five"}}
    await ws.send(json.dumps({"id": "v", "type": "subscribe", "payload": payload}))
    error = await receive(ws)
    assert (error["id"], error["type"]) == ("v", "error")
    assert [e["extensions"]["code"] for e in error["payload"]] == ["INVALID_INPUT"]
    await assert_alive(ws)
    await ws.close()


# -- The legacy graphql-ws protocol -------------------------------------------------------

LEGACY_UNREADABLE = {
    "a list": "[1,2]",
    "null": "null",
    "a string": '"start"',
    "no type": "{}",
    "an unknown type": '{"type":"subscribe"}',
    "an integer id": '{"type":"start","id":1,"payload":{"query":"{ __typename }"}}',
    "a stop without an id": '{"type":"stop"}',
    "an id of 257 characters": '{"type":"stop","id":"' + "x" * 257 + '"}',
    "JSON nested 5,000 deep": "[" * 5000 + "]" * 5000,
}


@pytest.mark.parametrize("frame", LEGACY_UNREADABLE.values(), ids=LEGACY_UNREADABLE.keys())
async def test_legacy_unreadable_message_gets_a_connection_error(ws_server, frame):
    ws = await connect(ws_server, subprotocol=LEGACY)
    await ws.send(frame)
    if frame.startswith("[["):
        # Not JSON to the parser: ignored, as the legacy protocol's parse errors are.
        pass
    else:
        message = await receive(ws)
        assert message["type"] == "connection_error"
        assert message["payload"]["code"] == "INVALID_INPUT"
    # The socket stays, and answers the next operation.
    await ws.send(json.dumps({"id": "s", "type": "start", "payload": {"query": FEED_ITEM}}))
    refused = await receive(ws)
    assert (refused["id"], refused["type"]) == ("s", "error")
    assert refused["payload"]["extensions"]["code"] == "UNAUTHENTICATED"
    await ws.close()


LEGACY_BAD_OPERATIONS = {
    "a string payload": ({"type": "start", "id": "a", "payload": "x"}, "INVALID_INPUT"),
    "a query that is a number": (
        {"type": "start", "id": "a", "payload": {"query": 5}},
        "INVALID_INPUT",
    ),
    "variables that are a number": (
        {"type": "start", "id": "a", "payload": {"query": FEED_ITEM, "variables": 5}},
        "INVALID_INPUT",
    ),
    # Strawberry sent nothing at all for this one.
    "a syntax error": (
        {"type": "start", "id": "a", "payload": {"query": "{ nope"}},
        "INVALID_INPUT",
    ),
}


@pytest.mark.parametrize(
    ("message", "code"), LEGACY_BAD_OPERATIONS.values(), ids=LEGACY_BAD_OPERATIONS.keys()
)
async def test_legacy_bad_operation_gets_its_error_message(ws_server, message, code):
    ws = await connect(ws_server, subprotocol=LEGACY)
    await ws.send(json.dumps(message))
    error = await receive(ws)
    assert (error["id"], error["type"]) == ("a", "error")
    assert error["payload"]["extensions"]["code"] == code
    await ws.close()


# -- connection_init timeout ------------------------------------------------------------


@pytest.mark.parametrize("subprotocol", [TRANSPORT, LEGACY])
async def test_a_socket_without_connection_init_is_closed_with_4408(ws_server, subprotocol):
    # The legacy protocol had no timeout at all: a silent socket stayed open for good.
    ws = await websockets.connect(ws_url(ws_server), subprotocols=[subprotocol])
    assert await closed(ws) == (4408, "Connection initialisation timeout")


async def test_a_second_legacy_connection_init_closes_with_4429(ws_server):
    ws = await connect(ws_server, subprotocol=LEGACY)
    await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
    assert await closed(ws) == (4429, "Too many initialisation requests")


# -- Operations per socket --------------------------------------------------------------


async def test_one_operation_over_the_cap_gets_an_error_and_the_socket_stays(ws_server, users):
    fan = await users.user("fan")
    ws = await connect(ws_server, fan.token)
    for n in range(OPERATIONS_PER_SOCKET):
        await ws.send(
            json.dumps({"id": f"s{n}", "type": "subscribe", "payload": {"query": FEED_ITEM}})
        )
    await wait_for_subscribers(ws_server, user_channel(fan.pk))
    await ws.send(json.dumps({"id": "over", "type": "subscribe", "payload": {"query": FEED_ITEM}}))
    error = await receive(ws)
    assert (error["id"], error["type"]) == ("over", "error")
    assert [e["extensions"]["code"] for e in error["payload"]] == ["RATE_LIMITED"]
    assert f"at most {OPERATIONS_PER_SOCKET}" in error["payload"][0]["message"]
    # Completing one frees its place.
    await ws.send(json.dumps({"id": "s0", "type": "complete"}))
    await assert_alive(ws)
    await ws.close()


async def test_one_legacy_subscription_over_the_cap_gets_an_error(ws_server, users):
    fan = await users.user("fan")
    ws = await connect(ws_server, fan.token, LEGACY)
    for n in range(OPERATIONS_PER_SOCKET):
        await ws.send(json.dumps({"id": f"s{n}", "type": "start", "payload": {"query": FEED_ITEM}}))
    await wait_for_subscribers(ws_server, user_channel(fan.pk))
    await ws.send(json.dumps({"id": "over", "type": "start", "payload": {"query": FEED_ITEM}}))
    error = await receive(ws)
    assert (error["id"], error["type"]) == ("over", "error")
    assert error["payload"]["extensions"]["code"] == "RATE_LIMITED"
    await ws.close()


# -- Sockets per user -------------------------------------------------------------------


async def wait_for_count(
    server: Server, subject: MadeUser | str, expected: int, redis: Redis | None = None
) -> None:
    """Until `subject` (a user, or an `addr:` subject) holds `expected` leases."""
    limiter = ConnectionLimiter(redis or server.redis, cap=SOCKETS_PER_USER, lease_seconds=90)
    key = subject if isinstance(subject, str) else subject.pk
    async with asyncio.timeout(DEADLINE):
        # The count lives in Redis; a socket's lease goes once its handler has closed.
        while await limiter.count(key) != expected:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_a_socket_over_the_users_cap_is_closed_with_4429(ws_server, users):
    fan, other = await users.user("fan"), await users.user("other")
    first = await connect(ws_server, fan.token)
    second = await connect(ws_server, fan.token, LEGACY)  # both protocols count
    third = await websockets.connect(ws_url(ws_server), subprotocols=[TRANSPORT])
    await third.send(
        json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {fan.token}"}})
    )
    # Refused before any connection_ack.
    assert await closed(third) == (4429, "Too many connections")
    # Another user, and anonymous sockets, are not affected.
    await (await connect(ws_server, other.token)).close()
    await (await connect(ws_server)).close()
    # A closed socket frees its place.
    await first.close()
    await wait_for_count(ws_server, fan, 1)
    again = await connect(ws_server, fan.token)
    await assert_alive(again)
    await again.close()
    await second.close()
    await wait_for_count(ws_server, fan, 0)


async def test_a_legacy_socket_over_the_cap_gets_a_connection_error_and_4429(ws_server, users):
    fan = await users.user("fan")
    held = [await connect(ws_server, fan.token) for _ in range(SOCKETS_PER_USER)]
    ws = await websockets.connect(ws_url(ws_server), subprotocols=[LEGACY])
    auth = {"authorization": f"Bearer {fan.token}"}
    await ws.send(json.dumps({"type": "connection_init", "payload": auth}))
    assert await receive(ws) == {
        "type": "connection_error",
        "payload": {"message": "Too many connections", "code": "RATE_LIMITED"},
    }
    assert await closed(ws) == (4429, "Too many connections")
    for socket in held:
        await socket.close()


async def test_the_cap_holds_across_api_processes(ws_server, users, settings):
    # A second app (another API process) on the same Redis: one count for both.
    fan = await users.user("fan")
    async with serve(limited(settings)) as other_process:
        here = await connect(ws_server, fan.token)
        there = await connect(other_process, fan.token)
        for server in (ws_server, other_process):
            ws = await websockets.connect(ws_url(server), subprotocols=[TRANSPORT])
            auth = {"authorization": f"Bearer {fan.token}"}
            await ws.send(json.dumps({"type": "connection_init", "payload": auth}))
            assert await closed(ws) == (4429, "Too many connections")
        await here.close()
        await there.close()
        await wait_for_count(ws_server, fan, 0)


async def test_a_dead_processs_leases_expire(ws_server):
    # Leases claimed and never renewed nor released, as by a process that was killed.
    limiter = ConnectionLimiter(ws_server.redis, cap=2, lease_seconds=0.5)
    assert await limiter.claim(limiter.lease(42))
    assert await limiter.claim(limiter.lease(42))
    assert not await limiter.claim(limiter.lease(42))
    # The key expires with its last lease: nothing is left behind for a user who is gone.
    assert 0 < await ws_server.redis.pttl(connections_key(42)) <= 500
    async with asyncio.timeout(DEADLINE):
        while not await limiter.claim(limiter.lease(42)):  # noqa: ASYNC110  # state in Redis
            await asyncio.sleep(0.05)


async def test_a_live_lease_is_renewed(ws_server):
    limiter = ConnectionLimiter(ws_server.redis, cap=1, lease_seconds=0.3)
    lease = limiter.lease(7)
    assert await limiter.claim(lease)
    claimed_until = await ws_server.redis.zscore(lease.key, lease.connection_id)
    keeper = asyncio.create_task(lease.keep())
    try:
        async with asyncio.timeout(DEADLINE):
            # Until `keep` has pushed the lease's expiry further.
            while await ws_server.redis.zscore(lease.key, lease.connection_id) == claimed_until:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    finally:
        keeper.cancel()
        await lease.release()
    assert await limiter.claim(limiter.lease(7))


async def refused_over_the_cap(server: Server, token: str | None) -> None:
    ws = await websockets.connect(ws_url(server), subprotocols=[TRANSPORT])
    payload = {"authorization": f"Bearer {token}"} if token else {}
    await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
    assert await closed(ws) == (4429, "Too many connections")


async def test_sockets_opened_at_once_are_admitted_up_to_the_cap(ws_server, users):
    # The claim is one Redis script: of four sockets opening together, exactly two pass.
    fan = await users.user("fan")

    async def open_one() -> tuple[websockets.ClientConnection, dict[str, Any] | None]:
        ws = await websockets.connect(ws_url(ws_server), subprotocols=[TRANSPORT])
        auth = {"authorization": f"Bearer {fan.token}"}
        await ws.send(json.dumps({"type": "connection_init", "payload": auth}))
        try:
            return ws, await receive(ws)
        except websockets.ConnectionClosed:
            return ws, None

    opened = await asyncio.gather(*(open_one() for _ in range(4)))
    acked = [ws for ws, message in opened if message and message["type"] == "connection_ack"]
    refused = [ws for ws, message in opened if message is None]
    assert (len(acked), len(refused)) == (SOCKETS_PER_USER, 2)
    assert {(ws.close_code, ws.close_reason) for ws in refused} == {(4429, "Too many connections")}
    for ws in acked:
        await ws.close()
    await wait_for_count(ws_server, fan, 0)


# -- Operations freeing their place ------------------------------------------------------


async def first_error(ws: websockets.ClientConnection) -> dict[str, Any]:
    """The next `error` message (messages of other operations before it are skipped)."""
    while (message := await receive(ws))["type"] != "error":
        pass
    return message


async def test_an_operation_the_server_completed_frees_its_place(ws_server, users):
    fan = await users.user("fan")
    ws = await connect(ws_server, fan.token)
    for _ in range(OPERATIONS_PER_SOCKET):  # as many queries as places, each run to its end
        await assert_alive(ws)
    for n in range(OPERATIONS_PER_SOCKET):
        await ws.send(
            json.dumps({"id": f"s{n}", "type": "subscribe", "payload": {"query": FEED_ITEM}})
        )
    await ws.send(json.dumps({"id": "over", "type": "subscribe", "payload": {"query": FEED_ITEM}}))
    # Every subscription had a place; only the one over the cap is refused.
    error = await first_error(ws)
    assert error["id"] == "over"
    assert error["payload"][0]["extensions"]["code"] == "RATE_LIMITED"
    await ws.close()


async def test_a_legacy_stop_frees_a_place(ws_server, users):
    fan = await users.user("fan")
    ws = await connect(ws_server, fan.token, LEGACY)
    for n in range(OPERATIONS_PER_SOCKET):
        await ws.send(json.dumps({"id": f"s{n}", "type": "start", "payload": {"query": FEED_ITEM}}))
    await wait_for_subscribers(ws_server, user_channel(fan.pk))
    await ws.send(json.dumps({"id": "s0", "type": "stop"}))
    await ws.send(json.dumps({"id": "new", "type": "start", "payload": {"query": FEED_ITEM}}))
    await ws.send(json.dumps({"id": "over", "type": "start", "payload": {"query": FEED_ITEM}}))
    error = await first_error(ws)
    assert error["id"] == "over"
    assert error["payload"]["extensions"]["code"] == "RATE_LIMITED"
    await ws.close()


# -- Message size and the transport ---------------------------------------------------------


async def test_a_message_over_the_request_body_limit_closes_with_1009(ws_server):
    ws = await connect(ws_server)
    query = "{ __typename }" + " " * ws_server.settings.max_request_body_bytes
    await ws.send(json.dumps({"id": "big", "type": "subscribe", "payload": {"query": query}}))
    code, _ = await closed(ws)
    assert code == 1009  # Message Too Big


def test_run_py_bounds_websocket_messages_as_request_bodies() -> None:
    limit = Settings().max_request_body_bytes
    [single] = api_commands("127.0.0.1", 8000, 1)
    assert uvicorn_main.make_context("uvicorn", single[3:]).params["ws_max_size"] == limit
    several = api_commands("127.0.0.1", 8000, 2, ws_max_size=4096)
    assert all(argv[argv.index("--ws-max-size") + 1] == "4096" for argv in several)


async def test_closing_a_closed_socket_is_a_no_op() -> None:
    # A limit's close racing the handler's own (or the client's) must not raise.
    sent: list[MutableMapping[str, Any]] = []

    async def receive_asgi() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send_asgi(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    socket = WebSocket({"type": "websocket", "path": "/graphql"}, receive_asgi, send_asgi)
    await socket.accept()
    adapter = TextFrameWebSocketAdapter(None, socket, socket)  # type: ignore[arg-type]
    await adapter.close(4429, "Too many connections")
    assert socket.application_state == WebSocketState.DISCONNECTED
    await adapter.close(4400, "again")
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"]


# -- Multipart HTTP: a document refused before it runs is an error part ------------------

MULTIPART = {"Accept": 'multipart/mixed;subscriptionSpec="1.0", application/json'}
REFUSED_OVER_MULTIPART = {
    # Each broke the chunked body off with an ASGI exception (the parser cache raised).
    "a subscription with a syntax error": ("subscription { feedItemAdded { id ", "INVALID_INPUT"),
    "a subscription over the token limit": (
        "subscription { " + "__typename " * 3000 + "}",
        "QUERY_TOO_COMPLEX",
    ),
    "a query with a syntax error": ("{ viewer { id ", "INVALID_INPUT"),
    "a query over the token limit": ("{ " + "__typename " * 3000 + "}", "QUERY_TOO_COMPLEX"),
}


@pytest.mark.parametrize(
    ("document", "code"), REFUSED_OVER_MULTIPART.values(), ids=REFUSED_OVER_MULTIPART.keys()
)
async def test_multipart_http_refused_document_gets_an_error_part(ws_server, users, document, code):
    fan = await users.user("fan")
    headers = {**MULTIPART, "Authorization": f"Bearer {fan.token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(ws_server.base_url + "/graphql", json={"query": document}, headers=headers) as r,
    ):
        assert r.status == 200
        async with asyncio.timeout(DEADLINE):
            parts = read_parts(r)
            while (part := (await anext(parts))[1]) == {}:  # heartbeats
                pass
            # The rest of the body, to its closing delimiter (it broke off before).
            rest = await r.content.read()
    assert rest.endswith(b"--graphql--\r\n")
    assert [e["extensions"]["code"] for e in part["payload"]["errors"]] == [code]
    assert "data" not in part["payload"] or part["payload"]["data"] is None


# -- Persisted queries over WebSocket ------------------------------------------------------


def persisted(document: str, digest: str | None = None) -> dict[str, Any]:
    digest = digest or hashlib.sha256(document.encode()).hexdigest()
    return {"persistedQuery": {"version": 1, "sha256Hash": digest}}


async def test_a_persisted_query_is_verified_and_resolved_over_graphql_transport_ws(ws_server):
    ws = await connect(ws_server)
    document = "query Persisted { __typename }"
    # A hash that does not match the text is refused, as over HTTP (it ran the text).
    payload = {"query": document, "extensions": persisted(document, "ab" * 32)}
    await ws.send(json.dumps({"id": "wrong", "type": "subscribe", "payload": payload}))
    error = await receive(ws)
    assert (error["id"], error["type"]) == ("wrong", "error")
    assert error["payload"] == [
        {"message": "provided sha does not match query", "extensions": {"code": "INVALID_INPUT"}}
    ]
    # A hash alone: not known yet, then (once sent with its text) run.
    only_hash = {"query": "", "extensions": persisted(document)}
    await ws.send(json.dumps({"id": "h1", "type": "subscribe", "payload": only_hash}))
    error = await receive(ws)
    assert (error["id"], error["type"]) == ("h1", "error")
    assert error["payload"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    with_text = {"query": document, "extensions": persisted(document)}
    await ws.send(json.dumps({"id": "t", "type": "subscribe", "payload": with_text}))
    assert (await receive(ws))["payload"] == {"data": {"__typename": "Query"}}
    assert await receive(ws) == {"id": "t", "type": "complete"}
    await ws.send(json.dumps({"id": "h2", "type": "subscribe", "payload": only_hash}))
    assert await receive(ws) == {
        "id": "h2",
        "type": "next",
        "payload": {"data": {"__typename": "Query"}},
    }
    await ws.close()


async def test_a_persisted_subscription_over_the_legacy_protocol(ws_server, users):
    fan = await users.user("fan")
    ws = await connect(ws_server, fan.token, LEGACY)
    payload = {"query": FEED_ITEM, "extensions": persisted(FEED_ITEM, "cd" * 32)}
    await ws.send(json.dumps({"id": "wrong", "type": "start", "payload": payload}))
    error = await receive(ws)
    assert (error["id"], error["type"]) == ("wrong", "error")
    assert error["payload"]["extensions"]["code"] == "INVALID_INPUT"
    # Registered with its text, then run by its hash alone.
    with_text = {"query": FEED_ITEM, "extensions": persisted(FEED_ITEM)}
    await ws.send(json.dumps({"id": "t", "type": "start", "payload": with_text}))
    await wait_for_subscribers(ws_server, user_channel(fan.pk))
    await ws.send(json.dumps({"id": "t", "type": "stop"}))
    assert await receive(ws) == {"type": "complete", "id": "t"}
    only_hash = {"query": "", "extensions": persisted(FEED_ITEM)}
    await ws.send(json.dumps({"id": "h", "type": "start", "payload": only_hash}))
    await wait_for_subscribers(ws_server, user_channel(fan.pk))
    await ws.send(json.dumps({"id": "h", "type": "stop"}))
    # Stopped as a running subscription (a refused one would have sent an `error`).
    assert await receive(ws) == {"type": "complete", "id": "h"}
    await ws.close()


# -- Leases kept while a socket lives, and given back when it closes -----------------------

LEASE_SECONDS = 0.6  # renewed every 0.2 s
ANONYMOUS_PER_ADDRESS = 2


def short_leases(settings: Settings) -> Settings:
    # Database 9: renewals of this server's sockets never count on `ws_server` (8).
    return replace(
        limited(settings),
        redis_url=with_redis_db(settings.redis_url, 9),
        ws_connection_lease_seconds=LEASE_SECONDS,
        ws_max_anonymous_connections_per_address=ANONYMOUS_PER_ADDRESS,
    )


@pytest.fixture(scope="module")
async def lease_server_instance(settings: Settings) -> AsyncIterator[Server]:
    async with serve(short_leases(settings)) as running:
        yield running


@pytest.fixture
async def lease_server(lease_server_instance: Server) -> Server:
    await clean_state(lease_server_instance)
    return lease_server_instance


def keepers(key: str) -> list[asyncio.Task[Any]]:
    """The tasks keeping leases of `key` (the server runs in this event loop), named
    `ws-lease <key> <member>`."""
    return [task for task in asyncio.all_tasks() if task.get_name().startswith(f"ws-lease {key} ")]


async def renewals(redis: Redis, key: str, member: str, count: int) -> None:
    """Until `member`'s lease has been renewed `count` times."""
    seen = {await redis.zscore(key, member)}
    async with asyncio.timeout(DEADLINE):
        while len(seen) <= count:
            await asyncio.sleep(0.02)
            seen.add(await redis.zscore(key, member))
    assert None not in seen


async def test_open_sockets_keep_their_places_across_many_leases(lease_server):
    fan = await Factory(engine=lease_server.engine, settings=lease_server.settings).user("fan")
    key = connections_key(fan.pk)
    held = [await connect(lease_server, fan.token), await connect(lease_server, fan.token, LEGACY)]
    members = [m.decode() for m in await lease_server.redis.zrange(key, 0, -1)]
    assert len(members) == SOCKETS_PER_USER
    tasks = [task for task in keepers(key) if task.get_name().split()[-1] in members]
    assert len([task for task in tasks if not task.done()]) == SOCKETS_PER_USER
    # Ten renewals of each: over three lease periods, so without them both would be gone.
    for member in members:
        await renewals(lease_server.redis, key, member, 10)
    await wait_for_count(lease_server, fan, SOCKETS_PER_USER)
    await refused_over_the_cap(lease_server, fan.token)
    for ws in held:
        await ws.close()
    await wait_for_count(lease_server, fan, 0)
    # Closed: their keepers are done, and no late renewal puts them back. A socket opened
    # now is renewed twice meanwhile (its keeper runs on the same schedule).
    async with asyncio.timeout(DEADLINE):
        await asyncio.wait(tasks)
    witness = await connect(lease_server, fan.token)
    [witness_member] = [m.decode() for m in await lease_server.redis.zrange(key, 0, -1)]
    await renewals(lease_server.redis, key, witness_member, 2)
    assert [m.decode() for m in await lease_server.redis.zrange(key, 0, -1)] == [witness_member]
    await witness.close()


async def test_anonymous_sockets_are_capped_per_address(lease_server):
    fan = await Factory(engine=lease_server.engine, settings=lease_server.settings).user("fan")
    held = [await connect(lease_server) for _ in range(ANONYMOUS_PER_ADDRESS)]
    await refused_over_the_cap(lease_server, None)
    # A logged-in socket from the same address is counted as its user's.
    mine = await connect(lease_server, fan.token)
    await assert_alive(mine)
    await mine.close()
    subject = "addr:127.0.0.1"
    await wait_for_count(lease_server, subject, ANONYMOUS_PER_ADDRESS)
    await held[0].close()
    await wait_for_count(lease_server, subject, ANONYMOUS_PER_ADDRESS - 1)
    again = await connect(lease_server)
    await assert_alive(again)
    for ws in (again, *held[1:]):
        await ws.close()
    await wait_for_count(lease_server, subject, 0)


def test_an_anonymous_socket_is_counted_by_its_address() -> None:
    class Scoped:
        def __init__(self, host: str) -> None:
            self.scope = {"client": (host, 5000)}

    class WithRequest:
        def __init__(self, host: str) -> None:
            self.request = Scoped(host)

    assert address_subject(WithRequest("192.0.2.1")) == "addr:192.0.2.1"  # type: ignore[arg-type]
    # An IPv6 client holds its whole /64: counted as one address.
    v6 = address_subject(WithRequest("2001:db8:1:2:3:4:5:6"))  # type: ignore[arg-type]
    assert v6 == "addr:2001:db8:1:2::/64"


async def test_a_socket_opened_while_redis_is_down_is_counted_once_it_is_back(
    settings,
    workdir,  # noqa: F811  # the fixture imported above
    caplog,
):
    caplog.set_level(logging.WARNING, logger="instagraph.redis")
    with private_redis(workdir / "redis") as redis_server:
        outage = replace(
            short_leases(settings),
            redis_url=redis_server.url,
            redis_timeout_seconds=0.5,
            redis_retry_after_seconds=0.5,
        )
        async with serve(outage) as app:
            await clean_state(app)
            fan = await Factory(engine=app.engine, settings=app.settings).user("fan")
            direct = Redis.from_url(redis_server.url)  # not the app's breaker
            try:
                os.kill(redis_server.pid or 0, signal.SIGKILL)
                async with asyncio.timeout(DEADLINE):
                    while redis_server.alive():  # noqa: ASYNC110  # another process
                        await asyncio.sleep(0.02)
                # Redis down: admitted (the cap is no permission), one warning for both.
                uncounted = [await connect(app, fan.token), await connect(app, fan.token)]
                await assert_alive(uncounted[0])
                warnings = [r for r in caplog.records if "admitted uncounted" in r.getMessage()]
                assert len(warnings) <= 1
                redis_server.restart()
                # Counted again by their keepers' first renewal that Redis answers...
                await wait_for_count(app, fan, SOCKETS_PER_USER, redis=direct)
                # ...so the cap holds for the next one.
                await refused_over_the_cap(app, fan.token)
                for ws in uncounted:
                    await ws.close()
                await wait_for_count(app, fan, 0, redis=direct)
            finally:
                await direct.aclose()


# -- The reference graphql-ws client meets the limits ----------------------------------


@pytest.fixture
def reference_client(request: pytest.FixtureRequest) -> Path:
    """tests/node, ready to run (the `node_client` fixture of the clients' tests)."""
    path: Path = request.getfixturevalue("node_client")
    return path


async def run_node_client(node_dir: Path, *args: str) -> tuple[int, list[dict[str, Any]]]:
    process = await asyncio.create_subprocess_exec(
        "node",
        str(node_dir / "subscribe.mjs"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    try:
        async with asyncio.timeout(DEADLINE):
            events = [event async for event in node_events(process)]
            return await process.wait(), events
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_reference_client_is_refused_over_the_connection_cap(
    ws_server, users, reference_client
):
    fan = await users.user("fan")
    held = [await connect(ws_server, fan.token) for _ in range(SOCKETS_PER_USER)]
    code, events = await run_node_client(reference_client, ws_url(ws_server), fan.token, "1")
    assert code == 1
    assert [e for e in events if e["event"] == "error"] == [
        {"event": "error", "error": 4429, "reason": "Too many connections"}
    ]
    assert not [e for e in events if e["event"] == "connected"]
    for socket in held:
        await socket.close()


async def test_reference_client_gets_a_syntax_error_as_graphql_errors(
    ws_server, users, reference_client
):
    fan = await users.user("fan")
    code, events = await run_node_client(
        reference_client, ws_url(ws_server), fan.token, "1", "subscription { feedItemAdded { id "
    )
    assert code == 1
    [error] = [e for e in events if e["event"] == "error"]
    errors = json.loads(error["error"])
    assert [e["extensions"]["code"] for e in errors] == ["INVALID_INPUT"]
    assert errors[0]["message"].startswith("Syntax Error")
