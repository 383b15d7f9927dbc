"""The ASGI application: `uvicorn app:app`.

Routes: /graphql (HTTP and graphql-transport-ws WebSocket; GraphiQL in
development), /healthz (process alive), /readyz (PostgreSQL and Redis reachable).
The lifespan opens the engine and the Redis pool. With no DATABASE_URL or
REDIS_URL in development it starts the embedded servers itself, so even a bare
`uvicorn app:app` runs (`make run` starts them once and shares them instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

import orjson
from cross_web import AsyncHTTPRequestAdapter, HTTPException, StarletteRequestAdapter
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.parse_content_type import parse_content_type
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types.unset import UNSET

from domain.uploads import PendingUploadGate
from infra.cors import CrossOriginMiddleware, OriginList, allowed_headers
from infra.logs import configure_logging, request_context
from infra.metrics import STRAWBERRY, MetricsMiddleware, metrics
from infra.resources import Resources
from infra.security import user_id_from_authorization
from infra.storage import LocalStorage, create_storage, local_storage_routes
from schema import create_schema
from schema.compiler import DocumentCompiler
from schema.context import Context
from schema.documents import DocumentRegistry, PersistedQueryError
from schema.fast_path import DOCUMENT_IDS, FastPath
from schema.graphql_http import (
    GRAPHQL_PATH,
    JSON,
    check_request_body,
    graphql_response,
    http_error_response,
    mutation_over_get,
    negotiate,
    parse_request_json,
    persisted_query_error_response,
    subscription_not_streamed,
)
from schema.request_limits import RequestLimitsMiddleware
from schema.websocket import GraphQLTransportWSHandler, GraphQLWSHandler, TextFrameWebSocketAdapter
from settings import ROOT, Settings, get_settings
from workers import liveness

log = logging.getLogger("instagraph")

WEB_ROOT = ROOT / "web"

# The JSON body `GraphQLApp.parse_http_body` parsed and checked, with the bytes it came
# from, for Strawberry's own parse of the same body in this request's task.
_CHECKED_BODY: contextvars.ContextVar[tuple[str | bytes, object] | None] = contextvars.ContextVar(
    "checked_body", default=None
)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# What the web client's page may load and call (web/README.md): its own scripts and
# styles only; the API on any origin (`?api=`), over HTTP(S) and its WebSocket; images
# and videos from the API, the bucket or a CDN, and the `blob:` previews of files being
# posted. Nothing may frame it, and it has no plug-ins or `<base>`.
WEB_APP_CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob: http: https:",
        "media-src 'self' data: blob: http: https:",
        "connect-src 'self' http: https: ws: wss:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
WEB_APP_HEADERS = {
    # Revalidated on every load (the ETag makes that a 304): after a pull or a deploy a
    # browser never runs a new module with an old one it kept (documents.js with api.js).
    "Cache-Control": "no-cache",
    "Content-Security-Policy": WEB_APP_CSP,
    "X-Content-Type-Options": "nosniff",
}


class WebAppFiles(StaticFiles):
    """The web client's static files (web/), with WEB_APP_HEADERS on every answer, 304s
    included."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(WEB_APP_HEADERS)
        return response


