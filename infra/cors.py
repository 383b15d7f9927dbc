"""Which web origins may call the API from a browser, and the CORS answers that say so.

One list (`CORS_ALLOW_ORIGINS`, docs/front-end.md) serves three gates: the CORS
headers of `/graphql`, `/uploads/...` and `/media/...` (Starlette's CORSMiddleware,
narrowed to those routes and their methods), the `Origin` check of WebSocket upgrades on `/graphql`,
and the S3 bucket's CORS rules (`infra.storage.bucket_cors_rules`).

An entry is an origin (`https://app.example.com`), an origin whose port is `*`
(`http://localhost:*`: any port, the default one included), or a lone `*` (any
origin). Auth travels as a bearer token, never a cookie, so no answer allows
credentials: a page on an allowed origin can do only what its own token allows.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

# Starlette's own routing uses it (there is no public equivalent): the request path
# relative to the app's root path.
from starlette._utils import get_route_path
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schema.graphql_http import GRAPHQL_METHODS, GRAPHQL_PATH

# `scheme://host[:port|:*]`: the host is a name, an IPv4 address or a bracketed IPv6
# address; nothing after it (browsers send origins without a path).
_ENTRY = re.compile(
    r"(?P<scheme>https?)://(?P<host>[a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\])"
    r"(?::(?P<port>\*|[0-9]{1,5}))?",
    re.IGNORECASE,
)
_DEFAULT_PORTS = {"http": "80", "https": "443"}

# What browser clients send besides the CORS-safelisted headers: the bearer token, the
# request id our logs and errors carry, Apollo Client's identification and
# CSRF-prevention headers (sent by default by Apollo Client and Apollo Kotlin/iOS), and
# the trace-context headers tracing SDKs add to every fetch (W3C Trace Context and
# Baggage: OpenTelemetry's browser instrumentation; Sentry's own). CORS_ALLOW_HEADERS
# adds more.
ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "X-Request-ID",
    "apollographql-client-name",
    "apollographql-client-version",
    "apollo-require-preflight",
    "x-apollo-operation-name",
    "traceparent",
    "tracestate",
    "baggage",
    "sentry-trace",
)
# A browser completing a multipart upload reads each part's ETag; X-Request-ID lets a
# client quote the id of a failed request.
EXPOSED_HEADERS = ("ETag", "X-Request-ID")
# Chromium caps a preflight's cache at 2 hours, Firefox at 24: ask for the longer.
# Upload URLs are unique per upload, so their preflight is paid once per file anyway.
PREFLIGHT_MAX_AGE_SECONDS = 86400
# RFC 9110's `token`: what a header name may be.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def allowed_headers(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """ALLOWED_HEADERS and the `extra` names (CORS_ALLOW_HEADERS). Raises ValueError on an
    entry that is not a header name (`*` included: list the headers)."""
    names = list(ALLOWED_HEADERS)
    for name in extra:
        if name == "*" or not _HEADER_NAME.fullmatch(name):
            raise ValueError(
                f"CORS_ALLOW_HEADERS: {name!r} is not a header name; list header names, "
                "comma-separated (e.g. 'X-Client-Build, X-Feature-Flags')"
            )
        names.append(name)
    return tuple(dict.fromkeys(names))


def cors_routes() -> dict[str, tuple[str, ...]]:
    """`{route: methods}` for the routes a page on another origin calls, with the methods
    their preflights allow: each route's own, from the module that defines the route:
    /graphql's (`schema.graphql_http`) and the local storage backend's uploads and
    media (`infra.storage`; HEAD needs no preflight, but a page may name it). A route
    ending in `/` is a prefix. Everything else (/healthz, /metrics, the web client's
    own files) answers no CORS header."""
    # Imported here: infra.storage imports this module (for the bucket's CORS rules).
    from infra.storage import LOCAL_STORAGE_ROUTE_METHODS

    return {GRAPHQL_PATH: GRAPHQL_METHODS, **LOCAL_STORAGE_ROUTE_METHODS}


def route_of(path: str, routes: Iterable[str]) -> str | None:
    """The route of `routes` (`cors_routes`' keys) this path belongs to, or None."""
    for route in routes:
        if path == route or (route.endswith("/") and path.startswith(route)):
            return route
    return None


class OriginList:
    """The allowed origins, parsed once; `allows(origin)` for an `Origin` header.

    `OriginList(["http://localhost:*"]).allows("http://localhost:5173")` is True;
    `"http://localhost.evil.com:5173"` and `"https://localhost:5173"` are not allowed.
    Raises ValueError on an entry that is not an origin.
    """

    def __init__(self, entries: Iterable[str]) -> None:
        self.entries = tuple(entries)
        self.any = "*" in self.entries
        patterns: list[str] = []
        normalized: list[str] = []
        for entry in self.entries:
            if entry == "*":
                normalized.append(entry)
                continue
            match = _ENTRY.fullmatch(entry)
            if match is None:
                raise ValueError(
                    f"CORS_ALLOW_ORIGINS: {entry!r} is not an origin; write "
                    "'scheme://host' or 'scheme://host:port', with '*' for any port "
                    "(e.g. 'http://localhost:*'), or a lone '*' for any origin"
                )
            scheme, host = match["scheme"].lower(), match["host"].lower()
            base = re.escape(f"{scheme}://{host}")
            port = match["port"]
            if port == "*":
                patterns.append(base + r"(?::[0-9]{1,5})?")
                normalized.append(f"{scheme}://{host}:*")
            elif port is None or int(port) == int(_DEFAULT_PORTS[scheme]):
                patterns.append(base)  # browsers leave the default port out
                normalized.append(f"{scheme}://{host}")
            else:
                patterns.append(base + re.escape(f":{int(port)}"))
                normalized.append(f"{scheme}://{host}:{int(port)}")
        # As browsers write them (lower case, no default port), for S3's CORS rules,
        # whose single `*` wildcard reads `http://localhost:*` the same way.
        self.normalized = tuple(dict.fromkeys(normalized))
        # Browsers send origins in lower case: matched as sent, exactly.
        self.regex = "|".join(f"(?:{p})" for p in patterns) if patterns else None
        self._compiled = re.compile(self.regex) if self.regex else None

    def allows(self, origin: str) -> bool:
        if self.any:
            return True
        return self._compiled is not None and self._compiled.fullmatch(origin) is not None

    def __bool__(self) -> bool:
        return bool(self.entries)


class CrossOriginMiddleware:
    """Starlette's CORSMiddleware on the routes a browser page calls (`cors_routes`), one
    instance per route so each preflight advertises that route's methods.

    Being middleware, it answers every preflight on those paths itself, including one
    for a route that takes PUT only, and it adds the headers to every answer, errors
    included, so a page can read why a request failed. An exception that would become
    a bare 500 is answered here (with the headers) and raised on for the server's log.

    A request without `Origin` (every non-browser client, and same-origin GETs) passes
    straight through: it gets no CORS header, and costs one scan of its headers. The
    cacheable answers (GET /graphql, /media) say `Vary: Origin` themselves. Install it
    only when some origin is allowed (`app.create_app`).
    """

    def __init__(self, app: ASGIApp, *, origins: OriginList, headers: Iterable[str] = ()) -> None:
        self.app = app
        request_headers = allowed_headers(headers)
        self.routes = {
            route: CORSMiddleware(
                app,
                allow_origins=("*",) if origins.any else (),
                allow_origin_regex=origins.regex,
                allow_methods=methods,
                allow_headers=request_headers,
                expose_headers=EXPOSED_HEADERS,
                max_age=PREFLIGHT_MAX_AGE_SECONDS,
            )
            for route, methods in cors_routes().items()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_origin(scope["headers"]):
            await self.app(scope, receive, send)
            return
        # The path the router matches: without the root path of a server mounted under a
        # prefix (`uvicorn --root-path /api`).
        route = route_of(get_route_path(scope), self.routes)
        if route is None:
            await self.app(scope, receive, send)
            return
        cors = self.routes[route]
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                _merge_vary(message)
            await send(message)

        try:
            await cors(scope, receive, watch)
        except Exception:
            if not started:
                # Starlette's ServerErrorMiddleware (outside this one) would send the same
                # words without CORS headers; seeing the response started, it only
                # re-raises, and the server logs the exception.
                error = PlainTextResponse("Internal Server Error", status_code=500)
                with_cors = functools.partial(
                    cors.send, send=watch, request_headers=Headers(scope=scope)
                )
                await error(scope, receive, with_cors)
            raise


def _has_origin(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    # ASGI header names are lower case. A loop, not any(): this runs on every request.
    for name, _ in headers:
        if name == b"origin":
            return True
    return False


def _merge_vary(message: Message) -> None:
    """One `Vary` header without repeats: the answer's own `Vary: Accept, Origin` and the
    `Origin` CORSMiddleware appends."""
    headers = MutableHeaders(scope=message)
    values = headers.getlist("vary")
    if not values:
        return
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    merged = ", ".join(dict.fromkeys(names, None))
    if len(values) > 1 or merged != values[0]:
        del headers["vary"]
        headers["Vary"] = merged


__all__ = [
    "ALLOWED_HEADERS",
    "EXPOSED_HEADERS",
    "CrossOriginMiddleware",
    "OriginList",
    "allowed_headers",
    "cors_routes",
]
