"""Prometheus metrics: request counts and latencies per route family, at /metrics."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "instagraph_http_requests_total", "HTTP requests.", ["route", "method", "status"]
)
LATENCY = Histogram(
    "instagraph_http_request_duration_seconds",
    "HTTP request latency.",
    ["route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


GRAPHQL_EXECUTIONS = Counter(
    "instagraph_graphql_executions_total",
    "GraphQL HTTP requests by executor: compiled (the lean path) or strawberry.",
    ["executor"],
)
COMPILED = GRAPHQL_EXECUTIONS.labels("compiled")
STRAWBERRY = GRAPHQL_EXECUTIONS.labels("strawberry")


def route_family(path: str) -> str:
    """The first path segment: bounded label cardinality (upload keys never become labels)."""
    return "/" + path.strip("/").split("/", 1)[0]


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = route_family(scope["path"])
            REQUESTS.labels(route, scope["method"], str(status)).inc()
            LATENCY.labels(route).observe(time.perf_counter() - started)


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
