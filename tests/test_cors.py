"""A page on another origin uses the API: CORS on /graphql, /uploads and /media, the
WebSocket's Origin check, and the S3 bucket's CORS rules (docs/front-end.md).

The allowed list is CORS_ALLOW_ORIGINS; tests build Settings directly, so the session's
development settings allow `http://localhost:*` and `http://127.0.0.1:*`."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import boto3
import httpx
import orjson
import pytest
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from websockets.typing import Origin, Subprotocol

from domain import posts as post_domain
from infra.cors import (
    PREFLIGHT_MAX_AGE_SECONDS,
    CrossOriginMiddleware,
    OriginList,
    allowed_headers,
)
from infra.storage import S3Storage, bucket_cors_rules, print_cors
from settings import DEVELOPMENT_CORS_ORIGINS, ROOT, load_settings
from tests.conftest import serve
from tests.s3_server import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, s3_settings

PAGE = "http://localhost:5173"  # a Vite dev server
NOT_ALLOWED = ("http://localhost.evil.com:5173", "https://localhost:5173", "http://evil.example")
REQUEST_HEADERS = "authorization, content-type, x-request-id, apollographql-client-name"
LEGACY = {"Accept": "application/json"}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def preflight(method: str, origin: str = PAGE, headers: str | None = None) -> dict[str, str]:
    values = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        values["Access-Control-Request-Headers"] = headers
    return values


def listed(value: str | None) -> set[str]:
    return {part.strip().lower() for part in (value or "").split(",") if part.strip()}


def assert_allowed(response: httpx.Response, origin: str = PAGE) -> None:
    assert response.headers.get("access-control-allow-origin") == origin
    assert "origin" in listed(response.headers.get("vary"))
    # Bearer tokens, not cookies: credentials are never allowed.
    assert "access-control-allow-credentials" not in response.headers


# -- which origins ---------------------------------------------------------------------------


def test_a_wildcard_port_matches_any_port_of_that_scheme_and_host_only():
    origins = OriginList(DEVELOPMENT_CORS_ORIGINS)
    for origin in (PAGE, "http://localhost:3000", "http://localhost", "http://127.0.0.1:8000"):
        assert origins.allows(origin), origin
    for origin in (
        *NOT_ALLOWED,
        "http://localhost:5173.evil.com",
        "http://127.0.0.1.evil.com",
        "http://xlocalhost:5173",
        "null",
        "",
    ):
        assert not origins.allows(origin), origin


def test_exact_origins_any_origin_and_malformed_entries():
    origins = OriginList(["https://App.Example.com:443", "https://admin.example.com:8443"])
    assert origins.allows("https://app.example.com")  # browsers omit the default port
    assert origins.allows("https://admin.example.com:8443")
    assert not origins.allows("https://admin.example.com")
    assert not origins.allows("http://app.example.com")
    assert origins.normalized == ("https://app.example.com", "https://admin.example.com:8443")
    assert OriginList(["*"]).allows("https://anything.example")
    assert not OriginList([]).allows(PAGE)
    for bad in ("localhost:5173", "http://localhost:5173/app", "ftp://x.example", "http://*.x.io"):
        with pytest.raises(ValueError, match="CORS_ALLOW_ORIGINS"):
            OriginList([bad])


def test_settings_read_cors_allow_origins_and_the_deprecated_alias(
    monkeypatch, tmp_path: Path, caplog
):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SECRET_KEY", "k" * 40)
    for name in ("ENV", "CORS_ALLOW_ORIGINS", "ALLOWED_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    assert load_settings().cors_origins == DEVELOPMENT_CORS_ORIGINS
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", " https://app.example.com , http://localhost:* ")
    assert load_settings().cors_origins == ("https://app.example.com", "http://localhost:*")
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", "")
    assert load_settings().cors_origins == ()  # set but empty: no origin at all
    monkeypatch.delenv("CORS_ALLOW_ORIGINS")
    monkeypatch.setenv("ALLOWED_ORIGINS", "https://old.example.com")
    with caplog.at_level(logging.WARNING, logger="instagraph.settings"):
        assert load_settings().cors_origins == ("https://old.example.com",)
    assert "ALLOWED_ORIGINS is deprecated" in caplog.text
    monkeypatch.delenv("ALLOWED_ORIGINS")
    monkeypatch.setenv("ENV", "production")
    monkeypatch.setenv("DATABASE_URL", "postgresql://db.invalid/x")
    monkeypatch.setenv("REDIS_URL", "redis://redis.invalid/0")
    assert load_settings().cors_origins == ()  # production: none unless set


# -- /graphql --------------------------------------------------------------------------------


async def test_graphql_preflight_and_requests_from_an_allowed_origin(server, http):
    response = await http.options("/graphql", headers=preflight("POST", headers=REQUEST_HEADERS))
    assert response.status_code == 200
    assert_allowed(response)
    assert {"get", "post"} <= listed(response.headers["access-control-allow-methods"])
    assert listed(REQUEST_HEADERS) <= listed(response.headers["access-control-allow-headers"])
    assert int(response.headers["access-control-max-age"]) == PREFLIGHT_MAX_AGE_SECONDS

    post = await http.post(
        "/graphql",
        json={"query": "{ __typename }"},
        headers={"Origin": PAGE, "X-Request-ID": "page-1"},
    )
    assert post.status_code == 200
    assert post.json() == {"data": {"__typename": "Query"}}
    assert_allowed(post)
    assert {"etag", "x-request-id"} <= listed(post.headers["access-control-expose-headers"])
    assert post.headers["x-request-id"] == "page-1"

    get = await http.get(
        "/graphql",
        params={"query": "{ __typename }"},
        headers={"Origin": "http://127.0.0.1:4173", "Accept": "application/json"},
    )
    assert get.status_code == 200
    assert_allowed(get, "http://127.0.0.1:4173")


async def test_other_origins_get_no_cors_headers(server, http):
    for origin in NOT_ALLOWED:
        response = await http.options("/graphql", headers=preflight("POST", origin, "content-type"))
        assert response.status_code == 400  # Starlette's "Disallowed CORS origin"
        assert "access-control-allow-origin" not in response.headers
        post = await http.post(
            "/graphql", json={"query": "{ __typename }"}, headers={"Origin": origin}
        )
        assert post.status_code == 200  # served: the browser is what withholds it
        assert "access-control-allow-origin" not in post.headers
        assert "origin" in listed(post.headers["vary"])


async def test_graphql_errors_carry_the_cors_headers(server, http):
    headers = {"Origin": PAGE, "Content-Type": "application/json"}
    malformed = await http.post("/graphql", content=b"{ nope", headers=headers)
    assert malformed.status_code == 400
    assert_allowed(malformed)
    mutation = await http.get(
        "/graphql",
        params={"query": "mutation { logOut }"},
        headers={"Origin": PAGE, "Accept": "application/graphql-response+json"},
    )
    assert mutation.status_code == 405
    assert_allowed(mutation)


async def test_routes_outside_the_api_answer_no_cors(server, http):
    response = await http.get("/healthz", headers={"Origin": PAGE})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


async def test_requests_without_origin_get_no_cors_headers_but_vary_on_origin(server, http):
    """Non-browser clients pay nothing for CORS; a cache in front still keys cacheable
    answers on Origin, so a page never gets an answer stored without its headers."""
    key = "renditions/1/no-origin/thumb.webp"
    await server.storage.put(key, b"RIFF....WEBP", "image/webp")
    media = await http.get(f"/media/{key}")
    get = await http.get("/graphql", params={"query": "{ __typename }"}, headers=LEGACY)
    post = await http.post("/graphql", json={"query": "{ __typename }"})
    for response in (media, get, post):
        assert response.status_code == 200
        assert not [name for name in response.headers if name.startswith("access-control-")]
        assert "origin" in listed(response.headers.get("vary"))
    assert listed(get.headers["vary"]) == {"accept", "origin"}
    # With an Origin, the middleware's `Vary: Origin` is not repeated.
    cross = await http.get(
        "/graphql", params={"query": "{ __typename }"}, headers={**LEGACY, "Origin": PAGE}
    )
    assert_allowed(cross)
    assert [v.strip().lower() for v in cross.headers["vary"].split(",")] == ["accept", "origin"]


async def test_preflights_advertise_each_routes_own_methods(server, http):
    graphql = await http.options("/graphql", headers=preflight("POST"))
    assert listed(graphql.headers["access-control-allow-methods"]) == {"get", "post"}
    media = await http.options("/media/renditions/1/x/thumb.webp", headers=preflight("GET"))
    assert listed(media.headers["access-control-allow-methods"]) == {"get", "head"}
    upload = await http.options("/uploads/originals/1/x", headers=preflight("PUT"))
    assert listed(upload.headers["access-control-allow-methods"]) == {"put"}
    for path, method in (("/graphql", "PUT"), ("/media/renditions/1/x", "POST")):
        refused = await http.options(path, headers=preflight(method))
        assert refused.status_code == 400
        assert refused.text == "Disallowed CORS method"


async def test_tracing_headers_are_allowed(server, http):
    tracing = "traceparent, tracestate, baggage, sentry-trace"
    response = await http.options(
        "/graphql", headers=preflight("POST", headers=f"content-type, {tracing}")
    )
    assert response.status_code == 200, response.text
    assert listed(tracing) <= listed(response.headers["access-control-allow-headers"])
    custom = await http.options("/graphql", headers=preflight("POST", headers="x-client-build"))
    assert custom.status_code == 400
    assert custom.text == "Disallowed CORS headers"


async def test_cors_allow_headers_adds_request_headers(monkeypatch, tmp_path):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SECRET_KEY", "k" * 40)
    monkeypatch.delenv("ENV", raising=False)
    monkeypatch.setenv("CORS_ALLOW_HEADERS", " X-Client-Build , x-feature-flags ")
    extra = load_settings().cors_allow_headers
    assert extra == ("X-Client-Build", "x-feature-flags")
    for bad in ("X Client", "*", "x-build:1"):
        with pytest.raises(ValueError, match="CORS_ALLOW_HEADERS"):
            allowed_headers([bad])

    async def echo(request: Request) -> Response:
        return Response("ok")

    app = Starlette(routes=[Route("/graphql", echo, methods=["POST"])])
    app.add_middleware(
        CrossOriginMiddleware, origins=OriginList(DEVELOPMENT_CORS_ORIGINS), headers=extra
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        response = await http.options(
            "/graphql", headers=preflight("POST", headers="authorization, x-client-build")
        )
    assert response.status_code == 200, response.text
    assert {"authorization", "traceparent", "x-client-build", "x-feature-flags"} <= listed(
        response.headers["access-control-allow-headers"]
    )


async def test_routes_are_matched_under_a_root_path():
    """`uvicorn --root-path /api` behind a proxy: the scope's path includes the prefix."""

    async def echo(request: Request) -> Response:
        return Response("ok")

    app = Starlette(routes=[Route("/graphql", echo, methods=["POST"])])
    app.add_middleware(CrossOriginMiddleware, origins=OriginList(DEVELOPMENT_CORS_ORIGINS))
    transport = httpx.ASGITransport(app=app, root_path="/api")
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        response = await http.options("/api/graphql", headers=preflight("POST"))
        assert response.status_code == 200, response.text
        assert_allowed(response)
        post = await http.post("/api/graphql", headers={"Origin": PAGE})
        assert post.text == "ok"
        assert_allowed(post)
        outside = await http.post("/api/healthz", headers={"Origin": PAGE})
        assert "access-control-allow-origin" not in outside.headers


