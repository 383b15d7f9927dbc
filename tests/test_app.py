"""The server around the schema: health, limits, errors, production mode, WebSocket."""

from __future__ import annotations

import json
from dataclasses import replace

import httpx
import pytest
import websockets
from websockets.typing import Subprotocol

from tests.conftest import serve

DEEP = "query { viewer { " + "followers { edges { node { " * 5 + "id" + " } } }" * 5 + " } }"


async def test_healthz_and_readyz(http):
    assert (await http.get("/healthz")).text == "ok"
    ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["postgres"] == "ok" and ready.json()["redis"] == "ok"


async def test_metrics_count_requests_by_route(http):
    await http.get("/healthz")
    body = (await http.get("/metrics")).text
    assert 'instagraph_http_requests_total{method="GET",route="/healthz",status="200"}' in body
    assert "instagraph_http_request_duration_seconds_bucket" in body


async def test_request_id_is_echoed_or_generated(http):
    given = await http.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    generated = await http.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert generated.headers["x-request-id"] != "bad id with spaces"
    assert len(generated.headers["x-request-id"]) == 32


async def test_query_depth_aliases_and_tokens_are_limited(gql):
    deep = await gql.raw(DEEP)
    assert deep["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    aliases = "query { " + " ".join(f"a{i}: viewer {{ id }}" for i in range(16)) + " }"
    assert (await gql.raw(aliases))["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    tokens = "query { " + "viewer { id } " * 700 + "}"
    assert (await gql.raw(tokens))["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    # Within the limits the same shapes work.
    ok = "query { " + " ".join(f"a{i}: viewer {{ id }}" for i in range(15)) + " }"
    assert "errors" not in await gql.raw(ok)


async def test_bad_documents_and_variables_are_invalid_input(gql):
    syntax = await gql.raw("query { viewer { id ")
    assert syntax["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
    unknown = await gql.raw("query { nope }")
    assert unknown["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
    wrong_type = await gql.raw("query ($n: String!) { user(username: $n) { id } }", n=5)
    assert wrong_type["errors"][0]["extensions"]["code"] == "INVALID_INPUT"


async def test_development_serves_graphiql_and_introspection(http, gql):
    page = await http.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()
    data = await gql("{ __schema { queryType { name } } }")
    assert data["__schema"]["queryType"]["name"] == "Query"


@pytest.fixture(scope="module")
async def broken_production(settings):
    """A production server whose database does not exist and whose Redis is gone."""
    base, _, query = settings.database_url.partition("?")
    missing_db = base.rsplit("/", 1)[0] + "/no_such_database" + ("?" + query if query else "")
    broken = replace(
        settings, env="production", database_url=missing_db, redis_url="redis://127.0.0.1:1/0"
    )
    async with serve(broken) as running:
        yield running


async def test_production_hides_graphiql_introspection_and_suggestions(broken_production):
    async with httpx.AsyncClient(base_url=broken_production.base_url) as client:
        page = await client.get("/graphql", headers={"Accept": "text/html"})
        assert page.status_code != 200 or "graphiql" not in page.text.lower()
        intro = await client.post("/graphql", json={"query": "{ __schema { types { name } } }"})
        assert intro.json()["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
        typo = (await client.post("/graphql", json={"query": "{ viewr { id } }"})).json()
        assert "Did you mean" not in typo["errors"][0]["message"]


async def test_unexpected_errors_are_masked_in_production_with_a_request_id(broken_production):
    async with httpx.AsyncClient(base_url=broken_production.base_url) as client:
        response = await client.post(
            "/graphql",
            json={"query": '{ user(username: "xavier") { id } }'},
            headers={"X-Request-ID": "req-42"},
        )
    assert response.status_code == 200
    error = response.json()["errors"][0]
    assert error["message"] == "Unexpected error."
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "requestId": "req-42"}
    assert "Traceback" not in response.text and "asyncpg" not in response.text


async def test_readyz_is_503_when_dependencies_are_down(broken_production):
    async with httpx.AsyncClient(base_url=broken_production.base_url) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["ready"] is False


def _ws_url(server) -> str:
    return server.base_url.replace("http://", "ws://") + "/graphql"


async def test_graphql_over_websocket_with_token_in_connection_init(server, factory):
    user = await factory.user("wsuser")
    async with websockets.connect(
        _ws_url(server), subprotocols=[Subprotocol("graphql-transport-ws")]
    ) as ws:
        await ws.send(
            json.dumps(
                {"type": "connection_init", "payload": {"authorization": f"Bearer {user.token}"}}
            )
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(
            json.dumps(
                {"id": "1", "type": "subscribe", "payload": {"query": "{ viewer { username } }"}}
            )
        )
        message = json.loads(await ws.recv())
        assert message == {
            "id": "1",
            "type": "next",
            "payload": {"data": {"viewer": {"username": "wsuser"}}},
        }
        assert json.loads(await ws.recv()) == {"id": "1", "type": "complete"}


async def test_websocket_refuses_a_forged_token(server):
    async with websockets.connect(
        _ws_url(server), subprotocols=[Subprotocol("graphql-transport-ws")]
    ) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": "Bearer forged"}})
        )
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


async def test_the_web_client_is_revalidated_and_confined_by_its_csp(http):
    """/app's files are never reused unchecked (a pull or a deploy could otherwise run a
    new module with an old one), and the page may load and call only what it needs."""
    for path in ("/app/", "/app/app/documents.js", "/app/app/api.js", "/app/app/styles.css"):
        response = await http.get(path)
        assert response.status_code == 200, path
        assert response.headers["cache-control"] == "no-cache", path
        assert response.headers["x-content-type-options"] == "nosniff", path
        etag = response.headers["etag"]
        # Revalidation is a cheap 304 that says the same.
        again = await http.get(path, headers={"If-None-Match": etag})
        assert again.status_code == 304, path
        assert again.content == b""
        assert again.headers["cache-control"] == "no-cache", path
    policy = {
        name: values
        for name, *values in (
            directive.split()
            for directive in response.headers["content-security-policy"].split(";")
        )
    }
    assert policy["script-src"] == ["'self'"]  # no inline or remote script
    assert policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    # The API may be another origin (`?api=`), over HTTP(S) and its WebSocket; media come
    # from the API, a bucket or a CDN, and a post's previews are blob: URLs.
    assert {"'self'", "http:", "https:", "ws:", "wss:"} <= set(policy["connect-src"])
    for directive in ("img-src", "media-src"):
        assert {"'self'", "http:", "https:", "blob:", "data:"} <= set(policy[directive])
    # The API's own answers are not the page's: no policy on them.
    assert "content-security-policy" not in (await http.get("/healthz")).headers


async def test_the_web_client_is_not_served_when_web_app_is_off(settings):
    async with serve(replace(settings, web_app=False)) as running:
        async with httpx.AsyncClient(base_url=running.base_url) as http:
            assert (await http.get("/app/")).status_code == 404
