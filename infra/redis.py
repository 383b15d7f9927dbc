"""The process's Redis client."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError, TimeoutError
from redis.utils import HIREDIS_AVAILABLE

# A restarted or failed-over Redis drops pooled connections: retry a command a few
# times on a fresh connection before giving up.
RETRY = Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3)


class HiredisPackingConnection(Connection):
    """redis-py's asyncio connection with commands packed by hiredis (C), as its sync
    client already does, instead of its Python loop: packing was the largest single
    cost of a feed page in the profiles (a page sends ~12 commands)."""

    _serializer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        return self._serializer.pack(*args)


def create_redis(url: str) -> Redis:
    options: dict[str, Any] = {}
    if HIREDIS_AVAILABLE and urlparse(url).scheme == "redis":  # plain TCP (not TLS, socket)
        options["connection_class"] = HiredisPackingConnection
    # Bytes in and out: ids and blobs need no decode on the hot path.
    return Redis.from_url(
        url,
        decode_responses=False,
        health_check_interval=30,
        retry=RETRY,
        retry_on_error=[ConnectionError, TimeoutError],
        **options,
    )