class RequestIdMiddleware:
    """Give every request an id (the client's X-Request-ID if sane), echo it back, and
    make it available to logs and masked errors."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        # Log lines of this request, and the jobs it enqueues, carry its id (infra/logs.py).
        with request_context(request_id):
            await self.app(scope, receive, send_with_id)


class RequestAdapter(StarletteRequestAdapter):
    """Strawberry's adapter, keeping the Starlette request in sight (the persisted
    document the fast path resolved travels on its `state`)."""

    def __init__(self, request: Request) -> None:
        super().__init__(request)
        self.starlette_request = request


class GraphQLApp(GraphQL[Context, None]):
    """Strawberry's ASGI view with our context, auth, a faster JSON encoder, persisted
    documents, and the compiled fast path in front (`schema.fast_path`): requests it
    serves never reach Strawberry's machinery; every other request does, unchanged.
    Both answer with the media types and status codes of `schema.graphql_http`."""

    # Text frames only, every client message checked, and the WebSocket limits
    # (schema/websocket.py, docs/subscriptions.md).
    websocket_adapter_class = TextFrameWebSocketAdapter
    graphql_transport_ws_handler_class = GraphQLTransportWSHandler
    graphql_ws_handler_class = GraphQLWSHandler
    request_adapter_class = RequestAdapter
    # Set by the lifespan once Redis (for registered documents) is there.
    fast_path: FastPath | None = None

    def __init__(self, *args: Any, origins: OriginList, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Pages on these origins may open the WebSocket (the CORS list, infra/cors.py).
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope=scope, receive=receive)
        response: Response | WebSocket
        try:
            response = await self.run(request)
        except HTTPException as error:
            media_type = negotiate(request.headers.get("accept"))
            refused = error.__cause__
            if isinstance(refused, InvalidOperationTypeError):
                # A mutation or subscription over GET, or a subscription over a POST
                # that does not stream (`InstagraphSchema.execute`): nothing ran.
                if request.method == "GET":
                    response = mutation_over_get(refused.operation_type.value, media_type)
                else:
                    response = subscription_not_streamed(media_type)
            else:
                response = http_error_response(error.status_code, error.reason, media_type)
        assert isinstance(response, Response)  # an HTTP request gets an HTTP response
        await response(scope, receive, send)

    async def run(  # type: ignore[override]  # Strawberry's overloads split HTTP from WS
        self, request: Request | WebSocket, context: Any = UNSET, root_value: Any = UNSET
    ) -> Response | WebSocket:
        if self.fast_path is not None and isinstance(request, Request):
            response = await self.fast_path.handle(request, self._http_context)
            if response is not None:
                return response
            STRAWBERRY.inc()
        try:
            return await super().run(request, context, root_value)
        except PersistedQueryError as error:  # from parse_http_body, for Strawberry's path
            return persisted_query_error_response(error, negotiate(request.headers.get("accept")))

    def is_websocket_origin_allowed(self, request: WebSocket, origin: str) -> bool:
        """Asked by Strawberry for cross-origin handshakes only: one without `Origin` (a
        non-browser client) or from the API's own origin is allowed before it asks."""
        return self.origins.allows(origin)

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        """The response resolvers may add headers to, carrying the media type the client
        accepts for `create_response`."""
        sub_response = await super().get_sub_response(request)
        sub_response.media_type = negotiate(request.headers.get("accept"))
        return sub_response

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        """Strawberry's response, with the status and media type chosen by the one rule
        the fast path follows too (`schema.graphql_http.graphql_response`)."""
        response = graphql_response(response_data, sub_response.media_type or JSON)
        response.headers.raw.extend(sub_response.headers.raw)
        if sub_response.background:
            response.background = sub_response.background
        if sub_response.status_code:
            response.status_code = sub_response.status_code
        return response

    def should_render_graphql_ide(self, request: Any) -> bool:
        """Not for a GET that names its document by hash or id (Apollo Client's hashed
        GETs and curl send `Accept: */*`, which Strawberry takes for a browser)."""
        params = request.query_params
        if any(params.get(name) is not None for name in ("extensions", *DOCUMENT_IDS)):
            return False
        return bool(super().should_render_graphql_ide(request))

    def is_streaming(self, headers: Mapping[str, str]) -> bool:
        """Whether Strawberry streams the answer to a request with these headers."""
        return self._get_stream_transport_from_headers(headers) is not None

    async def _http_context(self, request: Request) -> Context:
        return await self.get_context(request, Response())

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        """Strawberry's parsing, with persisted references resolved to their documents.

        A JSON body is first parsed and held to `check_request_body` (an object or a
        batch whose parameters have their types, else a 400), which Strawberry does not
        do: `null` or `5` would end in an AttributeError and a 500. Strawberry then reads
        the body parsed here (`parse_json`), not a second parse of it; the fast path
        checks the body it parsed itself, by the same rules."""
        token = None
        if request.method == "POST":
            content_type, _ = parse_content_type(request.content_type or "")
            if JSON in content_type:  # Strawberry's test for a JSON body
                body = await request.get_body()
                token = _CHECKED_BODY.set((body, check_request_body(parse_request_json(body))))
        try:
            data = await super().parse_http_body(request)
        finally:
            if token is not None:
                _CHECKED_BODY.reset(token)
        if self.fast_path is not None:
            assert isinstance(request, RequestAdapter)  # our request_adapter_class
            for item in data if isinstance(data, list) else [data]:
                # A PersistedQueryError goes up to `run`, which answers it as JSON.
                item.query = await self.fast_path.resolve_document(
                    request.starlette_request, item.query, item.extensions
                )
        return data

    def parse_json(self, data: str | bytes) -> Any:
        """The fast path's parser instead of Strawberry's (`parse_request_json`: invalid
        UTF-8, a 5,000-digit number or JSON nested too deeply is a 400 like any
        unreadable body, not a ValueError or RecursionError and a 500), and the body
        `parse_http_body` has just parsed and checked is not parsed again."""
        checked = _CHECKED_BODY.get()
        if checked is not None and checked[0] is data:
            return checked[1]
        return parse_request_json(data)

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    async def create_streaming_response(
        self,
        request: Request | WebSocket,
        stream: Callable[[], AsyncIterator[str]],
        sub_response: Response,
        headers: Mapping[str, str],
    ) -> Response:
        """Apollo's multipart subscriptions open with a delimiter, as its router sends them;
        Strawberry starts with the first part's headers, so a strict multipart reader would
        take the first part for preamble and lose it."""
        if "subscriptionSpec" in headers.get("Content-Type", ""):
            parts = stream

            async def opened() -> AsyncIterator[str]:
                yield "\r\n--graphql"
                async for part in parts():
                    yield part

            stream = opened
        return await super().create_streaming_response(request, stream, sub_response, headers)

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        resources: Resources = request.app.state.resources
        viewer_id = None
        if isinstance(request, Request):
            viewer_id = user_id_from_authorization(
                request.headers.get("authorization"), secret=resources.settings.secret_key
            )
        return Context(
            resources=resources,
            request_id=request.scope.get("state", {}).get("request_id") or uuid.uuid4().hex,
            viewer_id=viewer_id,
            request=request,
            response=response if isinstance(response, Response) else None,
        )

    async def on_ws_connect(self, context: Context) -> dict[str, object] | None:
        """Auth over WebSocket: `{"authorization": "Bearer <token>"}` in connection_init."""
        params = context.connection_params if isinstance(context.connection_params, dict) else {}
        header = params.get("authorization") or params.get("Authorization")
        if header:
            viewer_id = user_id_from_authorization(str(header), secret=context.settings.secret_key)
            if viewer_id is None:
                raise ConnectionRejectionError({"code": "UNAUTHENTICATED"})
            context.viewer_id = viewer_id
            context.renew_loaders()
        return None


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def readyz(request: Request) -> Response:
    resources: Resources = request.app.state.resources
    checks: dict[str, str] = {}

    async def check_db() -> None:
        async with resources.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def check_redis() -> None:
        await resources.redis.ping()

    async def run(name: str, check: Callable[[], Awaitable[None]]) -> None:
        try:
            await asyncio.wait_for(check(), timeout=2)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"unavailable: {type(exc).__name__}"

    # At once: a probe waits for the slower of the two, not their sum.
    await asyncio.gather(run("postgres", check_db), run("redis", check_redis))
    # Without Redis the API still serves (reads from PostgreSQL, docs/degradation.md):
    # degraded, but ready, so that it stays in rotation. Without PostgreSQL it is not.
    ready = checks["postgres"] == "ok"
    body: dict[str, Any] = {"ready": ready, "degraded": checks["redis"] != "ok", **checks}
    if checks["redis"] == "ok":
        # Informational: the API serves reads without a worker, so this never fails readiness.
        # A killed worker's heartbeat is reported, but not counted (workers/liveness.py).
        with contextlib.suppress(Exception):
            seen = await liveness.workers(
                resources.redis, resources.settings.worker_heartbeat_seconds
            )
            body["workers"] = sum(worker.alive for worker in seen)
            body["worker_heartbeats"] = [worker.as_json() for worker in seen]
    return JSONResponse(body, status_code=200 if ready else 503)


