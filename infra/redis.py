"""The process's Redis client."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError

# A restarted or failed-over Redis drops pooled connections: retry a command a few
# times on a fresh connection before giving up.
RETRY = Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3)


def create_redis(url: str) -> Redis:
    # Bytes in and out: ids and blobs need no decode on the hot path.
    return Redis.from_url(
        url,
        decode_responses=False,
        health_check_interval=30,
        retry=RETRY,
        retry_on_error=[ConnectionError, TimeoutError],
    )
