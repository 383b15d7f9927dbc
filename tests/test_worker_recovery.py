"""A worker killed mid-job: the post is finished by a retry, never stuck in PROCESSING."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from settings import ROOT, Settings
from tests.media_samples import jpeg_bytes
from tests.posting import POST, publish, wait_for_post


@contextmanager
def worker_process(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """`arq workers.WorkerSettings` as production runs it, configured by environment."""
    env = dict(
        os.environ,
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        SECRET_KEY=settings.secret_key,
        STORAGE_BACKEND="local",
        MEDIA_ROOT=str(settings.media_root),
        PUBLIC_BASE_URL=settings.public_base_url,
        # A post PROCESSING for 2 s with no live job is stuck; look every second.
        PROCESSING_TIMEOUT_SECONDS="2",
        SWEEP_EVERY_SECONDS="1",
    )
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


async def test_killed_worker_leaves_the_post_to_a_retry(server, gql, factory):
    author = await factory.user("author")
    photo = jpeg_bytes(4000, 3000)
    with worker_process(server.settings) as first:
        # A carousel of ten 12 MP photos keeps the job busy for seconds.
        post_id = await publish(gql, author.token, [("image/jpeg", photo)] * 10)
        async with asyncio.timeout(30):
            while True:  # until the worker has taken the job
                if await server.redis.keys("arq:in-progress:*"):
                    break
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    status = (await gql(POST, token=author.token, id=post_id))["post"]["status"]
    assert status == "PROCESSING"

    with worker_process(server.settings):
        post = await wait_for_post(gql, author.token, post_id)
    assert post["status"] == "READY", post["failureReason"]
    assert len(post["media"]) == 10 and all(m["feed"] for m in post["media"])
