"""Every input answered cleanly (issue 10): hostile bodies, headers, text, tokens and
documents get a 4xx or a GraphQL error with a documented `extensions.code`, on both
executors (the compiled fast path and Strawberry's view), over a connection that stays
open, the same in production (docs/input-hardening.md)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import jwt
import orjson
import pytest
import websockets
from cross_web import HTTPException
from websockets.typing import Subprotocol

from infra.embedded import free_port
from infra.ids import to_global_id
from infra.security import TOKEN_ALGORITHM, user_id_from_token
from run import WEBSOCKETS_HANDSHAKE_LIMITS, api_commands
from schema.graphql_http import (
    GRAPHQL_PATH,
    GRAPHQL_RESPONSE,
    JSON,
    MAX_JSON_DEPTH,
    ORJSON_MAX_DEPTH,
    TOO_DEEP_JSON,
    parse_request_json,
)
from schema.input_strings import TOO_DEEP, UNSAFE_TEXT, unsafe_variables_error
from schema.request_limits import RequestLimitsMiddleware
from tests.conftest import serve
from tests.test_fast_path import Served
from tests.test_graphql_over_http import graphql_view, no_error_logged

RESPONSE_JSON = "application/graphql-response+json, application/json;q=0.9"
TYPENAME = b'{"query": "{ __typename }"}'
MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent


# -- a raw HTTP/1.1 connection, to see what the server really does with the socket -------


class RawConnection:
    """One keep-alive TCP connection: requests written byte for byte, answers read by
    Content-Length (every answer of /graphql has one)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        send_body: bool = True,
    ) -> tuple[int, dict[str, str], bytes]:
        head = {"Host": "test", "Content-Type": JSON, **(headers or {})}
        if method == "POST" and "Transfer-Encoding" not in head:
            head.setdefault("Content-Length", str(len(body)))
        lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items())]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if send_body:
            self.writer.write(body)
        await self.writer.drain()
        return await self.response()

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        status_line = await self.reader.readline()
        assert status_line, "the server closed the connection"
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body

    async def closed_by_server(self) -> bool:
        async with asyncio.timeout(10):
            return await self.reader.read(1) == b""


@asynccontextmanager
async def raw_connection(base_url: str) -> AsyncIterator[RawConnection]:
    address = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        yield RawConnection(reader, writer)
    finally:
        writer.close()


@contextmanager
def executor(server: Any, name: str) -> Iterator[None]:
    """Run the block with the compiled fast path on ("compiled") or off ("strawberry")."""
    view = graphql_view(server)
    fast_path = view.fast_path
    if name == "strawberry":
        view.fast_path = None
    try:
        yield
    finally:
        view.fast_path = fast_path


def error_of(body: bytes | dict[str, Any]) -> dict[str, Any]:
    """The only error of a GraphQL response without data."""
    payload = json.loads(body) if isinstance(body, bytes) else body
    assert payload.get("data") is None, payload
    assert len(payload["errors"]) == 1, payload
    error: dict[str, Any] = payload["errors"][0]
    return error


# -- bodies ------------------------------------------------------------------------------

