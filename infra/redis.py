"""The process's Redis client."""

from __future__ import annotations

from redis.asyncio import Redis


def create_redis(url: str) -> Redis:
    # Bytes in and out: ids and blobs need no decode on the hot path.
    return Redis.from_url(url, decode_responses=False, health_check_interval=30)