async def check_redis_config(redis: Any, settings: Settings) -> None:
    """Warn when a feed at the cap would leave Redis' compact sorted-set encoding
    (~20 bytes an entry instead of ~120). Managed Redis may refuse CONFIG: best effort."""
    try:
        config = await redis.config_get("zset-max-*-entries")
    except Exception:
        return
    limits = [int(v) for v in config.values()]
    if limits and max(limits) < settings.feed_cap:
        log.warning(
            "Redis zset-max-listpack-entries is %d, below FEED_CAP %d: full feeds will use "
            "~6x more memory; raise it to at least the cap",
            max(limits),
            settings.feed_cap,
        )


@contextlib.asynccontextmanager
async def embedded_services(settings: Settings) -> AsyncIterator[Settings]:
    """Start embedded servers for whatever URL is missing (development only)."""
    if settings.database_url and settings.redis_url:
        yield settings
        return
    if settings.is_production:
        raise RuntimeError("production needs DATABASE_URL and REDIS_URL")
    from infra.embedded import EmbeddedPostgres, EmbeddedRedis
    from infra.migrate import upgrade_database

    with contextlib.ExitStack() as stack:
        if not settings.database_url:
            pg = stack.enter_context(
                EmbeddedPostgres(settings.data_dir / "postgres", persistent=True)
            )
            settings = replace(settings, database_url=pg.url)
            await asyncio.to_thread(upgrade_database, settings.database_url)
        if not settings.redis_url:
            redis = stack.enter_context(EmbeddedRedis(settings.data_dir / "redis", persistent=True))
            settings = replace(settings, redis_url=redis.url)
        yield settings