HOSTILE_BODIES = {
    "not JSON": b'{ "query": "{ __typename }"',
    "invalid UTF-8 in a string": b'{"query": "{ __typename }", "operationName": "\xff\xfe"}',
    "a 5,000-digit number": b'{"query": "{ __typename }", "variables": {"n": '
    + b"9" * 5000
    + b"}}",
    "JSON nested 100,000 deep": b'{"query": "{ __typename }", "variables": {"v": '
    + b"[" * 100_000
    + b"]" * 100_000
    + b"}}",
    # Within orjson's 1,024 levels, beyond MAX_JSON_DEPTH: refused at the body check too.
    "variables nested 1,001 deep": b'{"query": "{ __typename }", "variables": {"v": '
    + b"[" * 1_001
    + b"]" * 1_001
    + b"}}",
    "extensions nested 1,001 deep": b'{"query": "{ __typename }", "extensions": {"x": '
    + b"[" * 1_001
    + b"]" * 1_001
    + b"}}",
    "NaN": b'{"query": "{ __typename }", "variables": {"n": NaN}}',
    "an unpaired surrogate escape": b'{"query": "{ __typename }", "variables": {"s": "\\ud800"}}',
    "null": b"null",
    "a number": b"123",
    "query a number": b'{"query": 5}',
    "query an object": b'{"query": {"a": 1}}',
    "variables a list": b'{"query": "{ __typename }", "variables": [1]}',
    "variables a string": b'{"query": "{ __typename }", "variables": "{}"}',
    "operationName a number": b'{"query": "{ __typename }", "operationName": 5}',
    "operationName a list": b'{"query": "{ __typename }", "operationName": ["a"]}',
    "extensions a string": b'{"query": "{ __typename }", "extensions": "x"}',
    "documentId a number": b'{"documentId": 5}',
}


@pytest.mark.parametrize("path", ["compiled", "strawberry"])
async def test_hostile_bodies_are_400_graphql_errors_and_the_connection_stays_open(
    server, caplog, path
):
    with caplog.at_level(logging.WARNING), executor(server, path):
        async with raw_connection(server.base_url) as connection:
            for accept, media_type in ((RESPONSE_JSON, GRAPHQL_RESPONSE), ("*/*", JSON)):
                for name, body in HOSTILE_BODIES.items():
                    status, headers, answer = await connection.request(
                        "POST", "/graphql", body, {"Accept": accept}
                    )
                    assert status == 400, (name, answer)
                    assert headers["content-type"].startswith(media_type), name
                    assert "connection" not in headers or headers["connection"] != "close"
                    error = error_of(answer)
                    assert error["extensions"] == {"code": "INVALID_INPUT"}, name
                    assert "Traceback" not in error["message"]
                    if "nested" in name:
                        assert error["message"] == TOO_DEEP_JSON, name
            # The same connection still serves a request.
            status, _, answer = await connection.request("POST", "/graphql", TYPENAME)
            assert (status, json.loads(answer)["data"]) == (200, {"__typename": "Query"})
    no_error_logged(caplog)


def test_json_nesting_is_bounded_anywhere_and_cheaply():
    """`parse_request_json` relies on orjson's own depth limit (an upgrade that moves it
    fails here), and reads a long body exactly as orjson does."""
    orjson.loads(b"[" * ORJSON_MAX_DEPTH + b"]" * ORJSON_MAX_DEPTH)
    with pytest.raises(orjson.JSONDecodeError, match="depth"):
        orjson.loads(b"[" * (ORJSON_MAX_DEPTH + 1) + b"]" * (ORJSON_MAX_DEPTH + 1))

    def deep(levels: int) -> bytes:
        return b'{"query": "{ __typename }", "extensions": {"x": %s}}' % (
            b"[" * levels + b"]" * levels
        )

    assert parse_request_json(deep(MAX_JSON_DEPTH - 2))["query"] == "{ __typename }"
    for raw in (deep(MAX_JSON_DEPTH - 1), deep(MAX_JSON_DEPTH - 1).decode(), deep(5000)):
        with pytest.raises(HTTPException) as refused:
            parse_request_json(raw)
        assert (refused.value.status_code, refused.value.reason) == (400, TOO_DEEP_JSON)
    # Long bodies (parsed inside extra arrays) give what orjson gives, errors included.
    pad = b" " * (4 * MAX_JSON_DEPTH)
    long = b'{"query": "{ __typename }", "variables": {"s": "%s"}}' % (b"x" * 5000)
    assert parse_request_json(long) == orjson.loads(long)
    for broken in (b"1], [2" + pad, b'{"a": 1' + pad, b"[1] [2]" + pad, pad + b"\xff"):
        with pytest.raises(HTTPException) as refused:
            parse_request_json(broken)
        assert refused.value.status_code == 400
        assert refused.value.reason != TOO_DEEP_JSON, broken[:10]


