"""Trusted documents and automatic persisted queries: the registry against the real
Redis, the manifest builder, and the protocol end to end over HTTP (POST and GET)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import websockets
from sqlalchemy import text
from websockets.typing import Subprotocol

from infra.redis import create_redis
from schema.documents import (
    APQ_KEY_PREFIX,
    DocumentRegistry,
    ManifestError,
    PersistedQueryError,
    hash_document,
    load_manifest,
    parse_manifest,
)
from schema.manifest import build_manifest, main
from tests.conftest import count_redis_round_trips, serve, with_env

TYPENAME = "{ __typename }"
VIEWER = "query Viewer { viewer { id username } }"
TRUSTED_QUERY = "query Trusted($u: String!) { user(username: $u) { username } }"
SIGN_UP = (
    "mutation SignUp($u: String!, $e: String!, $p: String!) "
    "{ signUp(username: $u, email: $e, password: $p) { token errors { code } } }"
)
USER = "query ($u: String!) { user(username: $u) { username } }"
# Apollo Client and urql send this with hashed requests (see docs/persisted-queries.md).
ACCEPT = {"Accept": "application/graphql-response+json, application/json;q=0.9"}


def apq(document: str) -> dict[str, object]:
    return {"persistedQuery": {"version": 1, "sha256Hash": hash_document(document)}}


def registry(redis, **overrides) -> DocumentRegistry:
    options: dict = {
        "manifest": {},
        "trusted_only": False,
        "apq_enabled": True,
        "apq_ttl_seconds": 3600,
        "max_document_bytes": 32 * 1024,
    }
    options.update(overrides)
    return DocumentRegistry(redis, **options)


async def refused(awaitable) -> PersistedQueryError:
    with pytest.raises(PersistedQueryError) as caught:
        await awaitable
    return caught.value


# --- the hash ---------------------------------------------------------------------


def test_hash_is_sha256_hex_of_the_exact_utf8_text():
    # The two examples of the GraphQL-over-HTTP persisted documents appendix.
    spaced = "query ($id: ID!) {\n  user(id: $id) {\n    name\n  }\n}"
    compact = "query($id:ID!){user(id:$id){name}}"
    assert hash_document(spaced) == (
        "7dba4bd717b41f10434822356a93c32b1fb4907b983e854300ad839f84cdcd6e"
    )
    assert hash_document(compact) == (
        "71f7dc5758652baac68e4a10c50be732b741c892ade2883a99358f52b555286b"
    )
    # Non-ASCII text is hashed as UTF-8 bytes (what JavaScript's TextEncoder produces).
    # (`printf %s '{ user(username: "é") { id } }' | sha256sum` gives the same digest.)
    assert hash_document('{ user(username: "\u00e9") { id } }') == (
        "19a10f3b1edb9b7e65e1bf95d9e57d9475995d422b9ecda6639a6d9cec943415"
    )


# --- the registry against the real Redis ------------------------------------------


async def test_plain_requests_pass_through_and_an_empty_one_names_nothing(server):
    documents = registry(server.redis)
    assert await documents.resolve(VIEWER, None) == VIEWER
    assert await documents.resolve(VIEWER, {"other": 1}) == VIEWER
    assert await documents.resolve(None, None) is None
    assert await documents.resolve("", {}) is None


async def test_unknown_hash_is_not_found_as_apollo_clients_expect(server):
    error = await refused(registry(server.redis).resolve(None, apq(VIEWER)))
    assert error.code == "PERSISTED_QUERY_NOT_FOUND"
    assert error.message == "PersistedQueryNotFound"  # urql matches this string only
    assert error.status == 200
    assert error.headers["cache-control"] == "private, no-cache, must-revalidate"
    assert error.response() == {
        "errors": [
            {
                "message": "PersistedQueryNotFound",
                "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"},
            }
        ]
    }


async def test_registration_is_shared_through_redis_with_a_ttl(server):
    first_process = registry(server.redis, apq_ttl_seconds=600)
    assert await first_process.resolve(VIEWER, apq(VIEWER)) == VIEWER
    key = APQ_KEY_PREFIX + hash_document(VIEWER).encode()
    assert await server.redis.get(key) == VIEWER.encode()
    assert 0 < await server.redis.ttl(key) <= 600
    # Another API process, with a cold LRU, finds it in Redis.
    second_process = registry(server.redis)
    assert await second_process.resolve(None, apq(VIEWER)) == VIEWER
    # Hash lookup is case-insensitive, as a hex digest is.
    upper = {"persistedQuery": {"version": 1, "sha256Hash": hash_document(VIEWER).upper()}}
    assert await second_process.resolve(None, upper) == VIEWER


async def test_warm_hashes_and_manifest_hits_cost_no_redis_round_trip(server):
    documents = registry(server.redis, manifest={hash_document(TRUSTED_QUERY): TRUSTED_QUERY})
    await documents.resolve(VIEWER, apq(VIEWER))
    cold = registry(server.redis, manifest={hash_document(TRUSTED_QUERY): TRUSTED_QUERY})
    with count_redis_round_trips(server.redis) as first:
        assert await cold.resolve(None, apq(VIEWER)) == VIEWER
    assert first.count == 1  # one GET, then the document is in the process's LRU
    with count_redis_round_trips(server.redis) as trips:
        assert await cold.resolve(None, apq(VIEWER)) == VIEWER
        assert await cold.resolve(None, apq(TRUSTED_QUERY)) == TRUSTED_QUERY
        assert (
            await cold.resolve(None, None, document_id="sha256:" + hash_document(TRUSTED_QUERY))
            == TRUSTED_QUERY
        )
        assert await cold.resolve(TRUSTED_QUERY, apq(TRUSTED_QUERY)) == TRUSTED_QUERY
    assert trips.count == 0


async def test_hash_mismatch_is_refused_and_registers_nothing(server):
    documents = registry(server.redis)
    error = await refused(documents.resolve(TYPENAME, apq(VIEWER)))
    assert (error.code, error.status) == ("INVALID_INPUT", 400)
    assert error.message == "provided sha does not match query"
    assert await server.redis.get(APQ_KEY_PREFIX + hash_document(VIEWER).encode()) is None
    assert (await refused(documents.resolve(None, apq(VIEWER)))).code == "PERSISTED_QUERY_NOT_FOUND"
    # A manifest hash sent with some other text is refused too.
    pinned = registry(server.redis, manifest={hash_document(VIEWER): VIEWER})
    assert (await refused(pinned.resolve(TYPENAME, apq(VIEWER)))).status == 400


@pytest.mark.parametrize(
    "extensions",
    [
        {"persistedQuery": {"version": 2, "sha256Hash": hash_document(VIEWER)}},
        {"persistedQuery": {"version": True, "sha256Hash": hash_document(VIEWER)}},
        {"persistedQuery": {"sha256Hash": hash_document(VIEWER)}},
    ],
)
async def test_unsupported_version_is_refused(server, extensions):
    error = await refused(registry(server.redis).resolve(VIEWER, extensions))
    assert (error.code, error.status, error.message) == (
        "INVALID_INPUT",
        400,
        "Unsupported persisted query version",
    )


@pytest.mark.parametrize(
    "extensions",
    [
        {"persistedQuery": "abc"},
        {"persistedQuery": {"version": 1}},
        {"persistedQuery": {"version": 1, "sha256Hash": "abc"}},
        {"persistedQuery": {"version": 1, "sha256Hash": "g" * 64}},
        {"persistedQuery": {"version": 1, "sha256Hash": 5}},
    ],
)
async def test_malformed_persisted_query_is_invalid_input(server, extensions):
    error = await refused(registry(server.redis).resolve(None, extensions))
    assert (error.code, error.status) == ("INVALID_INPUT", 400)


async def test_oversized_documents_run_but_are_not_stored(server):
    big = "query Big { " + " ".join(f"a{i}: __typename" for i in range(10)) + " }"
    documents = registry(server.redis, max_document_bytes=len(big) - 1)
    assert await documents.resolve(big, apq(big)) == big
    assert await server.redis.get(APQ_KEY_PREFIX + hash_document(big).encode()) is None
    assert (await refused(documents.resolve(None, apq(big)))).code == "PERSISTED_QUERY_NOT_FOUND"


async def test_apq_disabled_says_not_supported_but_runs_hashed_text(server):
    documents = registry(server.redis, apq_enabled=False)
    error = await refused(documents.resolve(None, apq(VIEWER)))
    assert (error.code, error.message, error.status) == (
        "PERSISTED_QUERY_NOT_SUPPORTED",
        "PersistedQueryNotSupported",
        200,
    )
    assert await documents.resolve(VIEWER, apq(VIEWER)) == VIEWER
    assert await server.redis.get(APQ_KEY_PREFIX + hash_document(VIEWER).encode()) is None


async def test_document_ids_name_manifest_documents(server):
    digest = hash_document(TRUSTED_QUERY)
    documents = registry(server.redis, manifest={f"sha256:{digest}": TRUSTED_QUERY})
    assert await documents.resolve(None, None, document_id=f"sha256:{digest}") == TRUSTED_QUERY
    assert await documents.resolve(None, None, document_id=digest) == TRUSTED_QUERY
    unknown = await refused(documents.resolve(None, None, document_id="sha256:" + "0" * 64))
    assert (unknown.code, unknown.status) == ("PERSISTED_QUERY_NOT_IN_LIST", 404)
    # Relay's default MD5 ids are 32 hex digits: the error says what to change.
    md5 = await refused(
        documents.resolve(None, None, document_id="3be4abb81fa595e25eb725b2c6a87508")
    )
    assert md5.status == 400 and "SHA256" in md5.message
    both = await refused(documents.resolve(None, apq(VIEWER), document_id=f"sha256:{digest}"))
    assert both.status == 400


async def test_trusted_only_runs_manifest_documents_and_nothing_else(server):
    documents = registry(
        server.redis,
        manifest={hash_document(TRUSTED_QUERY): TRUSTED_QUERY},
        trusted_only=True,
    )
    # By hash (APQ extension or document id) and by full text.
    assert await documents.resolve(None, apq(TRUSTED_QUERY)) == TRUSTED_QUERY
    assert await documents.resolve(TRUSTED_QUERY, None) == TRUSTED_QUERY
    assert await documents.resolve(TRUSTED_QUERY, apq(TRUSTED_QUERY)) == TRUSTED_QUERY
    # Any other text is refused, and APQ registration stores nothing.
    other = await refused(documents.resolve(VIEWER, None))
    assert (other.code, other.status) == ("QUERY_NOT_IN_SAFELIST", 403)
    registration = await refused(documents.resolve(VIEWER, apq(VIEWER)))
    assert registration.code == "QUERY_NOT_IN_SAFELIST"
    assert await server.redis.get(APQ_KEY_PREFIX + hash_document(VIEWER).encode()) is None
    # A hash outside the manifest is refused even when APQ registered it earlier.
    await registry(server.redis).resolve(VIEWER, apq(VIEWER))
    unknown = await refused(documents.resolve(None, apq(VIEWER)))
    assert (unknown.code, unknown.status) == ("PERSISTED_QUERY_NOT_IN_LIST", 404)
    assert documents.known_documents() == [TRUSTED_QUERY]


async def test_trusted_only_without_a_manifest_refuses_to_start(server):
    with pytest.raises(ManifestError, match="TRUSTED_DOCUMENTS"):
        registry(server.redis, trusted_only=True)


async def test_redis_outage_degrades_to_sending_full_text():
    down = create_redis("redis://127.0.0.1:1/0")
    try:
        documents = registry(down)
        assert (await refused(documents.resolve(None, apq(VIEWER)))).code == (
            "PERSISTED_QUERY_NOT_FOUND"
        )
        assert await documents.resolve(VIEWER, apq(VIEWER)) == VIEWER
    finally:
        await down.aclose()


# --- manifests ----------------------------------------------------------------------


def test_manifest_formats_of_the_common_toolchains(tmp_path):
    digest = hash_document(TRUSTED_QUERY)
    plain = {digest: TRUSTED_QUERY}  # Relay (SHA256), GraphQL Code Generator
    prefixed = {f"sha256:{digest}": TRUSTED_QUERY}  # trusted-documents convention
    apollo = {
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": [{"id": digest, "name": "Trusted", "type": "query", "body": TRUSTED_QUERY}],
    }
    for data in (plain, prefixed, apollo):
        path = tmp_path / "manifest.json"
        path.write_text(json.dumps(data))
        assert load_manifest(path) == {digest: TRUSTED_QUERY}


@pytest.mark.parametrize(
    "data",
    [
        {hash_document(VIEWER): TRUSTED_QUERY},  # edited body
        {"3be4abb81fa595e25eb725b2c6a87508": VIEWER},  # MD5
        {hash_document(VIEWER): 5},
        [VIEWER],
        {"format": "apollo-persisted-query-manifest", "version": 2, "operations": []},
    ],
)
def test_bad_manifests_are_refused(data):
    with pytest.raises(ManifestError):
        parse_manifest(data)


async def test_from_settings_loads_the_manifest_file(server, settings, tmp_path):
    path = tmp_path / "trusted.json"
    path.write_text(json.dumps({hash_document(TRUSTED_QUERY): TRUSTED_QUERY}))
    configured = replace(settings, trusted_documents=path, trusted_documents_only=True)
    documents = DocumentRegistry.from_settings(server.redis, configured)
    assert documents.known_documents() == [TRUSTED_QUERY]
    assert documents.trusted_only and not documents.apq_enabled
    missing = replace(settings, trusted_documents=tmp_path / "missing.json")
    with pytest.raises(ManifestError, match="cannot read"):
        DocumentRegistry.from_settings(server.redis, missing)


def test_manifest_builder_hashes_files_or_operations(tmp_path, capsys):
    (tmp_path / "ops").mkdir()
    feed = (
        "query Viewer { viewer { ...UserBits } }\n"
        "fragment UserBits on User { username }\n"
        "query Typename { __typename }\n"
    )
    (tmp_path / "ops" / "feed.graphql").write_text(feed)
    whole = build_manifest([tmp_path / "ops"], schema=None)
    assert whole == {hash_document(feed): feed}
    per_operation = build_manifest(
        [tmp_path / "ops"], schema=None, per_operation=True, prefixed=True
    )
    documents = sorted(per_operation.values())
    assert documents == [
        "query Typename {\n  __typename\n}",
        "query Viewer {\n  viewer {\n    ...UserBits\n  }\n}\n\nfragment UserBits on User {\n  username\n}",
    ]
    assert all(key == f"sha256:{hash_document(doc)}" for key, doc in per_operation.items())
    # The CLI validates against schema.graphql and writes a manifest the server loads.
    out = tmp_path / "manifest.json"
    assert main([str(tmp_path / "ops"), "-o", str(out)]) == 0
    assert load_manifest(out) == whole
    (tmp_path / "ops" / "bad.graphql").write_text("{ noSuchField }")
    assert main([str(tmp_path / "ops"), "-o", str(tmp_path / "other.json")]) == 1
    assert "noSuchField" in capsys.readouterr().err
    assert not (tmp_path / "other.json").exists()


# --- end to end over HTTP -----------------------------------------------------------
# These need the registry wired into the /graphql view (app.py).


async def post(http: httpx.AsyncClient, body: dict) -> httpx.Response:
    return await http.post("/graphql", json=body, headers=ACCEPT)


async def get(http: httpx.AsyncClient, headers: dict | None = None, **params) -> httpx.Response:
    encoded = {
        k: json.dumps(v, separators=(",", ":")) if isinstance(v, dict) else v
        for k, v in params.items()
    }
    return await http.get("/graphql", params=encoded, headers=headers or ACCEPT)


async def test_http_hash_only_is_not_found_until_registered_over_post(server, http):
    missing = await post(http, {"extensions": apq(TYPENAME)})
    assert missing.status_code == 200
    assert missing.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    assert missing.json()["errors"][0]["message"] == "PersistedQueryNotFound"
    assert "no-cache" in missing.headers.get("cache-control", "")
    # Apollo Client's retry: the text and the hash together register and execute it.
    registered = await post(http, {"query": TYPENAME, "extensions": apq(TYPENAME)})
    assert registered.json() == {"data": {"__typename": "Query"}}
    hashed_post = await post(http, {"extensions": apq(TYPENAME)})
    assert hashed_post.json() == {"data": {"__typename": "Query"}}
    hashed_get = await get(http, extensions=apq(TYPENAME))
    assert hashed_get.status_code == 200 and hashed_get.json() == {"data": {"__typename": "Query"}}


async def test_http_registration_over_get_then_hash_only_get_with_variables(server, http):
    # urql re-sends a missed hash over GET when the URL fits (preferGetForPersistedQueries).
    variables = {"u": "nobody"}
    missing = await get(http, variables=variables, extensions=apq(USER))
    assert missing.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    registered = await get(http, query=USER, variables=variables, extensions=apq(USER))
    assert registered.json() == {"data": {"user": None}}
    hashed = await get(http, variables=variables, extensions=apq(USER))
    assert hashed.json() == {"data": {"user": None}}


async def test_http_hash_mismatch_is_400(server, http):
    response = await post(http, {"query": VIEWER, "extensions": apq(TYPENAME)})
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["message"] == "provided sha does not match query"
    assert error["extensions"]["code"] == "INVALID_INPUT"


async def test_http_get_never_runs_a_mutation_even_by_hash(server, http):
    variables = {"u": "getter", "e": "getter@example.com", "p": "long enough password"}
    by_text = await get(http, query=SIGN_UP, variables=variables)
    assert by_text.status_code in (400, 405)
    assert "mutation" in by_text.text.lower()
    # Registered over POST (where it runs), then asked for by hash over GET: refused.
    registered = await post(
        http,
        {"query": SIGN_UP, "variables": variables | {"u": "poster"}, "extensions": apq(SIGN_UP)},
    )
    assert registered.json()["data"]["signUp"]["token"]
    by_hash = await get(http, variables=variables, extensions=apq(SIGN_UP))
    assert by_hash.status_code in (400, 405)
    assert "mutation" in by_hash.text.lower()
    check = await post(http, {"query": USER, "variables": {"u": "getter"}})
    assert check.json() == {"data": {"user": None}}


async def test_http_curl_style_hash_only_get_is_answered_not_graphiql(server, http):
    # curl and httpx send Accept: */*, which would otherwise render GraphiQL.
    await post(http, {"query": TYPENAME, "extensions": apq(TYPENAME)})
    response = await get(http, headers={"Accept": "*/*"}, extensions=apq(TYPENAME))
    assert response.json() == {"data": {"__typename": "Query"}}


@pytest.fixture(scope="module")
async def trusted_server(settings, tmp_root: Path):
    """An API process in trusted-documents-only mode, with a manifest written here."""
    manifest = tmp_root / "trusted-documents.json"
    manifest.write_text(
        json.dumps({hash_document(doc): doc for doc in (TRUSTED_QUERY, TYPENAME, SIGN_UP)})
    )
    async with serve(
        with_env(settings, trusted_documents=manifest, trusted_documents_only=True)
    ) as running:
        yield running


@pytest.fixture
async def trusted_http(trusted_server):
    await trusted_server.redis.delete(APQ_KEY_PREFIX + hash_document(VIEWER).encode())
    async with httpx.AsyncClient(base_url=trusted_server.base_url, timeout=30) as client:
        yield client


async def test_http_trusted_only_accepts_manifest_documents(trusted_http):
    variables = {"u": "nobody"}
    expected = {"data": {"user": None}}
    by_apq_post = await post(
        trusted_http, {"variables": variables, "extensions": apq(TRUSTED_QUERY)}
    )
    assert by_apq_post.json() == expected
    by_apq_get = await get(trusted_http, variables=variables, extensions=apq(TRUSTED_QUERY))
    assert by_apq_get.json() == expected
    by_text = await post(trusted_http, {"query": TRUSTED_QUERY, "variables": variables})
    assert by_text.json() == expected
    document_id = "sha256:" + hash_document(TRUSTED_QUERY)
    by_id_post = await post(trusted_http, {"documentId": document_id, "variables": variables})
    assert by_id_post.json() == expected
    by_id_get = await get(trusted_http, documentId=document_id, variables=variables)
    assert by_id_get.json() == expected
    # Relay's network layer example sends `doc_id`.
    relay = await post(
        trusted_http, {"doc_id": hash_document(TRUSTED_QUERY), "variables": variables}
    )
    assert relay.json() == expected


async def test_http_trusted_only_refuses_other_documents_and_registration(
    trusted_server, trusted_http
):
    other = await post(trusted_http, {"query": VIEWER})
    assert other.status_code == 403
    assert other.json()["errors"][0]["extensions"]["code"] == "QUERY_NOT_IN_SAFELIST"
    registration = await post(trusted_http, {"query": VIEWER, "extensions": apq(VIEWER)})
    assert registration.status_code == 403
    assert registration.json()["errors"][0]["extensions"]["code"] == "QUERY_NOT_IN_SAFELIST"
    assert await trusted_server.redis.get(APQ_KEY_PREFIX + hash_document(VIEWER).encode()) is None
    unknown = await post(trusted_http, {"extensions": apq(VIEWER)})
    assert unknown.status_code == 404
    assert unknown.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_IN_LIST"
    over_get = await get(trusted_http, query=VIEWER)
    assert over_get.status_code == 403


# -- Review follow-ups: every transport, every client's Accept, only valid documents ----

URQL_ACCEPT = (
    "application/graphql-response+json, application/graphql+json, application/json, "
    "text/event-stream, multipart/mixed"
)
NODE = 'query N { node(id: "VXNlcjox") { id } }'  # an interface: never compiled


async def test_http_protocol_errors_are_json_for_every_client(server, http):
    # urql asks for application/graphql-response+json first (the GraphQL-over-HTTP
    # spec's type, docs/front-end.md); the others get application/json.
    for accept, media_type in (
        (URQL_ACCEPT, "application/graphql-response+json"),
        ("multipart/mixed", "application/json"),
        ("*/*", "application/json"),
    ):
        response = await http.post(
            "/graphql",
            json={"extensions": apq("query Unknown { __typename }")},
            headers={"Accept": accept},
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(media_type)
        assert "no-cache" in response.headers["cache-control"]
        assert response.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    # urql registers and then runs by hash with its own Accept header.
    body = {"query": TYPENAME, "extensions": apq(TYPENAME)}
    assert (await http.post("/graphql", json=body, headers={"Accept": URQL_ACCEPT})).json() == {
        "data": {"__typename": "Query"}
    }
    response = await http.post(
        "/graphql", json={"extensions": apq(TYPENAME)}, headers={"Accept": URQL_ACCEPT}
    )
    assert response.json() == {"data": {"__typename": "Query"}}


async def test_hashed_get_of_an_uncompiled_document_is_answered_not_graphiql(server, http):
    await post(http, {"query": NODE, "extensions": apq(NODE)})
    response = await get(http, headers={"Accept": "*/*"}, extensions=apq(NODE))
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"data": {"node": None}}


async def test_only_documents_that_validate_are_registered(server, http):
    garbage = "x" * 300
    response = await post(http, {"query": garbage, "extensions": apq(garbage)})
    assert response.json()["errors"]  # Strawberry words the syntax error
    invalid = "{ nope }"
    response = await post(http, {"query": invalid, "extensions": apq(invalid)})
    assert response.json()["errors"]
    for document in (garbage, invalid):
        assert not await server.redis.exists(APQ_KEY_PREFIX + hash_document(document).encode())
    response = await post(http, {"extensions": apq(invalid)})
    assert response.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"


@pytest.mark.parametrize("subprotocol", ["graphql-transport-ws", "graphql-ws"])
async def test_trusted_only_holds_over_websocket(trusted_server, subprotocol):
    url = trusted_server.base_url.replace("http://", "ws://") + "/graphql"
    legacy = subprotocol == "graphql-ws"
    async with websockets.connect(url, subprotocols=[Subprotocol(subprotocol)]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        query = 'mutation { signUp(username: "sneaky", email: "s@example.com", password: "x") { token } }'
        await ws.send(
            json.dumps(
                {"id": "1", "type": "start" if legacy else "subscribe", "payload": {"query": query}}
            )
        )
        while True:
            message = json.loads(await ws.recv())
            if message["type"] != "ka":
                break
        assert message["type"] == "error"
        errors = message["payload"] if not legacy else [message["payload"]]
        flat = errors if isinstance(errors[0], dict) and "message" in errors[0] else errors[0]
        assert "QUERY_NOT_IN_SAFELIST" in json.dumps(flat)
    async with trusted_server.engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM users WHERE username = 'sneaky'")) == 0
