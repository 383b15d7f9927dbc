"""arq WorkerSettings: shared resources opened in on_startup and kept in ctx."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from typing import Any, cast

from arq import Retry, cron, func
from arq.connections import RedisSettings
from arq.cron import CronJob
from arq.typing import WorkerCoroutine
from arq.worker import Function

from infra.logs import configure_logging, request_context
from infra.metrics import JOB_DURATION, serve_worker_metrics, stop_worker_metrics
from infra.resources import Resources
from settings import Settings, get_settings
from workers import liveness
from workers.feed import (
    announce_celebrity,
    backfill_author,
    fan_out_post,
    prune_outbox,
    relay_outbox,
)
from workers.jobs import PATIENT_TRIES
from workers.media import (
    delete_late_uploads,
    delete_post_objects,
    process_post,
    retry_dead_workers_posts,
    sweep_posts,
)
from workers.notifications import deliver_notifications
from workers.outbox import follow_changed, post_deleted
from workers.stories import (
    cleanup_stories,
    delete_late_story_uploads,
    process_story,
    sweep_stories,
)

log = logging.getLogger("instagraph.worker")


def observed(job: WorkerCoroutine, *, quiet: bool = False) -> WorkerCoroutine:
    """A job as arq runs it, timed into `instagraph_job_duration_seconds` by outcome, and
    logging under the request id it was enqueued with (`workers.jobs` passes it as the
    `request_id` keyword; infra/logs.py). One log line per run: INFO, or DEBUG when
    `quiet` (the crons: the relay alone runs every second)."""

    level = logging.DEBUG if quiet else logging.INFO

    @functools.wraps(job)
    async def run(ctx: dict[str, Any], *args: Any, request_id: str | None = None, **kw: Any) -> Any:
        name = job.__qualname__
        started = time.perf_counter()
        outcome = "error"
        with request_context(request_id, name):
            try:
                result = await job(ctx, *args, **kw)
                outcome = "ok"
                return result
            except Retry:
                outcome = "retry"
                raise
            finally:
                elapsed = time.perf_counter() - started
                JOB_DURATION.labels(name, outcome).observe(elapsed)
                log.log(level, "job %s: %s in %.3f s", name, outcome, elapsed)

    return cast(WorkerCoroutine, run)


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx.setdefault("settings", get_settings())
    configure_logging(settings.log_format)
    ctx["metrics_server"] = serve_worker_metrics(
        settings.worker_metrics_port, settings.worker_metrics_host
    )
    ctx["resources"] = Resources.create(settings, worker=True)
    ctx["cpu_slots"] = asyncio.Semaphore(os.cpu_count() or 1)
    ctx["max_tries"] = MAX_TRIES
    ctx["worker"] = liveness.WorkerIdentity.current()
    await heartbeat(ctx)
    ctx["beating_since"] = time.monotonic()
    ctx["heartbeats"] = asyncio.create_task(_beat_forever(ctx))
    ctx["recovery"] = asyncio.create_task(_recover_forever(ctx))


async def shutdown(ctx: dict[str, Any]) -> None:
    stop_worker_metrics(ctx.pop("metrics_server", None))
    for name in ("heartbeats", "recovery"):
        task: asyncio.Task[None] | None = ctx.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    with contextlib.suppress(Exception):  # Redis may be the reason we stop
        await liveness.forget(ctx["resources"].redis, ctx["worker"])
    await ctx["resources"].close()


async def heartbeat(ctx: dict[str, Any]) -> None:
    """Record that this worker is alive (workers/liveness.py): /readyz lists workers from
    these, and the sweeper re-runs the posts of a worker that stopped beating."""
    settings: Settings = ctx["settings"]
    await liveness.beat(ctx["resources"].redis, ctx["worker"], settings.worker_heartbeat_seconds)


async def _beat_forever(ctx: dict[str, Any]) -> None:
    """A task of this process, not an arq cron: a cron job goes through the shared queue
    (any worker may run it, writing its own heartbeat) and waits behind max_jobs."""
    interval = max(1, ctx["settings"].worker_heartbeat_seconds)
    while True:
        await asyncio.sleep(interval)
        try:
            await heartbeat(ctx)
        except Exception as exc:  # Redis down: keep trying; readers see us stale meanwhile
            ctx["beating_since"] = None  # and we judge no one by a missing heartbeat
            log.warning("worker heartbeat failed: %r", exc)
            continue
        if ctx.get("beating_since") is None:
            ctx["beating_since"] = time.monotonic()


async def _recover_forever(ctx: dict[str, Any]) -> None:
    """Every heartbeat interval, the work of workers known dead runs again (jobs and
    posts; `recover_dead_workers`): a task of this process, like the heartbeat, so a full
    queue never delays it, and apart from the heartbeat, so a slow database never
    delays a beat. The full sweep stays a cron every SWEEP_EVERY_SECONDS."""
    interval = max(1, ctx["settings"].worker_heartbeat_seconds)
    while True:
        await asyncio.sleep(interval)
        try:
            async with asyncio.timeout(6 * interval):
                await recover_dead_workers(ctx)
        except Exception as exc:  # Redis or PostgreSQL away: next time
            log.warning("recovering dead workers' jobs failed: %r", exc)


async def recover_dead_workers(ctx: dict[str, Any]) -> None:
    await recover_jobs(ctx)
    await retry_dead_workers_posts(ctx)


async def job_start(ctx: dict[str, Any]) -> None:
    """arq's on_job_start: note which worker runs the job (best effort)."""
    with contextlib.suppress(Exception):
        await liveness.job_started(ctx["resources"].redis, ctx["worker"], ctx["job_id"])