@pytest.mark.parametrize("path", ["compiled", "strawberry"])
async def test_hostile_get_parameters_are_400(server, http, caplog, path):
    query = "query ($n: Boolean!) { __typename @include(if: $n) }"
    with caplog.at_level(logging.WARNING), executor(server, path):
        for _ in range(2):  # the second one would run compiled
            for params in (
                {"query": query, "variables": "9" * 5000},
                {"query": query, "variables": '{"n": ' + "9" * 5000 + "}"},
                {"query": query, "variables": "[" * 5000 + "]" * 5000},
                {"query": query, "variables": "[1]"},
                {"query": query, "variables": '"x"'},
                {"query": query, "variables": '{"s": "\\ud800"}'},
                {"query": query, "extensions": "5"},
            ):
                response = await http.get("/graphql", params=params)
                assert response.status_code == 400, (params, response.text)
                assert error_of(response.json())["extensions"]["code"] == "INVALID_INPUT"
            ok = await http.get("/graphql", params={"query": query, "variables": '{"n": true}'})
            assert ok.json()["data"] == {"__typename": "Query"}
    no_error_logged(caplog)


async def test_a_body_declared_above_the_limit_is_413_unread(server):
    async with raw_connection(server.base_url) as connection:
        # 50 MB announced, not one byte sent: the answer comes at once.
        status, headers, answer = await connection.request(
            "POST", "/graphql", headers={"Content-Length": str(50 * MiB)}, send_body=False
        )
        assert status == 413
        assert error_of(answer)["extensions"] == {"code": "TOO_LARGE"}
        # The server does not read 50 MB it refused: it closes this connection.
        assert headers["connection"] == "close"
        assert await connection.closed_by_server()


async def test_a_chunked_body_above_the_limit_is_413_and_one_within_it_runs(server, http):
    limit = server.settings.max_request_body_bytes
    assert limit == MiB  # the default
    chunk = b"x" * 64 * 1024
    for accept, media_type in ((RESPONSE_JSON, GRAPHQL_RESPONSE), ("application/json", JSON)):
        async with raw_connection(server.base_url) as connection:
            head = {"Transfer-Encoding": "chunked", "Accept": accept}
            # No length announced: the server reads until the limit, then answers.
            status, headers, answer = await connection.request(
                "POST",
                "/graphql",
                b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(17)),
                head,
            )
            assert status == 413
            assert headers["content-type"].startswith(media_type)
            assert headers["connection"] == "close"
            assert error_of(answer)["extensions"] == {"code": "TOO_LARGE"}
    # Just under the limit: read whole and run, on the same client.
    body = b'{"query": "{ __typename }", "pad": "' + b"x" * (limit - 64) + b'"}'
    assert len(body) <= limit
    ok = await http.post("/graphql", content=body, headers={"content-type": JSON})
    assert ok.json()["data"] == {"__typename": "Query"}


async def test_an_oversized_header_is_431_and_the_websocket_refuses_it(server, factory):
    user = await factory.user("header")
    big = "Bearer " + user.token + "x" * MiB
    async with raw_connection(server.base_url) as connection:
        for headers in ({"Authorization": big}, {"X-Anything": "y" * 9000}):
            status, _, answer = await connection.request(
                "GET", "/graphql?" + urlencode({"query": "{ __typename }"}), headers=headers
            )
            assert status == 431
            assert error_of(answer)["extensions"] == {"code": "TOO_LARGE"}
        # A GET without a body keeps its connection.
        status, _, answer = await connection.request(
            "GET",
            "/graphql?" + urlencode({"query": "{ viewer { username } }"}),
            headers={"Authorization": f"Bearer {user.token}"},
        )
        assert json.loads(answer)["data"] == {"viewer": {"username": "header"}}
    # Headers each within the limit but too many together; the WebSocket handshake is
    # refused before it is accepted.
    many = {f"X-Padding-{i}": "z" * 7000 for i in range(5)}
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(
            server.base_url.replace("http://", "ws://") + "/graphql",
            subprotocols=[Subprotocol("graphql-transport-ws")],
            additional_headers=many,
        ):
            pass
    assert refused.value.response.status_code == 403