async def test_the_deprecated_allowed_origins_alias_opens_cors(settings, monkeypatch, tmp_path):
    monkeypatch.delenv("CORS_ALLOW_ORIGINS", raising=False)
    monkeypatch.setenv("ALLOWED_ORIGINS", "https://old.example.com")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SECRET_KEY", "k" * 40)
    monkeypatch.delenv("ENV", raising=False)
    from_alias = load_settings().cors_allow_origins
    async with (
        serve(replace(settings, cors_allow_origins=from_alias)) as running,
        httpx.AsyncClient(base_url=running.base_url) as http,
    ):
        response = await http.options(
            "/graphql", headers=preflight("POST", "https://old.example.com", "authorization")
        )
        assert response.status_code == 200, response.text
        assert_allowed(response, "https://old.example.com")
        refused = await http.options("/graphql", headers=preflight("POST", PAGE))
        assert refused.status_code == 400  # the alias replaced the development default


async def test_production_allows_no_origin_by_default(settings):
    async with (
        serve(replace(settings, env="production")) as running,
        httpx.AsyncClient(base_url=running.base_url) as http,
    ):
        response = await http.options("/graphql", headers=preflight("POST"))
        # No CORS middleware at all: the view refuses the method, as without an Origin.
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, POST"
        assert "access-control-allow-origin" not in response.headers
        post = await http.post(
            "/graphql", json={"query": "{ __typename }"}, headers={"Origin": PAGE}
        )
        assert post.status_code == 200
        assert "access-control-allow-origin" not in post.headers