def create_app(settings: Settings | None = None) -> Starlette:
    base_settings = settings or get_settings()
    # Checked first: a malformed entry stops the app before anything else starts.
    origins = OriginList(base_settings.cors_origins)
    allowed_headers(base_settings.cors_allow_headers)
    storage = create_storage(base_settings)
    schema = create_schema(base_settings)
    # Compiled on a document's second request: a stream of one-off documents never
    # makes the event loop compile (schema/compiler/operation.py).
    compiler = DocumentCompiler(schema, compile_after=2)
    graphql = GraphQLApp(
        schema,
        graphql_ide=None if base_settings.is_production else "graphiql",
        origins=origins,
        connection_init_wait_timeout=timedelta(seconds=base_settings.ws_init_timeout_seconds),
        max_subscriptions_per_connection=base_settings.ws_max_operations_per_connection,
        # Every protocol a standard client speaks (docs/subscriptions.md): the two
        # WebSocket subprotocols on ws://.../graphql, and Apollo's multipart HTTP
        # subscriptions on POST /graphql with `Accept: multipart/mixed;subscriptionSpec=1.0`.
        subscription_protocols=("graphql-transport-ws", "graphql-ws", "multipart-subscription"),
        # Legacy graphql-ws clients drop a connection that stays silent for 30 s (and
        # proxies idle ones after ~60 s): send its `ka` message well within that.
        keep_alive=True,
        keep_alive_interval=15,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with embedded_services(base_settings) as live:
            resources = Resources.create(live, storage=storage)
            app.state.resources = resources
            app.state.settings = live
            await check_redis_config(resources.redis, live)
            documents = DocumentRegistry.from_settings(
                resources.redis, live, validator=compiler.is_valid
            )
            # Known documents are parsed, validated and compiled once, before any request.
            for document in documents.known_documents():
                compiler.pin(document)
            schema.documents = documents
            graphql.fast_path = FastPath(compiler, documents, streaming=graphql.is_streaming)
            # What start-up built lives as long as the process: out of the collector's
            # sight, a full collection no longer walks ~170k objects (53-93 ms of CPU
            # here, the feed's worst tail; docs/benchmarks.md). And a young-generation
            # collection every 50,000 allocations instead of 700: a feed page allocates
            # thousands of short-lived objects, and with 64 requests in flight the
            # default thresholds promote them and keep collecting (one A/B run of the
            # feed bench's small network: 794 -> 936 req/s at 64 connections, the same
            # at 16; full runs are too noisy to show it; a few MB more memory).
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 20, 100)
            try:
                yield
            finally:
                await resources.close()

    app = Starlette(
        routes=[
            # Every method reaches the view, which answers 405 with `Allow: GET, POST` to
            # the others (HEAD included, which Starlette would add to a GET route).
            Route(GRAPHQL_PATH, graphql),
            WebSocketRoute(GRAPHQL_PATH, graphql),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            # The local backend is the blob store of a single-machine install: it takes
            # uploads and serves renditions itself. With S3 the API never carries bytes.
            # A PUT is taken only for a PENDING post's or story's target (domain/uploads.py).
            *(
                local_storage_routes(storage, gate=PendingUploadGate())
                if isinstance(storage, LocalStorage)
                else []
            ),
            # The reference web client (web/README.md): static files, no build step.
            *(
                [Mount("/app", WebAppFiles(directory=WEB_ROOT, html=True), name="web")]
                if base_settings.web_app
                else []
            ),
        ],
        lifespan=lifespan,
    )
    # Innermost first. Size limits (413, 431) before any route reads the request, with
    # CORS headers on their answers too, so a page can read why it was refused.
    app.add_middleware(
        RequestLimitsMiddleware,
        max_body_bytes=base_settings.max_request_body_bytes,
        max_header_bytes=base_settings.max_request_header_bytes,
        body_timeout_seconds=base_settings.request_body_timeout_seconds,
    )
    # CORS headers go on every answer of its routes, errors included;
    # the request id goes on the preflight answers too. With no origin allowed
    # (production's default) there is nothing to answer: not installed at all.
    if origins:
        app.add_middleware(
            CrossOriginMiddleware, origins=origins, headers=base_settings.cors_allow_headers
        )
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)
    return app


configure_logging(get_settings().log_format)
app: Any = create_app()