@pytest.fixture(scope="module")
async def impatient(settings):
    """A server that waits half a second for a request's body."""
    async with serve(replace(settings, request_body_timeout_seconds=0.5)) as running:
        yield running


async def test_a_body_not_in_within_the_timeout_is_408_and_the_connection_closed(impatient):
    async def dribble(writer: asyncio.StreamWriter) -> None:
        """A byte every 0.1 s, as a slow client would, until the server cuts it off."""
        try:
            for _ in range(100):
                await asyncio.sleep(0.1)
                writer.write(b" ")
                await writer.drain()
        except (ConnectionError, RuntimeError):
            pass

    for head, first, keep_sending in (
        # Ten bytes of the hundred announced, then nothing.
        ({"Content-Length": "100"}, b'{"query": ', False),
        # A chunked body whose end never comes.
        ({"Transfer-Encoding": "chunked"}, b'a\r\n{"query": \r\n', False),
        # A byte at a time: each read is quick, the whole body is not.
        ({"Content-Length": "100"}, b'{"query": ', True),
    ):
        async with raw_connection(impatient.base_url) as connection:
            sender = asyncio.create_task(dribble(connection.writer)) if keep_sending else None
            status, headers, answer = await connection.request(
                "POST", "/graphql", first, {**head, "Accept": RESPONSE_JSON}
            )
            assert status == 408, (head, answer)
            assert headers["content-type"].startswith(GRAPHQL_RESPONSE)
            assert headers["connection"] == "close"
            error = error_of(answer)
            assert error["extensions"] == {"code": "INVALID_INPUT"}
            assert "not received within 0.5 seconds" in error["message"]
            assert await connection.closed_by_server()
            if sender is not None:
                sender.cancel()
    # A body that comes whole is not held up, on a connection that stays open.
    async with raw_connection(impatient.base_url) as connection:
        for _ in range(2):
            status, _, answer = await connection.request("POST", "/graphql", TYPENAME)
            assert (status, json.loads(answer)["data"]) == (200, {"__typename": "Query"})


def websocket_app() -> Any:
    """A WebSocket route behind the app's request limits, for
    `test_an_oversized_websocket_handshake_header_is_refused_at_once` to serve from a
    process of its own (`uvicorn --factory`)."""
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def accept(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    app = Starlette(routes=[WebSocketRoute(GRAPHQL_PATH, accept)])
    app.add_middleware(RequestLimitsMiddleware, max_body_bytes=MiB, max_header_bytes=8 * 1024)
    return app


async def test_an_oversized_websocket_handshake_header_is_refused_at_once():
    """uvicorn's websockets-sansio leaves a handshake beyond websockets' own limits (a
    line of 8 KiB) unanswered; with the limits run.py gives its API processes, the app's
    (`schema.request_limits`) answer it. The API as run.py starts it: its own process,
    httptools, the default WebSocket implementation."""
    port = free_port()
    [command] = api_commands(
        "127.0.0.1", port, 1, app="tests.test_input_hardening:websocket_app", factory=True
    )
    env = dict(os.environ)
    for name, value in WEBSOCKETS_HANDSHAKE_LIMITS.items():  # as run.py does
        env.setdefault(name, value)
    process = await asyncio.create_subprocess_exec(*command, env=env, cwd=ROOT)
    try:
        async with asyncio.timeout(60):
            while True:
                assert process.returncode is None, "the API process exited"
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.1)
                    continue
                writer.close()
                break
        url = f"ws://127.0.0.1:{port}{GRAPHQL_PATH}"
        async with websockets.connect(url, open_timeout=10) as ws:
            assert await ws.recv() == "hello"
        for headers in ({"X-Big": "y" * 9000}, {"Authorization": "Bearer " + "x" * MiB}):
            with pytest.raises(websockets.InvalidStatus) as refused:
                # open_timeout: before the limits were raised, this waited for it.
                async with websockets.connect(url, additional_headers=headers, open_timeout=10):
                    pass
            assert refused.value.response.status_code == 403
    finally:
        process.terminate()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


