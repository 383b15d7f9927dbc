"""GraphQL over HTTP (https://graphql.github.io/graphql-over-http/draft/): media types,
status codes and GET rules of /graphql, the same on the compiled path and Strawberry's
(`schema.graphql_http` is the one rule; docs/front-end.md).

The conformance check is graphql-http's own audit (`auditServer`), run by Node against
the live server; the direct tests pin the cases the audit does not reach (compiled and
persisted documents, field errors, our own pre-execution errors)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import replace
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from app import GraphQLApp
from schema.documents import APQ_KEY_PREFIX, DocumentRegistry, ManifestError, hash_document
from schema.graphql_http import (
    GRAPHQL_RESPONSE,
    JSON,
    NOT_A_GRAPHQL_REQUEST,
    SUBSCRIPTION_NOT_STREAMED,
    is_request_error_response,
    negotiate,
)
from settings import DEFAULT_TRUSTED_DOCUMENTS, load_settings
from tests.test_fast_path import Served
from tests.test_subscription_clients import node_client

__all__ = ["node_client"]  # a fixture, imported to make it available here

RESPONSE_JSON = {"Accept": "application/graphql-response+json, application/json;q=0.9"}
LEGACY_JSON = {"Accept": "application/json"}
USER = "query User($name: String!) { user(username: $name) { username } }"
FEED = "{ feed(first: 1) { edges { cursor } } }"
LOG_IN = 'mutation { logIn(username: "nobody", password: "wrong-password") { token } }'
SUBSCRIPTION = "subscription FeedItemAdded { feedItemAdded { __typename } }"
TOO_MANY_ALIASES = "{ " + " ".join(f"a{i}: __typename" for i in range(20)) + " }"
AUDIT_DEADLINE = 120


async def post(http: httpx.AsyncClient, body: object, headers: dict[str, str]) -> httpx.Response:
    return await http.post("/graphql", json=body, headers=headers)


def graphql_view(server: Any) -> GraphQLApp:
    """The running app's /graphql view."""
    for route in server.app.routes:
        if isinstance(route, Route) and route.path == "/graphql":
            assert isinstance(route.endpoint, GraphQLApp)
            return route.endpoint
    raise AssertionError("no /graphql route")


def assert_graphql_response_json(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/graphql-response+json; charset=utf-8"
    assert "Accept" in response.headers["vary"]
    body: dict[str, Any] = response.json()
    return body


# -- the audit --------------------------------------------------------------------------


async def test_graphql_http_audit_passes_every_must_and_should(server, node_client):
    process = await asyncio.create_subprocess_exec(
        "node",
        str(node_client / "audit.mjs"),
        f"{server.base_url}/graphql",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    async with asyncio.timeout(AUDIT_DEADLINE):
        stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode(errors="replace")
    results = json.loads(stdout)
    required = [r for r in results if r["name"].startswith(("MUST", "SHOULD"))]
    failing = [
        f"{r['id']} {r['name']}: {r.get('reason')} ({r.get('response')})"
        for r in required
        if r["status"] != "ok"
    ]
    assert not failing, "\n".join(failing)
    # The audit of graphql-http 1.23: 13 MUSTs and 23 SHOULDs; a newer one may add more.
    levels = [r["name"].split()[0] for r in required]
    assert levels.count("MUST") >= 13, levels
    assert levels.count("SHOULD") >= 23, levels


# -- content negotiation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, JSON),
        ("", JSON),
        ("*/*", JSON),
        ("application/json", JSON),
        ("application/*", JSON),
        ("text/html", JSON),  # nothing we produce: JSON, as the spec allows instead of 406
        ("application/graphql-response+json", GRAPHQL_RESPONSE),
        ("application/graphql-response+json, application/json;q=0.9", GRAPHQL_RESPONSE),
        ("application/json, application/graphql-response+json", GRAPHQL_RESPONSE),
        ("application/graphql-response+json;charset=utf-8, */*;q=0.1", GRAPHQL_RESPONSE),
        ("APPLICATION/GRAPHQL-RESPONSE+JSON", GRAPHQL_RESPONSE),
        ("application/graphql-response+json;q=0.5, application/json", JSON),
        ("application/graphql-response+json;q=0.5, */*", JSON),
        ("application/graphql-response+json;q=0, application/json", JSON),
        ("application/graphql-response+json;q=0.5, application/json;q=0, */*", GRAPHQL_RESPONSE),
        ("application/graphql-response+json;q=oops, application/json", JSON),
    ],
)
def test_the_media_type_follows_the_accept_header(accept, expected):
    assert negotiate(accept) == expected


