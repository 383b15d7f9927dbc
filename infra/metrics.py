"""Prometheus metrics, at the API's /metrics and at the worker's own port.

API processes: requests and latencies per route family, GraphQL executions by
executor, errors by code, feed reads by how they were served (Redis hit, miss and
rebuild, PostgreSQL fallback), and, read at each scrape, the arq queue depth and the
outbox backlog (both shared by every process: any API process answers them).
Worker processes (`WORKER_METRICS_PORT`): job durations by job and outcome, and the
fan-out lag, from a post's READY commit to the last follower's feed insert.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
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

ERRORS = Counter(
    "instagraph_errors_total",
    "Errors answered, by code: GraphQL errors (`extensions.code`; where=graphql), "
    "requests refused before GraphQL ran (where=http: malformed, too large, persisted "
    "query errors) and mutation payload errors (`errors[].code`; where=payload).",
    ["code", "where"],
)


def count_errors(body: Any, where: str) -> None:
    """Counts the errors of a GraphQL response body by their `extensions.code`."""
    for error in body.get("errors") or ():
        extensions = error.get("extensions") if isinstance(error, dict) else None
        code = extensions.get("code") if isinstance(extensions, dict) else None
        ERRORS.labels(str(code), where).inc()


FEED_READS = Counter(
    "instagraph_feed_reads_total",
    "Home feed pages by how Redis served them: hit (the viewer's feed was there), miss "
    "(it was not: rebuilt, by this read or one it waited for), rebuild (this read rebuilt "
    "it from PostgreSQL), fallback (Redis unavailable: read from PostgreSQL without "
    "writing back), shed (Redis unavailable and too many fallback reads at once: "
    "SERVICE_UNAVAILABLE).",
    ["result"],
)
FEED_HIT = FEED_READS.labels("hit")
FEED_MISS = FEED_READS.labels("miss")

BACKLOG_COUNT_CAP = 1_000_000
SCRAPE_FAILURES = Counter(
    "instagraph_backlog_refresh_failures_total",
    "Scrapes whose queue depth or outbox backlog could not be read (the gauge kept its "
    "last value).",
    ["gauge"],
)
QUEUE_DEPTH = Gauge("instagraph_queue_depth", "arq jobs due now (read at scrape).")
OUTBOX_BACKLOG = Gauge("instagraph_outbox_backlog", "Unsent outbox rows (read at scrape).")
OUTBOX_OLDEST = Gauge(
    "instagraph_outbox_oldest_unsent_seconds", "Age of the oldest unsent outbox row."
)

JOB_DURATION = Histogram(
    "instagraph_job_duration_seconds",
    "arq job durations (worker), by job and outcome (ok, retry, error).",
    ["job", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
FAN_OUT_LAG = Histogram(
    "instagraph_fan_out_lag_seconds",
    "From a post's READY commit to its id in the last follower's feed (worker).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)

log = logging.getLogger("instagraph.metrics")


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


async def refresh_backlog(resources: Any) -> None:
    """Queue depth and outbox backlog, as they are now; left as they were if PostgreSQL or
    Redis does not answer within a second (a scrape never hangs on them)."""
    from sqlalchemy import text

    async def outbox() -> None:
        # Bounded: a backlog of millions costs a scrape no more than BACKLOG_COUNT_CAP
        # index entries (the gauge then says "at least that many"); the oldest row is
        # the one with the lowest id, one index probe.
        async with resources.engine.connect() as conn:
            count = await conn.scalar(
                text(
                    "SELECT count(*) FROM (SELECT 1 FROM outbox WHERE sent_at IS NULL "
                    "LIMIT :cap) unsent"
                ),
                {"cap": BACKLOG_COUNT_CAP},
            )
            age = await conn.scalar(
                text(
                    "SELECT extract(epoch FROM now() - created_at) FROM outbox "
                    "WHERE sent_at IS NULL ORDER BY id LIMIT 1"
                )
            )
        OUTBOX_BACKLOG.set(count or 0)
        OUTBOX_OLDEST.set(float(age or 0))

    async def queue() -> None:
        due = await resources.redis.zcount("arq:queue", "-inf", int(time.time() * 1000))
        QUEUE_DEPTH.set(due)

    for refresh in (outbox, queue):
        try:
            async with asyncio.timeout(1):
                await refresh()
        except Exception as exc:  # a scrape reports what it can
            SCRAPE_FAILURES.labels(refresh.__name__).inc()
            log.warning("metrics: %s not refreshed: %s", refresh.__name__, type(exc).__name__)


async def metrics(request: Request) -> Response:
    resources = getattr(request.app.state, "resources", None)
    if resources is not None:
        await refresh_backlog(resources)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def serve_worker_metrics(port: int, host: str = "127.0.0.1") -> Any:
    """The worker's metrics on their own port (a worker has no HTTP server of its own),
    in a thread; 0 turns it off. Several workers on one host need one port each. Returns
    the server for `stop_worker_metrics`, or None."""
    if port:
        with contextlib.suppress(OSError):
            server, _thread = start_http_server(port, addr=host)
            return server
        log.warning("worker metrics: port %d is taken; not served", port)
    return None


def stop_worker_metrics(server: Any) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()
