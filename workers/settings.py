"""arq WorkerSettings: shared resources opened in on_startup and kept in ctx."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

from arq import cron, func
from arq.connections import RedisSettings
from arq.cron import CronJob
from arq.worker import Function

from infra.resources import Resources
from settings import Settings, get_settings
from workers.feed import (
    announce_celebrity,
    backfill_author,
    fan_out_post,
    prune_outbox,
    relay_outbox,
)
from workers.media import delete_post_objects, process_post, sweep_posts
from workers.notifications import deliver_notifications
from workers.stories import cleanup_stories, process_story, sweep_stories

log = logging.getLogger("instagraph.worker")

HEARTBEAT_KEY = "worker:heartbeat:{name}"
HEARTBEAT_TTL_SECONDS = 90


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx.setdefault("settings", get_settings())
    ctx["resources"] = Resources.create(settings)
    ctx["cpu_slots"] = asyncio.Semaphore(os.cpu_count() or 1)
    ctx["max_tries"] = MAX_TRIES
    ctx["worker_name"] = f"{socket.gethostname()}:{os.getpid()}"
    await heartbeat(ctx)


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["resources"].close()


async def heartbeat(ctx: dict[str, Any]) -> None:
    """Record that this worker is alive; /readyz lists live workers from these keys."""
    key = HEARTBEAT_KEY.format(name=ctx["worker_name"])
    await ctx["resources"].redis.set(key, int(time.time()), ex=HEARTBEAT_TTL_SECONDS)


MAX_TRIES = 5


def functions(settings: Settings) -> list[Function]:
    return [
        # A killed worker's job re-runs after its timeout: keep it tight (FACTS.md).
        func(process_post, timeout=settings.job_timeout_seconds, max_tries=MAX_TRIES),
        func(delete_post_objects, timeout=120, max_tries=MAX_TRIES),
        func(fan_out_post, timeout=600, max_tries=MAX_TRIES),
        func(backfill_author, timeout=600, max_tries=MAX_TRIES),
        func(announce_celebrity, timeout=600, max_tries=MAX_TRIES),
        func(process_story, timeout=settings.job_timeout_seconds, max_tries=MAX_TRIES),
        func(deliver_notifications, timeout=60, max_tries=MAX_TRIES),
    ]


def cron_jobs(settings: Settings) -> list[CronJob]:
    every = max(1, min(settings.sweep_every_seconds, 60))
    return [
        cron(heartbeat, second={0, 30}, run_at_startup=True, unique=False),
        # At startup too: a worker that replaces a killed one finishes its posts at once.
        cron(sweep_posts, second=set(range(0, 60, every)), run_at_startup=True, timeout=120),
        # Stories stuck in PROCESSING, on the same clock (a story lives only 24 hours).
        cron(sweep_stories, second=set(range(0, 60, every)), run_at_startup=True, timeout=120),
        # The safety net behind the relay kicked after each READY commit.
        cron(relay_outbox, second=set(range(60)), run_at_startup=True, unique=True, timeout=30),
        # Sent outbox rows older than a day, hourly (off the hour, when other crons run).
        cron(prune_outbox, minute=17, second=0, unique=True, timeout=300),
        # Expired stories are already hidden by every read; this only reclaims their
        # objects and rows, so every few minutes is plenty.
        cron(
            cleanup_stories,
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
    redis_settings = _redis_settings()
    max_jobs = 10
    # How often an idle worker looks for jobs (arq's default is 0.5 s): a READY post's
    # fan-out waits for it, and the live feed promises delivery within a second.
    poll_delay = 0.05
    max_tries = MAX_TRIES