# -- application/graphql-response+json ------------------------------------------------------


async def test_request_errors_are_400_without_data(server, http):
    for body, code in (
        ({"query": "{"}, "INVALID_INPUT"),  # does not parse
        ({"query": "{ noSuchField }"}, "INVALID_INPUT"),  # does not validate
        ({"query": USER, "variables": {"name": None}}, "INVALID_INPUT"),  # does not coerce
        ({"query": USER}, "INVALID_INPUT"),  # a required variable missing
        ({"query": TOO_MANY_ALIASES}, "QUERY_TOO_COMPLEX"),  # over a limit
    ):
        response = await post(http, body, RESPONSE_JSON)
        assert response.status_code == 400, response.text
        payload = assert_graphql_response_json(response)
        assert "data" not in payload
        assert payload["errors"][0]["extensions"]["code"] == code


async def test_executed_requests_are_200_with_data_field_errors_included(server, http):
    ok = await post(http, {"query": "{ __typename }"}, RESPONSE_JSON)
    assert ok.status_code == 200
    assert assert_graphql_response_json(ok) == {"data": {"__typename": "Query"}}
    # The feed needs a viewer: a field error that nulls the whole (non-null) result is
    # still an executed request.
    refused = await post(http, {"query": FEED}, RESPONSE_JSON)
    assert refused.status_code == 200
    payload = assert_graphql_response_json(refused)
    assert payload["data"] is None
    assert payload["errors"][0]["path"] == ["feed"]
    assert payload["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_application_json_clients_get_200_for_every_graphql_result(server, http):
    for headers in (LEGACY_JSON, {"Accept": "*/*"}, {}):
        for body in ({"query": "{"}, {"query": "{ noSuchField }"}, {"query": USER}):
            response = await post(http, body, headers)
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            payload = response.json()
            assert payload["data"] is None  # as before the spec: the key is there
            assert payload["errors"]


async def test_the_compiled_path_answers_by_the_same_rules(server, http, factory):
    user = await factory.user("compiled")
    variables = {"name": user.username}
    await post(http, {"query": USER, "variables": variables}, LEGACY_JSON)  # compiles it
    await post(http, {"query": FEED}, LEGACY_JSON)
    with Served() as served:
        ok = await post(http, {"query": USER, "variables": variables}, RESPONSE_JSON)
        coercion = await post(http, {"query": USER, "variables": {"name": 3}}, RESPONSE_JSON)
        legacy = await post(http, {"query": USER, "variables": {"name": 3}}, LEGACY_JSON)
        field_error = await post(http, {"query": FEED}, RESPONSE_JSON)
    assert (served.compiled, served.strawberry) == (4, 0)
    assert ok.status_code == 200
    assert assert_graphql_response_json(ok) == {"data": {"user": {"username": user.username}}}
    assert coercion.status_code == 400
    payload = assert_graphql_response_json(coercion)
    assert "data" not in payload
    assert payload["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
    assert legacy.status_code == 200
    assert legacy.headers["content-type"] == "application/json"
    assert legacy.json()["data"] is None
    assert field_error.status_code == 200
    assert assert_graphql_response_json(field_error)["data"] is None


async def test_malformed_requests_keep_their_status_in_either_media_type(server, http):
    for headers, expected in ((RESPONSE_JSON, GRAPHQL_RESPONSE), (LEGACY_JSON, JSON)):
        response = await http.post(
            "/graphql", content=b'{ "not json', headers={"content-type": JSON, **headers}
        )
        assert response.status_code == 400
        assert response.headers["content-type"].startswith(expected)
    # In application/graphql-response+json mode the reason is a GraphQL error.
    response = await http.post(
        "/graphql", content=b'{ "not json', headers={"content-type": JSON, **RESPONSE_JSON}
    )
    assert response.json()["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
    assert "data" not in response.json()


@pytest.mark.parametrize("body", [b"null", b"5", b'"x"', b"true", b"1.5"])
async def test_a_json_body_that_is_not_an_object_is_400_not_a_500(server, http, caplog, body):
    with caplog.at_level(logging.WARNING):
        # Twice: the fast path answers both times (compiled or not, it checks the body).
        for _ in range(2):
            for headers, media_type in (
                (RESPONSE_JSON, GRAPHQL_RESPONSE),
                (LEGACY_JSON, JSON),
            ):
                response = await http.post(
                    "/graphql", content=body, headers={"content-type": JSON, **headers}
                )
                assert response.status_code == 400, response.text
                assert response.headers["content-type"].startswith(media_type)
                assert NOT_A_GRAPHQL_REQUEST in response.text
            payload = (
                await http.post(
                    "/graphql", content=body, headers={"content-type": JSON, **RESPONSE_JSON}
                )
            ).json()
            assert payload == {
                "errors": [
                    {"message": NOT_A_GRAPHQL_REQUEST, "extensions": {"code": "INVALID_INPUT"}}
                ]
            }
    no_error_logged(caplog)


async def test_a_json_body_that_is_not_an_object_is_400_on_strawberrys_path_too(
    server, http, caplog
):
    """With the fast path off, Strawberry's view checks the body (`GraphQLApp.parse_http_body`)."""
    graphql = graphql_view(server)
    fast_path, graphql.fast_path = graphql.fast_path, None
    try:
        with caplog.at_level(logging.WARNING), Served() as served:
            for body in (b"null", b"5", b'"x"', b"true", b"1.5"):
                for headers in (RESPONSE_JSON, LEGACY_JSON):
                    response = await http.post(
                        "/graphql", content=body, headers={"content-type": JSON, **headers}
                    )
                    assert response.status_code == 400, response.text
                    assert NOT_A_GRAPHQL_REQUEST in response.text
            ok = await post(http, {"query": "{ __typename }"}, LEGACY_JSON)
        assert ok.json() == {"data": {"__typename": "Query"}}
        assert served.compiled == 0
    finally:
        graphql.fast_path = fast_path
    no_error_logged(caplog)


@pytest.mark.parametrize("where", ["body", "variables"])
async def test_json_nested_too_deeply_is_400_not_a_500(server, http, caplog, where):
    """Deeper than orjson reads (the fast path passes it on) and than the standard
    library's parser recurses (a RecursionError in Strawberry's parse): a 400 like any
    unreadable body, on either path."""
    deep = b"[" * 50_000 + b"]" * 50_000
    body = deep if where == "body" else b'{"query": "{ __typename }", "variables": ' + deep + b"}"
    with caplog.at_level(logging.WARNING):
        for headers in (RESPONSE_JSON, LEGACY_JSON):
            response = await http.post(
                "/graphql", content=body, headers={"content-type": JSON, **headers}
            )
            assert response.status_code == 400, response.text
            assert "Unable to parse request body as JSON" in response.text
    no_error_logged(caplog)


async def test_a_batch_keeps_its_answer(server, http, caplog):
    """An array is a batch: refused with 400 while batching is off, as before."""
    with caplog.at_level(logging.WARNING):
        for headers, media_type in ((RESPONSE_JSON, GRAPHQL_RESPONSE), (LEGACY_JSON, JSON)):
            response = await post(http, [{"query": "{ __typename }"}], headers)
            assert response.status_code == 400, response.text
            assert response.headers["content-type"].startswith(media_type)
            assert "Batching is not enabled" in response.text
    no_error_logged(caplog)


# -- GET -----------------------------------------------------------------------------------


async def test_a_mutation_over_get_is_405_with_allow_post(server, http):
    for headers in (RESPONSE_JSON, LEGACY_JSON):
        response = await http.get("/graphql", params={"query": LOG_IN}, headers=headers)
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
        assert "mutations are not allowed when using GET" in response.text
    payload = (await http.get("/graphql", params={"query": LOG_IN}, headers=RESPONSE_JSON)).json()
    assert "data" not in payload


async def test_a_persisted_mutation_over_get_is_405_too(server, http):
    digest = hash_document(LOG_IN)
    apq = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    # Registered over POST (where it runs: a wrong password is a payload error)...
    registered = await post(http, {"query": LOG_IN, "extensions": apq}, RESPONSE_JSON)
    assert registered.status_code == 200
    assert registered.json()["data"]["logIn"]["token"] is None
    # ...then named by hash over GET: refused before it runs.
    response = await http.get(
        "/graphql", params={"extensions": json.dumps(apq)}, headers=RESPONSE_JSON
    )
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


async def test_other_methods_are_405_with_allow(server, http):
    for method in ("HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"):
        for headers in (RESPONSE_JSON, LEGACY_JSON):
            response = await http.request(
                method, "/graphql", params={"query": "{ __typename }"}, headers=headers
            )
            assert response.status_code == 405, method
            assert response.headers["allow"] == "GET, POST", method


def no_error_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def test_a_subscription_over_get_is_405_with_allow_post(server, http, caplog):
    with caplog.at_level(logging.WARNING):
        for headers in (RESPONSE_JSON, LEGACY_JSON, {}):
            for _ in range(3):  # never compiled either: the compiler takes queries only
                response = await http.get(
                    "/graphql", params={"query": SUBSCRIPTION}, headers=headers
                )
                assert response.status_code == 405, response.text
                assert response.headers["allow"] == "POST"
                assert "subscriptions are not allowed when using GET" in response.text
    no_error_logged(caplog)


async def test_a_subscription_over_a_plain_post_is_400_and_runs_nothing(server, http, caplog):
    with caplog.at_level(logging.WARNING):
        for headers, media_type in (
            (RESPONSE_JSON, GRAPHQL_RESPONSE),
            (LEGACY_JSON, JSON),
            ({}, JSON),
        ):
            response = await post(http, {"query": SUBSCRIPTION}, headers)
            assert response.status_code == 400, response.text
            assert response.headers["content-type"].startswith(media_type)
            assert response.json() == {
                "errors": [
                    {"message": SUBSCRIPTION_NOT_STREAMED, "extensions": {"code": "INVALID_INPUT"}}
                ]
            }
    no_error_logged(caplog)


async def test_a_persisted_subscription_is_refused_over_plain_http(server, http, caplog):
    digest = hash_document(SUBSCRIPTION)
    apq = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    with caplog.at_level(logging.WARNING):
        # Sent with its text: it validates, so it is registered, but it does not run.
        registered = await post(http, {"query": SUBSCRIPTION, "extensions": apq}, LEGACY_JSON)
        assert registered.status_code == 400
        assert await server.redis.exists(APQ_KEY_PREFIX + digest.encode())
        by_hash = await post(http, {"extensions": apq}, RESPONSE_JSON)
        assert by_hash.status_code == 400, by_hash.text
        assert by_hash.json()["errors"][0]["message"] == SUBSCRIPTION_NOT_STREAMED
        over_get = await http.get(
            "/graphql", params={"extensions": json.dumps(apq)}, headers=RESPONSE_JSON
        )
        assert over_get.status_code == 405
        assert over_get.headers["allow"] == "POST"
    no_error_logged(caplog)


async def test_a_query_over_get_answers_in_the_accepted_media_type(server, http):
    for headers, media_type in ((RESPONSE_JSON, GRAPHQL_RESPONSE), (LEGACY_JSON, JSON)):
        for _ in range(2):  # the second one runs compiled
            response = await http.get(
                "/graphql", params={"query": "{ __typename }"}, headers=headers
            )
            assert response.status_code == 200
            assert response.headers["content-type"].startswith(media_type)
            assert response.json() == {"data": {"__typename": "Query"}}


# -- persisted documents ----------------------------------------------------------------------


async def test_persisted_query_refusals_are_4xx_and_the_apq_handshake_stays_200(server, http):
    unknown = "sha256:" + hash_document("query Unknown { __typename }")
    refused = await post(http, {"documentId": unknown}, RESPONSE_JSON)
    assert refused.status_code == 404
    payload = assert_graphql_response_json(refused)
    assert "data" not in payload
    assert payload["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_IN_LIST"
    malformed = await post(http, {"documentId": "sha256:nope"}, RESPONSE_JSON)
    assert malformed.status_code == 400
    assert "data" not in assert_graphql_response_json(malformed)
    # "Not found, send the text" is a step of Apollo's protocol, not a failed request:
    # 200 (docs/front-end.md), so APQ clients that send this Accept keep retrying.
    apq = {"persistedQuery": {"version": 1, "sha256Hash": unknown.removeprefix("sha256:")}}
    handshake = await post(http, {"extensions": apq}, RESPONSE_JSON)
    assert handshake.status_code == 200
    payload = assert_graphql_response_json(handshake)
    assert payload["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    assert "data" not in payload


def test_trusted_documents_default_to_the_web_clients_manifest(monkeypatch, tmp_path):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SECRET_KEY", "k" * 40)
    monkeypatch.delenv("ENV", raising=False)
    monkeypatch.delenv("TRUSTED_DOCUMENTS_ONLY", raising=False)
    manifest = tmp_path / "manifest.json"
    monkeypatch.setenv("TRUSTED_DOCUMENTS", str(manifest))
    assert load_settings().trusted_documents == manifest
    for off in ("none", "None", " NONE "):
        monkeypatch.setenv("TRUSTED_DOCUMENTS", off)
        assert load_settings().trusted_documents is None
    # Unset (or empty): web/trusted-documents.json, when `make documents` has built it.
    expected = DEFAULT_TRUSTED_DOCUMENTS if DEFAULT_TRUSTED_DOCUMENTS.is_file() else None
    monkeypatch.setenv("TRUSTED_DOCUMENTS", "")
    assert load_settings().trusted_documents == expected
    monkeypatch.delenv("TRUSTED_DOCUMENTS")
    assert load_settings().trusted_documents == expected


def test_trusted_documents_have_no_default_in_production(monkeypatch, tmp_path):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SECRET_KEY", "k" * 40)
    monkeypatch.setenv("ENV", "production")
    monkeypatch.setenv("DATABASE_URL", "postgresql://db.invalid/x")
    monkeypatch.setenv("REDIS_URL", "redis://redis.invalid/0")
    monkeypatch.delenv("TRUSTED_DOCUMENTS", raising=False)
    monkeypatch.delenv("TRUSTED_DOCUMENTS_ONLY", raising=False)
    # Whether or not web/trusted-documents.json exists: production loads only what its
    # operator names.
    assert load_settings().trusted_documents is None
    manifest = tmp_path / "manifest.json"
    monkeypatch.setenv("TRUSTED_DOCUMENTS", str(manifest))
    assert load_settings().trusted_documents == manifest


async def test_trusted_only_without_trusted_documents_refuses_to_start(
    server, monkeypatch, tmp_path
):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SECRET_KEY", "k" * 40)
    monkeypatch.delenv("ENV", raising=False)
    monkeypatch.delenv("TRUSTED_DOCUMENTS", raising=False)
    monkeypatch.setenv("TRUSTED_DOCUMENTS_ONLY", "true")
    loaded = load_settings()
    # Not the web client's manifest by default: this mode needs its manifest named.
    assert loaded.trusted_documents_only
    assert loaded.trusted_documents is None
    configured = replace(
        server.settings,
        trusted_documents=loaded.trusted_documents,
        trusted_documents_only=loaded.trusted_documents_only,
    )
    with pytest.raises(ManifestError, match="TRUSTED_DOCUMENTS"):
        DocumentRegistry.from_settings(server.redis, configured)


def test_a_request_error_is_an_answer_without_data_whose_errors_have_no_path():
    request_error = {"message": "Cannot query field", "locations": [{"line": 1, "column": 3}]}
    field_error = {"message": "Not signed in", "path": ["feed"]}
    assert is_request_error_response({"data": None, "errors": [request_error]})
    assert is_request_error_response({"errors": [request_error]})
    assert not is_request_error_response({"data": None, "errors": [field_error]})
    assert not is_request_error_response({"data": None, "errors": [request_error, field_error]})
    assert not is_request_error_response({"data": {"a": 1}, "errors": [request_error]})
    assert not is_request_error_response({"data": None})
