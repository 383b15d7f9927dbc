"""arq WorkerSettings: shared resources opened in on_startup and kept in ctx."""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from arq import cron
from arq.connections import RedisSettings

from infra.redis import create_redis
from models import create_engine
from settings import get_settings

log = logging.getLogger("instagraph.worker")

HEARTBEAT_KEY = "worker:heartbeat:{name}"
HEARTBEAT_TTL_SECONDS = 90


async def startup(ctx: dict[str, Any]) -> None:
    settings = get_settings()
    ctx["settings"] = settings
    ctx["engine"] = create_engine(settings)
    ctx["redis_app"] = create_redis(settings.redis_url)
    ctx["worker_name"] = f"{socket.gethostname()}:{os.getpid()}"
    await heartbeat(ctx)


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["redis_app"].aclose()
    await ctx["engine"].dispose()


async def heartbeat(ctx: dict[str, Any]) -> None:
    """Record that this worker is alive; /readyz lists live workers from these keys."""
    key = HEARTBEAT_KEY.format(name=ctx["worker_name"])
    await ctx["redis_app"].set(key, int(time.time()), ex=HEARTBEAT_TTL_SECONDS)


def _redis_settings() -> RedisSettings:
    url = os.environ.get("REDIS_URL") or get_settings().redis_url
    if not url:
        raise RuntimeError("the worker needs REDIS_URL (make run sets it)")
    return RedisSettings.from_dsn(url)


class WorkerSettings:
    functions: list[Any] = []
    cron_jobs = [cron(heartbeat, second={0, 30}, run_at_startup=False, unique=False)]
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = _redis_settings() if os.environ.get("REDIS_URL") else RedisSettings()
    max_jobs = 10
    job_timeout = 60