async def test_a_lone_star_allows_any_origin_without_credentials(settings):
    async with (
        serve(replace(settings, cors_allow_origins=("*",))) as running,
        httpx.AsyncClient(base_url=running.base_url) as http,
    ):
        response = await http.options(
            "/graphql", headers=preflight("POST", "https://elsewhere.example", "authorization")
        )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "*"
        post = await http.post(
            "/graphql",
            json={"query": "{ __typename }"},
            headers={"Origin": "https://elsewhere.example"},
        )
        assert post.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in post.headers


# -- /uploads and /media -----------------------------------------------------------------------


async def test_an_upload_put_from_a_page_reads_its_etag(server, http, factory):
    # The app's upload route takes a PENDING post's targets only (docs/uploads-hardening.md).
    author = await factory.user("cors")
    async with server.engine.begin() as conn:
        created = await post_domain.create_post(
            conn=conn,
            author_id=author.pk,
            caption=None,
            items=[post_domain.MediaSpec("image/png", len(PNG))],
            idempotency_key=None,
        )
    target = await server.storage.upload_target(
        created.media[0].original_key,
        content_type="image/png",
        max_bytes=1024,
        declared_bytes=len(PNG),
        expires_in=600,
    )
    # The route takes PUT only; the preflight is still answered.
    response = await http.options(target.url, headers=preflight("PUT", headers="content-type"))
    assert response.status_code == 200
    assert_allowed(response)
    assert "put" in listed(response.headers["access-control-allow-methods"])
    assert "content-type" in listed(response.headers["access-control-allow-headers"])

    put = await http.put(target.url, content=PNG, headers={**target.headers, "Origin": PAGE})
    assert put.status_code == 200
    assert_allowed(put)
    assert put.headers["etag"]
    assert "etag" in listed(put.headers["access-control-expose-headers"])

    refused = await http.put(
        target.url, content=PNG, headers={"Content-Type": "image/gif", "Origin": PAGE}
    )
    assert refused.status_code == 403  # the URL was signed for image/png
    assert_allowed(refused)