# -- text the database cannot hold ---------------------------------------------------------

NUL, SURROGATE = "a\x00b", "a\ud800b"
SIGN_UP = """mutation ($u: String!, $e: String!) {
  signUp(username: $u, email: $e, password: "long enough password") {
    token errors { code }
  }
}"""
UPDATE_PROFILE = """mutation ($d: String, $b: String) {
  updateProfile(displayName: $d, bio: $b) { user { id } errors { code } }
}"""
CREATE_POST = """mutation ($c: String, $k: String) {
  createPost(input: {caption: $c, idempotencyKey: $k,
                     media: [{contentType: "image/jpeg", byteSize: 1000}]}) {
    post { id } errors { code }
  }
}"""
SEARCH = "query ($q: String!) { searchUsers(query: $q) { id } }"
USER = "query ($q: String!) { user(username: $q) { id } }"
CASES: list[tuple[str, dict[str, str | None]]] = [
    (SIGN_UP, {"u": "{}", "e": "x@example.com"}),
    (SIGN_UP, {"u": "good_name", "e": "{}@example.com"}),
    (UPDATE_PROFILE, {"d": "{}", "b": None}),
    (UPDATE_PROFILE, {"d": None, "b": "{}"}),
    (CREATE_POST, {"c": "{}", "k": None}),
    (CREATE_POST, {"c": None, "k": "{}"}),
    (SEARCH, {"q": "{}"}),
    (USER, {"q": "{}"}),
]


def _literal(query: str, variables: dict[str, Any]) -> str:
    """The document with each variable written in as a literal (JSON's string escapes are
    GraphQL's: a NUL becomes `\\u0000`)."""
    body = query.split(") {", 1)[1]
    for name, value in variables.items():
        literal = "null" if value is None else json.dumps(value)
        body = body.replace(f"${name}", literal)
    return ("mutation {" if query.startswith("mutation") else "query {") + body


async def assert_refused_text(client: httpx.AsyncClient, token: str) -> None:
    for query, template in CASES:
        for bad in (NUL, SURROGATE):
            variables = {k: v.replace("{}", bad) if v else v for k, v in template.items()}
            literal = _literal(query, variables)
            sent: list[dict[str, Any]] = [{"query": query, "variables": variables}]
            if bad == NUL:  # a surrogate cannot be written as a GraphQL escape (a syntax error)
                sent.append({"query": literal})
            for request in sent:
                # json.dumps writes the surrogate as the escape `\ud800`, as a client would.
                response = await client.post(
                    "/graphql",
                    content=json.dumps(request).encode(),
                    headers={
                        "content-type": JSON,
                        "authorization": f"Bearer {token}",
                        "accept": RESPONSE_JSON,
                    },
                )
                assert response.status_code == 400, (request, response.text)
                error = error_of(response.json())
                assert error["extensions"]["code"] == "INVALID_INPUT", (request, error)
                assert "asyncpg" not in response.text and "INSERT" not in response.text


async def test_nul_and_unpaired_surrogates_are_invalid_input_everywhere(
    server, http, factory, caplog
):
    user = await factory.user("texter")
    with caplog.at_level(logging.WARNING):
        for path in ("strawberry", "compiled"):
            with executor(server, path):
                await assert_refused_text(http, user.token)
    no_error_logged(caplog)
    # Nothing reached the database.
    profile = await http.post(
        "/graphql",
        json={"query": "{ viewer { displayName bio postCount } }"},
        headers={"authorization": f"Bearer {user.token}"},
    )
    assert profile.json()["data"]["viewer"] == {"displayName": None, "bio": None, "postCount": 0}