async def job_end(ctx: dict[str, Any]) -> None:
    """arq's after_job_end."""
    with contextlib.suppress(Exception):
        await liveness.job_ended(ctx["resources"].redis, ctx["job_id"])


async def recover_jobs(ctx: dict[str, Any]) -> list[str]:
    """Run again at once the jobs a dead worker was running (at start-up, a replacement
    worker's first act). Posts are left to `sweep_posts`, which counts their attempts
    (a post that kills its worker every time ends FAILED)."""
    released = await liveness.release_dead_workers_jobs(
        ctx["resources"].redis,
        ctx["worker"],
        ctx["settings"].worker_heartbeat_seconds,
        watched_for=liveness.watched_for(ctx),
        skip=("process_post:",),
    )
    if released:
        log.warning("jobs of a dead worker run again: %s", released)
    return released


MAX_TRIES = 5


def functions(settings: Settings) -> list[Function]:
    return [
        # A killed worker's job re-runs after its timeout: keep it tight (FACTS.md).
        func(observed(process_post), timeout=settings.job_timeout_seconds, max_tries=MAX_TRIES),
        func(observed(delete_post_objects), timeout=120, max_tries=MAX_TRIES),
        # Objects a still-valid S3 upload URL wrote after a post's deletion.
        func(observed(delete_late_uploads), timeout=120, max_tries=MAX_TRIES),
        func(observed(fan_out_post), timeout=600, max_tries=MAX_TRIES),
        func(observed(backfill_author), timeout=600, max_tries=MAX_TRIES),
        func(observed(announce_celebrity), timeout=600, max_tries=MAX_TRIES),
        func(observed(process_story), timeout=settings.job_timeout_seconds, max_tries=MAX_TRIES),
        func(observed(delete_late_story_uploads), timeout=120, max_tries=MAX_TRIES),
        # The outbox's effects (workers/outbox.py): their rows are sent, so these jobs
        # outlast an outage of about an hour (workers.jobs.PATIENT_TRIES, docs/delivery.md).
        func(observed(deliver_notifications), timeout=60, max_tries=PATIENT_TRIES),
        func(observed(follow_changed), timeout=120, max_tries=PATIENT_TRIES),
        func(observed(post_deleted), timeout=120, max_tries=PATIENT_TRIES),
    ]


def cron_jobs(settings: Settings) -> list[CronJob]:
    every = max(1, min(settings.sweep_every_seconds, 60))
    return [
        # A killed worker's other jobs, likewise (liveness.release_dead_workers_jobs).
        cron(
            observed(recover_jobs, quiet=True),
            second=set(range(0, 60, every)),
            run_at_startup=True,
            timeout=60,
        ),
        # At startup too: a worker that replaces a killed one finishes its posts at once.
        cron(
            observed(sweep_posts, quiet=True),
            second=set(range(0, 60, every)),
            run_at_startup=True,
            timeout=120,
        ),
        # Stories stuck in PROCESSING, on the same clock (a story lives only 24 hours).
        cron(
            observed(sweep_stories, quiet=True),
            second=set(range(0, 60, every)),
            run_at_startup=True,
            timeout=120,
        ),
        # The safety net behind the relay kicked after each READY commit.
        cron(
            observed(relay_outbox, quiet=True),
            second=set(range(60)),
            run_at_startup=True,
            unique=True,
            timeout=30,
        ),
        # Sent outbox rows older than a day, hourly (off the hour, when other crons run).
        cron(observed(prune_outbox, quiet=True), minute=17, second=0, unique=True, timeout=300),
        # Expired stories are already hidden by every read; this only reclaims their
        # objects and rows, so every few minutes is plenty.
        cron(
            observed(cleanup_stories, quiet=True),
            minute=set(range(0, 60, max(1, min(settings.story_cleanup_every_minutes, 60)))),
            second=0,
            run_at_startup=True,
            timeout=300,
        ),
    ]


def _redis_settings() -> RedisSettings:
    # `make run` passes the embedded Redis' URL; without REDIS_URL a worker started by
    # hand looks for a Redis on localhost:6379, as arq does.
    url = get_settings().redis_url
    return RedisSettings.from_dsn(url) if url else RedisSettings()


class WorkerSettings:
    """`arq workers.WorkerSettings`; configured from the environment (settings.py)."""

    functions = functions(get_settings())
    cron_jobs = cron_jobs(get_settings())
    on_startup = startup
    on_shutdown = shutdown
    on_job_start = job_start
    after_job_end = job_end
    redis_settings = _redis_settings()
    max_jobs = 10
    # How often an idle worker looks for jobs (arq's default is 0.5 s): a READY post's
    # fan-out waits for it, and the live feed promises delivery within a second.
    poll_delay = 0.05
    max_tries = MAX_TRIES