async def test_media_is_readable_by_a_page_and_its_canvas(server, http):
    key = "renditions/1/cors/thumb.webp"
    await server.storage.put(key, b"RIFF....WEBP", "image/webp")
    for method in ("GET", "HEAD"):
        response = await http.options(f"/media/{key}", headers=preflight(method))
        assert response.status_code == 200
        assert_allowed(response)
    got = await http.get(f"/media/{key}", headers={"Origin": PAGE})
    assert got.status_code == 200
    assert got.content == b"RIFF....WEBP"
    assert_allowed(got)
    head = await http.head(f"/media/{key}", headers={"Origin": PAGE})
    assert head.status_code == 200
    assert_allowed(head)
    missing = await http.get("/media/renditions/1/none/thumb.webp", headers={"Origin": PAGE})
    assert missing.status_code == 404
    assert_allowed(missing)


async def test_an_unexpected_error_is_a_500_with_the_cors_headers():
    # The only way to get a 500 out of the real routes is a bug; this app has one.
    async def broken(request: Request) -> Response:
        raise RuntimeError("a bug")

    app = Starlette(routes=[Route("/graphql", broken, methods=["POST"])])
    app.add_middleware(CrossOriginMiddleware, origins=OriginList(DEVELOPMENT_CORS_ORIGINS))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        response = await http.post("/graphql", headers={"Origin": PAGE})
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    assert_allowed(response)


# -- WebSocket ------------------------------------------------------------------------------------


def ws_url(server) -> str:
    return server.base_url.replace("http://", "ws://") + "/graphql"


async def open_and_init(url: str, origin: str | None) -> object:
    """The type of the server's answer to connection_init (graphql-transport-ws)."""
    async with websockets.connect(
        url,
        origin=Origin(origin) if origin else None,
        subprotocols=[Subprotocol("graphql-transport-ws")],
    ) as ws:
        await ws.send(orjson.dumps({"type": "connection_init"}).decode())
        return orjson.loads(await ws.recv())["type"]


async def test_websocket_upgrades_check_the_origin(server):
    url = ws_url(server)
    assert await open_and_init(url, PAGE) == "connection_ack"
    # Non-browser clients (gql, Node's graphql-ws) send no Origin: allowed.
    assert await open_and_init(url, None) == "connection_ack"
    # The API's own origin (the web client at /app): allowed.
    assert await open_and_init(url, server.base_url) == "connection_ack"
    for origin in NOT_ALLOWED:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await open_and_init(url, origin)
        assert refused.value.response.status_code == 403


async def test_production_refuses_cross_origin_websockets_by_default(settings):
    async with serve(replace(settings, env="production")) as running:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await open_and_init(ws_url(running), PAGE)
        assert refused.value.response.status_code == 403
        assert await open_and_init(ws_url(running), None) == "connection_ack"


