"""A worker killed mid-job: its replacement finishes the post at once (the start-up sweep),
not after arq's own retry (~job timeout + 10 s later); the post is fanned out once.

And the sweeper's rules, each on a real post, queue and heartbeat: a post a live worker
is on is never retried, one a dead worker left is retried at once, one whose job was
lost after a grace period, one whose job is still queued is left to it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import text

from settings import ROOT, Settings
from tests.conftest import Server
from tests.media_samples import jpeg_bytes
from tests.posting import POST, create_post, publish, upload, wait_for_post
from workers import liveness
from workers.jobs import enqueue_process_post, process_post_job_id
from workers.media import retry_dead_workers_posts, sweep_posts

FEED = "{ feed(first: 50) { edges { node { id } } } }"
ATTEMPTS = "SELECT processing_attempts FROM posts WHERE id = :id"
FAN_OUT_ROWS = "SELECT count(*) FROM outbox WHERE kind = 'fan_out' AND payload->>'post_id' = :id"
POST_COUNT = "SELECT post_count FROM users WHERE id = (SELECT author_id FROM posts WHERE id = :id)"


@contextmanager
def worker_process(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """`arq workers.WorkerSettings` as production runs it, configured by environment, with
    the default processing timeout (600 s) and sweep interval (60 s): only the start-up
    sweep can finish a killed worker's post within this test."""
    env = dict(
        os.environ,
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        SECRET_KEY=settings.secret_key,
        STORAGE_BACKEND="local",
        MEDIA_ROOT=str(settings.media_root),
        PUBLIC_BASE_URL=settings.public_base_url,
    )
    for name in ("PROCESSING_TIMEOUT_SECONDS", "SWEEP_EVERY_SECONDS", "JOB_TIMEOUT_SECONDS"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "arq", "workers.WorkerSettings"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


async def _attempts(server: Server, pk: int) -> int:
    async with server.engine.connect() as conn:
        return int(await conn.scalar(text(ATTEMPTS), {"id": pk}))


async def test_a_killed_workers_post_is_finished_by_its_replacement_at_once(server, gql, factory):
    # Given a follower, and a worker that has started on a post of three 12 MP photos.
    author, follower = await factory.user("author"), await factory.user("follower")
    await factory.follow(follower, author)
    photo = jpeg_bytes(4000, 3000)
    with worker_process(server.settings) as first:
        post_id = await publish(gql, author.token, [("image/jpeg", photo)] * 3)
        async with asyncio.timeout(30):
            while True:  # until the worker has noted the post's job as its own
                if owners := await server.redis.keys("worker:job:process_post:*"):
                    break
                await asyncio.sleep(0.02)
        owner_key = owners[0].decode() if isinstance(owners[0], bytes) else owners[0]
        pk = int(owner_key.split(":")[3])
        # When it is killed mid-job.
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert (await gql(POST, token=author.token, id=post_id))["post"]["status"] == "PROCESSING"
    # arq's own retry of the killed job would come only after its in-progress key expires.
    in_progress = await server.redis.keys("arq:in-progress:*")
    assert in_progress and await server.redis.ttl(in_progress[0]) > 60

    # Then a replacement worker's start-up sweep retries it, and it ends READY (long before
    # arq's retry or the 600 s processing timeout), after exactly one more attempt.
    with worker_process(server.settings):
        post = await wait_for_post(gql, author.token, post_id)
        assert post["status"] == "READY", post["failureReason"]
        assert len(post["media"]) == 3 and all(m["feed"] for m in post["media"])
        assert await _attempts(server, pk) == 2
        # And it reaches the follower's feed.
        async with asyncio.timeout(30):
            while True:
                ids = [
                    e["node"]["id"]
                    for e in (await gql(FEED, token=follower.token))["feed"]["edges"]
                ]
                if post_id in ids:
                    break
                await asyncio.sleep(0.1)
    # Made READY once (the author's post count moved once), so fanned out once: one
    # fan-out event for it in the outbox, whose job id is one per post.
    async with server.engine.connect() as conn:
        assert await conn.scalar(text(FAN_OUT_ROWS), {"id": str(pk)}) == 1
        assert await conn.scalar(text(POST_COUNT), {"id": pk}) == 1


async def _processing_post(server: Server, gql: Any, token: str, *, age: float) -> int:
    """A post in PROCESSING since `age` seconds ago, with no job and no worker."""
    data = jpeg_bytes(64, 64)
    created = await create_post(gql, token, [("image/jpeg", data)])
    await upload(created["uploads"][0], data)
    async with server.engine.begin() as conn:
        pk = await conn.scalar(
            text(
                "UPDATE posts SET status = 'PROCESSING', processing_attempts = 1,"
                " status_changed_at = now() - make_interval(secs => :age) RETURNING id"
            ),
            {"age": age},
        )
    return int(pk)


async def _sweeper(server: Server) -> dict[str, Any]:
    """A sweeping worker's context: beating, and for long enough to judge others by their
    heartbeats (liveness.dead)."""
    me = liveness.WorkerIdentity.current()
    await liveness.beat(server.redis, me, server.settings.worker_heartbeat_seconds)
    return {
        "settings": server.settings,
        "resources": server.resources,
        "worker": me,
        "beating_since": time.monotonic() - 3600,
    }


async def _on_it(server: Server, pk: int, worker: liveness.WorkerIdentity) -> None:
    """`worker` runs the post's current attempt (what arq's on_job_start records)."""
    await liveness.job_started(server.redis, worker, process_post_job_id(pk, 1))


async def _reset(server: Server) -> None:
    async with server.engine.begin() as conn:
        await conn.execute(text("DELETE FROM posts"))
    await server.resources.jobs.flushdb()


async def test_the_sweeper_retries_only_posts_no_live_worker_or_queued_job_has(
    server, gql, factory
):
    author = await factory.user("author")
    ctx = await _sweeper(server)
    me: liveness.WorkerIdentity = ctx["worker"]
    interval = server.settings.worker_heartbeat_seconds
    # A worker on this machine that is gone (no process has its pid and start time).
    dead = liveness.WorkerIdentity(me.host, 2**22 + 1, "1", me.namespace)
    other = liveness.WorkerIdentity("elsewhere", 7, "1", "another-machine")
    await liveness.beat(server.redis, other, interval)
    # Its heartbeat expires by Redis' own clock, two intervals after its last beat.
    assert 0 < await server.redis.ttl(liveness.HEARTBEAT_PREFIX + other.name) <= 2 * interval

    # Given a post another live worker (elsewhere, beating) has been on for two hours:
    # it is left alone, however long it takes.
    await _reset(server)
    pk = await _processing_post(server, gql, author.token, age=7200)
    await _on_it(server, pk, other)
    assert (await sweep_posts(ctx))["retried"] == 0
    # When that worker's heartbeat is gone, but this sweeper has not watched two beats
    # (it just started, or Redis just came back): no one is judged by a missing key.
    await liveness.forget(server.redis, other)
    assert (await sweep_posts({**ctx, "beating_since": time.monotonic()}))["retried"] == 0
    assert (await sweep_posts({**ctx, "beating_since": None}))["retried"] == 0
    # Nor when the sweeper's own heartbeat is missing (Redis lost its keys).
    await liveness.forget(server.redis, me)
    assert (await sweep_posts(ctx))["retried"] == 0
    await liveness.beat(server.redis, me, interval)
    # Then, watching long enough: the post is retried, once.
    assert (await sweep_posts(ctx))["retried"] == 1
    assert await _attempts(server, pk) == 2
    # And not again by the next sweep: attempt 2 is queued.
    assert (await sweep_posts(ctx))["retried"] == 0

    # A post a dead worker on this machine left a second ago: retried at once, even by a
    # worker that has just started (its replacement's start-up sweep), and the dead
    # attempt's owner record goes.
    await _reset(server)
    pk = await _processing_post(server, gql, author.token, age=1)
    await _on_it(server, pk, dead)
    fresh = {**ctx, "beating_since": time.monotonic()}
    assert (await retry_dead_workers_posts(fresh))["retried"] == 1
    assert await liveness.job_owners(server.redis, [process_post_job_id(pk, 1)]) == [None]
    assert await _attempts(server, pk) == 2

    # A post with neither worker nor job: left alone for a grace period (its job is about
    # to be sent), then retried by the full sweep, long before the processing timeout;
    # the every-beat pass leaves it to the full sweep.
    await _reset(server)
    pk = await _processing_post(server, gql, author.token, age=1)
    assert (await sweep_posts(ctx))["retried"] == 0
    async with server.engine.begin() as conn:
        await conn.execute(text("UPDATE posts SET status_changed_at = now() - interval '1 minute'"))
    assert (await retry_dead_workers_posts(ctx))["retried"] == 0
    assert (await sweep_posts(ctx))["retried"] == 1

    # A post whose job is queued (no worker has taken it yet): left to the job.
    await _reset(server)
    pk = await _processing_post(server, gql, author.token, age=60)
    await enqueue_process_post(server.resources.jobs, pk, attempt=1)
    assert (await sweep_posts(ctx))["retried"] == 0
    await server.resources.jobs.flushdb()


async def test_two_sweeps_at_once_retry_an_orphan_once(server, gql, factory):
    """Every worker sweeps: two sweeps that both see a dead worker's post retry it once
    (one attempt counted, one job), not twice."""
    author = await factory.user("author")
    ctx = await _sweeper(server)
    dead = liveness.WorkerIdentity(ctx["worker"].host, 2**22 + 1, "1", ctx["worker"].namespace)
    await _reset(server)
    pk = await _processing_post(server, gql, author.token, age=1)
    await _on_it(server, pk, dead)
    # When two sweeps run at once.
    first, second = await asyncio.gather(sweep_posts(ctx), retry_dead_workers_posts(ctx))
    # Then one of them retried it, after exactly one more attempt.
    assert first["retried"] + second["retried"] == 1
    assert await _attempts(server, pk) == 2
    # And a sweep that saw the old count changes nothing (the database decides).
    from domain import posts as post_domain

    async with server.engine.begin() as conn:
        assert await post_domain.note_retry(conn=conn, post_id=pk, seen_attempts=1) == 0
    assert await _attempts(server, pk) == 2
    await server.resources.jobs.flushdb()


async def test_a_dead_workers_job_mark_is_released_once_and_only_if_still_its(server):
    """`release_dead_workers_jobs` drops arq's in-progress mark only while the job is still
    recorded as the dead worker's: atomically (a Lua script), so two recoverers at once
    release it once, and a job another worker has started since keeps its mark."""
    me = liveness.WorkerIdentity.current()
    interval = server.settings.worker_heartbeat_seconds
    await liveness.beat(server.redis, me, interval)
    dead = liveness.WorkerIdentity(me.host, 2**22 + 1, "1", me.namespace)
    live = liveness.WorkerIdentity("elsewhere", 7, "1", "another-machine")
    await liveness.beat(server.redis, live, interval)
    mark = liveness.IN_PROGRESS_PREFIX + "fan_out:42"
    await server.redis.set(mark, b"1", ex=600)
    await liveness.job_started(server.redis, dead, "fan_out:42")

    async def release() -> list[str]:
        return await liveness.release_dead_workers_jobs(
            server.redis, me, interval, watched_for=3600
        )

    # Two recoverers at once: the job is released by one of them.
    first, second = await asyncio.gather(release(), release())
    assert sorted(first + second) == ["fan_out:42"]
    assert not await server.redis.exists(mark)
    # When a live worker has started it again, its mark stays.
    await server.redis.set(mark, b"1", ex=600)
    await liveness.job_started(server.redis, live, "fan_out:42")
    assert await release() == []
    assert await server.redis.exists(mark)
    await server.redis.delete(mark, liveness.JOB_OWNER_PREFIX + "fan_out:42")
    await liveness.forget(server.redis, live)


async def test_any_other_job_of_a_killed_worker_runs_again_at_once(server, gql, factory):
    """The generic path (workers.liveness.release_dead_workers_jobs), shown on a story:
    its job is not re-enqueued by a sweeper; arq runs the same job again once the
    replacement drops the dead worker's in-progress mark."""
    from tests.test_stories import STORY, post_story, wait_for_story

    author = await factory.user("author")
    with worker_process(server.settings) as first:
        story_id = await post_story(gql, author.token, "image/jpeg", jpeg_bytes(4000, 3000))
        async with asyncio.timeout(30):
            while True:  # until the worker has noted the job as its own
                if await server.redis.keys("worker:job:process_story:*"):
                    break
                await asyncio.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    in_progress = await server.redis.keys("arq:in-progress:process_story:*")
    assert in_progress and await server.redis.ttl(in_progress[0]) > 60
    assert (await gql(STORY, token=author.token, id=story_id))["node"]["status"] == "PROCESSING"

    with worker_process(server.settings):
        story = await wait_for_story(gql, author.token, story_id)
    assert story["status"] == "READY", story["failureReason"]
    assert story["media"]["full"]
