"""Observability (issue 10, point 8): /metrics has errors by code, feed reads by how they
were served, queue depth and outbox backlog; the worker has job durations and the
fan-out lag on its own port; log lines are JSON with the id of the request that caused
them, in the jobs it caused too."""

from __future__ import annotations

import io
import json
import logging
import re
import socket

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from infra.ids import to_global_id
from infra.logs import RequestIdFilter, formatter
from infra.metrics import serve_worker_metrics, stop_worker_metrics
from tests.conftest import make_worker
from workers.feed import relay_outbox
from workers.settings import shutdown, startup

LIKE = "mutation ($id: ID!) { likePost(postId: $id) { errors { code } } }"
FEED = "{ feed(first: 5) { edges { node { id } } } }"


class Capture(logging.StreamHandler):
    """A handler of this test's own, which `configure_logging` leaves in place."""


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def scrape(http: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await http.get("/metrics")
    assert response.status_code == 200
    return samples(response.text)


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_errors_by_code_and_feed_reads_by_how_they_were_served(
    server, http, factory
):
    reader = factory.token_for((await factory.user("reader")).pk)
    before = await scrape(http)

    # Given an anonymous feed read (UNAUTHENTICATED)...
    await http.post("/graphql", json={"query": FEED})
    # ...and a signed-in reader's feed twice: rebuilt from PostgreSQL, then from Redis.
    for _ in range(2):
        response = await http.post(
            "/graphql", json={"query": FEED}, headers={"Authorization": f"Bearer {reader}"}
        )
        assert "errors" not in response.json(), response.text
    after = await scrape(http)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("instagraph_errors_total", code="UNAUTHENTICATED", where="graphql") >= 1
    assert grew("instagraph_feed_reads_total", result="miss") >= 1
    assert grew("instagraph_feed_reads_total", result="rebuild") >= 1
    assert grew("instagraph_feed_reads_total", result="hit") >= 1


async def test_metrics_report_the_outbox_backlog_and_the_queue_depth(server, http, factory):
    author = await factory.user("author")
    await factory.ready_post(author)  # one unsent fan_out row
    found = await scrape(http)
    assert value(found, "instagraph_outbox_backlog") == 1
    assert value(found, "instagraph_outbox_oldest_unsent_seconds") >= 0

    # When the relay sends it, the row becomes one queued fan-out job.
    ctx: dict = {"settings": server.settings}
    await startup(ctx)
    try:
        assert await relay_outbox(ctx) == 1
    finally:
        await shutdown(ctx)
    found = await scrape(http)
    assert value(found, "instagraph_outbox_backlog") == 0
    assert value(found, "instagraph_queue_depth") == 1


async def test_jobs_log_json_lines_with_the_request_id_and_are_timed(server, http, factory):
    author, fan = await factory.user("author"), await factory.user("fan")
    post_id = await factory.ready_post(author)
    async with server.engine.begin() as conn:  # only the like's notification is of interest
        await conn.execute(text("UPDATE outbox SET sent_at = now()"))

    lines = io.StringIO()
    handler = Capture(lines)  # the worker's start-up (re)configures logging: not ours
    handler.setFormatter(formatter("json"))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    ctx: dict = {"settings": server.settings}
    await startup(ctx)
    try:
        # Given a like sent with the client's request id...
        request_id = "a" * 8 + "-like-trace-0001"
        response = await http.post(
            "/graphql",
            json={"query": LIKE, "variables": {"id": to_global_id("Post", post_id)}},
            headers={"Authorization": f"Bearer {fan.token}", "X-Request-ID": request_id},
        )
        assert response.json()["data"]["likePost"]["errors"] == []
        assert response.headers["x-request-id"] == request_id
        # ...when the relay hands its outbox row to the worker and the worker runs it...
        assert await relay_outbox(ctx) >= 1
        worker = make_worker(server.settings, burst=True)
        await worker.main()
        await worker.close()
    finally:
        await shutdown(ctx)
        root.removeHandler(handler)
        root.setLevel(old_level)

    # ...then the job's log line is JSON and names the request that caused it.
    records = [json.loads(line) for line in lines.getvalue().splitlines() if line.startswith("{")]
    done = [r for r in records if r.get("job") == "deliver_notifications"]
    assert done, records
    assert all(r["request_id"] == request_id for r in done)
    assert {"time", "level", "logger", "message"} <= done[-1].keys()

    # And its duration is in the job histogram (the worker runs in this process here).
    port = free_port()
    metrics_server = serve_worker_metrics(port)
    try:
        async with httpx.AsyncClient() as client:
            page = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    finally:
        stop_worker_metrics(metrics_server)
    found = samples(page)
    assert (
        value(
            found,
            "instagraph_job_duration_seconds_count",
            job="deliver_notifications",
            outcome="ok",
        )
        >= 1
    )


async def test_the_fan_out_lag_is_measured_from_the_ready_commit(server, factory):
    author, reader = await factory.user("author"), await factory.user("reader")
    await factory.follow(reader, author)
    before = _lag_count()
    await factory.ready_post(author)
    ctx: dict = {"settings": server.settings}
    await startup(ctx)
    try:
        assert await relay_outbox(ctx) == 1
        worker = make_worker(server.settings, burst=True)
        await worker.main()
        await worker.close()
    finally:
        await shutdown(ctx)
    assert _lag_count() == before + 1


def _lag_count() -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("instagraph_fan_out_lag_seconds_count") or 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_text_lines_carry_the_request_and_the_job_too():
    from infra.logs import request_context

    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(formatter("text"))
    handler.addFilter(RequestIdFilter())
    log = logging.getLogger("instagraph.test-observability")
    log.addHandler(handler)
    log.propagate = False
    try:
        with request_context("r-1", "fan_out_post"):
            log.warning("inside")
        log.warning("outside")
    finally:
        log.removeHandler(handler)
    inside, outside = lines.getvalue().splitlines()
    assert re.search(r"\[job fan_out_post req r-1\] inside$", inside)
    assert outside.endswith(" outside") and "[" not in outside