# -- the S3 bucket ---------------------------------------------------------------------------------


async def test_the_bucket_gets_the_cors_rules_and_moto_answers_preflights(settings, moto_server):
    bucket_settings = s3_settings(settings, moto_server)
    storage = S3Storage(bucket_settings)
    try:
        await storage.ensure_bucket()
        s3 = boto3.client(
            "s3",
            endpoint_url=moto_server,
            region_name=bucket_settings.s3_region,
            aws_access_key_id=FAKE_ACCESS_KEY_ID,
            aws_secret_access_key=FAKE_SECRET_ACCESS_KEY,
        )
        applied = s3.get_bucket_cors(Bucket=storage.bucket)
        assert applied["CORSRules"] == bucket_cors_rules(bucket_settings)
        [rule] = applied["CORSRules"]
        assert rule["AllowedOrigins"] == list(DEVELOPMENT_CORS_ORIGINS)
        assert rule["ExposeHeaders"] == ["ETag"]

        post = await storage.upload_target(
            "originals/1/s3-cors",
            content_type="image/png",
            max_bytes=1024,
            declared_bytes=len(PNG),
            expires_in=600,
        )
        multipart = await storage.upload_target(
            "originals/1/s3-video",
            content_type="video/mp4",
            max_bytes=20 * 1024 * 1024,
            declared_bytes=10 * 1024 * 1024,
            expires_in=600,
            multipart=True,
        )
        assert post.method == "POST" and multipart.part_urls
        async with httpx.AsyncClient() as http:
            for url, method in ((post.url, "POST"), (multipart.part_urls[0], "PUT")):
                allowed = await http.options(url, headers=preflight(method, headers="content-type"))
                assert allowed.status_code == 200, allowed.text
                assert allowed.headers["access-control-allow-origin"] == PAGE
                assert method in allowed.headers["access-control-allow-methods"]
                assert "ETag" in allowed.headers["access-control-expose-headers"]
                for origin in NOT_ALLOWED:
                    refused = await http.options(url, headers=preflight(method, origin))
                    assert refused.status_code == 403
                    assert "access-control-allow-origin" not in refused.headers
            # A part PUT from the page: its answer lets the page read the ETag.
            part = await http.put(
                multipart.part_urls[0], content=b"\x00" * 1024, headers={"Origin": PAGE}
            )
            assert part.status_code == 200
            assert part.headers["etag"]
            assert part.headers["access-control-allow-origin"] == PAGE
            assert "ETag" in part.headers["access-control-expose-headers"]
        if multipart.upload_id:
            await storage.abort_multipart("originals/1/s3-video", multipart.upload_id)
    finally:
        await storage.close()


def test_print_cors_needs_cors_allow_origins_and_a_valid_env(monkeypatch, capsys):
    for name in ("ENV", "CORS_ALLOW_ORIGINS", "ALLOWED_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    # Unset: the development default (localhost) is never printed for a real bucket.
    with pytest.raises(SystemExit, match="set CORS_ALLOW_ORIGINS") as unset:
        print_cors()
    assert unset.value.code != 0
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", "")
    with pytest.raises(SystemExit, match="names no origin"):
        print_cors()
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", "https://app.example.com")
    monkeypatch.setenv("ENV", "prod")  # a typo
    with pytest.raises(SystemExit, match="ENV must be"):
        print_cors()
    monkeypatch.setenv("ENV", "production")
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", "app.example.com")
    with pytest.raises(SystemExit, match="not an origin"):
        print_cors()
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", "https://app.example.com,http://localhost:*")
    print_cors()
    [rule] = orjson.loads(capsys.readouterr().out)["CORSRules"]
    assert rule["AllowedOrigins"] == ["https://app.example.com", "http://localhost:*"]
    assert rule["MaxAgeSeconds"] == PREFLIGHT_MAX_AGE_SECONDS


def print_cors_command(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra.storage", "--print-cors"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_print_cors_from_the_command_line():
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("ENV", "CORS_ALLOW_ORIGINS", "ALLOWED_ORIGINS")
    }
    unset = print_cors_command(env)
    assert unset.returncode != 0
    assert "set CORS_ALLOW_ORIGINS" in unset.stderr
    assert not unset.stdout
    configured = print_cors_command(
        {**env, "ENV": "production", "CORS_ALLOW_ORIGINS": "https://app.example.com"}
    )
    assert configured.returncode == 0, configured.stderr
    assert orjson.loads(configured.stdout)["CORSRules"][0]["AllowedOrigins"] == [
        "https://app.example.com"
    ]