async def test_unsafe_text_is_refused_over_the_websocket_too(server):
    """The WebSocket runs operations through the schema's `stream`, which checks them as
    `execute` does. (A lone surrogate's JSON escape is refused as unreadable JSON there,
    or as text here, whichever reads it first.)"""
    for message_id, payload in (
        ("1", {"query": SEARCH, "variables": {"q": NUL}}),
        ("2", {"query": '{ searchUsers(query: "a\\u0000b") { id } }'}),
        ("3", {"query": SEARCH, "variables": {"q": SURROGATE}}),
    ):
        async with websockets.connect(
            server.base_url.replace("http://", "ws://") + "/graphql",
            subprotocols=[Subprotocol("graphql-transport-ws")],
        ) as ws:
            await ws.send(json.dumps({"type": "connection_init"}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            await ws.send(json.dumps({"id": message_id, "type": "subscribe", "payload": payload}))
            try:
                answer = json.loads(await ws.recv())
            except websockets.ConnectionClosed as closed:
                assert message_id == "3" and closed.rcvd is not None
                assert closed.rcvd.code == 4400
                continue
            assert answer["type"] == "error", answer
            assert answer["id"] == message_id
            assert answer["payload"][0]["extensions"]["code"] == "INVALID_INPUT"
            assert UNSAFE_TEXT in answer["payload"][0]["message"]


def _nested(depth: int, leaf: Any = "x") -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def test_a_variable_nested_too_deep_is_refused_for_its_depth():
    error = unsafe_variables_error({"v": _nested(70)})
    assert error is not None
    assert TOO_DEEP in error.message and UNSAFE_TEXT not in error.message
    assert error.extensions == {"code": "INVALID_INPUT"}
    assert unsafe_variables_error({"v": _nested(60)}) is None
    text = unsafe_variables_error({"v": _nested(3, NUL)})
    assert text is not None and text.message == f"Variable '$v[0][0][0]': {UNSAFE_TEXT}."


@pytest.mark.parametrize("path", ["compiled", "strawberry"])
async def test_a_variable_nested_too_deep_is_invalid_input_over_http(server, http, path):
    with executor(server, path):
        for _ in range(2):  # the second one would run compiled
            response = await http.post(
                "/graphql",
                json={"query": SEARCH, "variables": {"q": "x", "v": _nested(70)}},
                headers={"accept": RESPONSE_JSON},
            )
            assert response.status_code == 400, response.text
            error = error_of(response.json())
            assert error["extensions"]["code"] == "INVALID_INPUT"
            assert TOO_DEEP in error["message"] and UNSAFE_TEXT not in error["message"]


# -- tokens and IDs -------------------------------------------------------------------------

MUTATIONS = {
    "createPost": (
        'mutation { createPost(input: {media: [{contentType: "image/jpeg", byteSize: 1000}]}) '
        "{ errors { code } } }"
    ),
    "follow": 'mutation { follow(userId: "%(target)s") { errors { code } } }',
    "block": 'mutation { block(userId: "%(target)s") { errors { code } } }',
    "unfollow": 'mutation { unfollow(userId: "%(target)s") { errors { code } } }',
    "updateProfile": 'mutation { updateProfile(bio: "hi") { errors { code } } }',
    "likePost": 'mutation { likePost(postId: "%(post)s") { errors { code } } }',
    "addComment": 'mutation { addComment(postId: "%(post)s", text: "hi") { errors { code } } }',
    "createStory": (
        'mutation { createStory(media: {contentType: "image/jpeg", byteSize: 1000}) '
        "{ errors { code } } }"
    ),
}


# Idempotent removals: with no account there is nothing to remove, and nothing written.
CHANGE_NOTHING = {"unfollow"}


def forged(settings: Any, subject: str) -> str:
    """A correctly signed token naming any subject."""
    claims = {"sub": subject, "iat": 0, "exp": 4_000_000_000, "typ": "access"}
    return jwt.encode(claims, settings.secret_key, algorithm=TOKEN_ALGORITHM)


def test_token_subjects_out_of_range_are_no_credentials(settings):
    assert user_id_from_token(forged(settings, "42"), secret=settings.secret_key) == 42
    for subject in (
        "99999999999999999999",
        str(2**63),
        "-1",
        "0",
        "007",
        " 7",
        "\uff11\uff12",
        "1_2",
    ):
        assert user_id_from_token(forged(settings, subject), secret=settings.secret_key) is None
    assert user_id_from_token(forged(settings, str(2**63 - 1)), secret=settings.secret_key)


async def test_a_valid_token_for_no_account_is_unauthenticated_for_every_mutation(
    server, http, factory, caplog
):
    target = await factory.user("target")
    post_id = await factory.ready_post(target)
    ids = {
        "target": target.id,
        "post": to_global_id("Post", post_id),
    }
    with caplog.at_level(logging.WARNING):
        for subject in ("424242", "99999999999999999999", str(2**63 - 1)):
            token = forged(server.settings, subject)
            for name, template in MUTATIONS.items():
                response = await http.post(
                    "/graphql",
                    json={"query": template % ids},
                    headers={"authorization": f"Bearer {token}"},
                )
                body = response.json()
                assert response.status_code == 200, body
                assert "asyncpg" not in response.text
                if name in CHANGE_NOTHING and "errors" not in body:
                    continue  # an in-range subject: nothing to remove, nothing written
                assert body["data"] is None, (name, body)
                codes = [e["extensions"]["code"] for e in body["errors"]]
                assert codes == ["UNAUTHENTICATED"], (name, subject, body)
    no_error_logged(caplog)
    # The feed still costs the database nothing for a token naming no one: it is empty.
    token = forged(server.settings, "424242")
    feed = await http.post(
        "/graphql",
        json={"query": "{ feed(first: 5) { edges { cursor } } }"},
        headers={"authorization": f"Bearer {token}"},
    )
    assert feed.json()["data"] == {"feed": {"edges": []}}


async def test_global_ids_out_of_range_are_not_found_or_invalid_input(server, http, factory):
    user = await factory.user("ider")
    auth = {"authorization": f"Bearer {user.token}"}
    for raw in (str(2**63), str(2**64), "9" * 5000, "-1", "\uff11\uff12"):
        global_id = base64.urlsafe_b64encode(f"User:{raw}".encode()).decode().rstrip("=")
        node = await http.post(
            "/graphql", json={"query": f'{{ node(id: "{global_id}") {{ id }} }}'}, headers=auth
        )
        body = node.json()
        assert node.status_code == 200
        assert body.get("data", {}) in (None, {"node": None}) or body["data"]["node"] is None
        for error in body.get("errors", []):
            assert error["extensions"]["code"] in ("INVALID_INPUT", "NOT_FOUND"), body
        follow = await http.post(
            "/graphql",
            json={"query": f'mutation {{ follow(userId: "{global_id}") {{ errors {{ code }} }} }}'},
            headers=auth,
        )
        payload = follow.json()
        assert payload["data"]["follow"]["errors"][0]["code"] in ("INVALID_INPUT", "NOT_FOUND")


# -- documents ------------------------------------------------------------------------------

TWO_OPERATIONS = "query A { __typename } query B { viewer { id } }"


@pytest.mark.parametrize("path", ["compiled", "strawberry"])
async def test_several_operations_and_no_name_is_a_request_error(server, http, path):
    with executor(server, path), Served() as served:
        for _ in range(3):  # compiled from the second time, when the fast path is on
            response = await http.post(
                "/graphql", json={"query": TWO_OPERATIONS}, headers={"accept": RESPONSE_JSON}
            )
            assert response.status_code == 400, response.text
            error = error_of(response.json())
            assert error["extensions"]["code"] == "INVALID_INPUT"
            assert "operation name" in error["message"]
            named = await http.post(
                "/graphql", json={"query": TWO_OPERATIONS, "operationName": "A"}
            )
            assert named.json()["data"] == {"__typename": "Query"}
    # Strawberry answered every refusal; the compiled path the named ones once compiled.
    assert served.compiled == (2 if path == "compiled" else 0)


# -- small ones -----------------------------------------------------------------------------


async def test_node_of_a_ready_media_has_the_url_post_media_has(server, http, factory):
    author = await factory.user("shooter")
    post_id = await factory.ready_post(author)
    auth = {"authorization": f"Bearer {author.token}"}
    post = await http.post(
        "/graphql",
        json={
            "query": "query ($id: ID!) { post(id: $id) { media { id url(size: THUMB) } } }",
            "variables": {"id": to_global_id("Post", post_id)},
        },
        headers=auth,
    )
    [media] = post.json()["data"]["post"]["media"]
    assert media["url"]
    node = await http.post(
        "/graphql",
        json={
            "query": "query ($id: ID!) { node(id: $id) { ... on Media { id url(size: THUMB) } } }",
            "variables": {"id": media["id"]},
        },
        headers=auth,
    )
    assert node.json()["data"] == {"node": media}


async def test_sign_up_does_not_say_whether_an_email_is_registered(server, gql, factory):
    await factory.user("owner")  # owner@example.com
    taken_email = await gql(SIGN_UP, u="newcomer", e="OWNER@example.com")
    [error] = taken_email["signUp"]["errors"]
    assert taken_email["signUp"]["token"] is None
    assert error["code"] == "CONFLICT"
    answer = await gql(
        """mutation { signUp(username: "newcomer", email: "owner@example.com",
                             password: "long enough password") {
            errors { field message code } } }"""
    )
    [error] = answer["signUp"]["errors"]
    assert error["field"] is None
    assert "email" not in error["message"].lower() and "registered" not in error["message"]
    # A username is a public handle (`user(username:)` says so anyway): named.
    taken_name = await gql(
        """mutation { signUp(username: "owner", email: "fresh@example.com",
                             password: "long enough password") {
            errors { field code } } }"""
    )
    assert taken_name["signUp"]["errors"] == [{"field": "username", "code": "CONFLICT"}]


# -- production ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def production(settings):
    async with serve(replace(settings, env="production", trusted_documents=None)) as running:
        yield running


async def test_production_answers_the_same_codes(production, caplog):
    from tests.conftest import clean_state

    await clean_state(production)
    async with httpx.AsyncClient(base_url=production.base_url, timeout=30) as client:
        for name in ("null", "a 5,000-digit number", "variables a list"):
            response = await client.post(
                "/graphql", content=HOSTILE_BODIES[name], headers={"content-type": JSON}
            )
            assert response.status_code == 400
            assert error_of(response.json())["extensions"] == {"code": "INVALID_INPUT"}
        big = await client.post(
            "/graphql",
            content=b" " * (2 * MiB),
            headers={"content-type": JSON},
        )
        assert big.status_code == 413
        text = await client.post("/graphql", json={"query": SEARCH, "variables": {"q": NUL}})
        assert error_of(text.json())["extensions"]["code"] == "INVALID_INPUT"
        nobody = await client.post(
            "/graphql",
            json={"query": MUTATIONS["updateProfile"]},
            headers={"authorization": f"Bearer {forged(production.settings, '424242')}"},
        )
        assert [e["extensions"]["code"] for e in nobody.json()["errors"]] == ["UNAUTHENTICATED"]
