"""The process's Redis clients, and what they do when Redis is down or stalled.

Redis holds caches and the feeds' ids; PostgreSQL is the truth. So a Redis outage must
cost speed, never answers: every client made here

- bounds each round trip (a command, a pipeline, a WATCHed command) by `timeout`
  seconds, once, around the whole of it: taking a connection, connecting, sending and
  reading every reply (a SIGSTOPped server accepts connections and never answers).
  Not per socket operation: redis-py's `socket_timeout` runs every send through
  `asyncio.wait_for` (a new Task) and every read in its own timeout, ~70 µs of CPU on a
  feed page; one `asyncio.timeout` per round trip costs ~6. A round trip cut by it
  leaves no reply behind: redis-py disconnects a connection whose read or send was
  cancelled (`Connection.read_response`, `send_packed_command`), and the next command
  on it reconnects. Blocking commands (`BLOCKING_COMMANDS`) and pub/sub (its own
  connection, read with its own timeouts) are not bounded; a connection's handshake is
  (connect timeout);
- shares a `RedisHealth`, a circuit breaker: once a round trip timed out, or
  `refusals_to_open` in a row were refused, every command fails at once with
  `RedisUnavailable` (a redis-py `ConnectionError`, so `except RedisError` handlers see
  it) for `retry_after` seconds, after which one command tries the server again while
  the others keep failing fast. Readers catch it and answer from PostgreSQL
  (`infra.cache`, `domain.feed.home`, `domain.blocks`, `domain.engagement`), so a
  stalled Redis costs one request per `retry_after` the timeout, not every request;
- closes the breaker by itself on the first reply Redis sends again (redis-py reconnects
  on the next use of a dropped connection; nothing is restarted).

The breaker's transitions are logged once each (a warning when Redis goes, another when
it is back); fallbacks log through `log_fallback`, at most once a minute per kind.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar, cast, overload
from urllib.parse import urlparse

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import (
    Connection,
    ConnectionPool,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

log = logging.getLogger("instagraph.redis")

# A restarted Redis drops pooled connections: retry a command once, at once, on a fresh
# connection. Connection errors only: a timeout means a stalled server, and retrying it
# would only multiply the wait (the breaker then answers for a while).
RETRY = Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,))
# Refused round trips in a row (each already retried once) that open the breaker: a
# Redis whose port is closed refuses fast, but on a remote host each refusal is a
# network round trip or two, paid by every command. A few, not one: a Redis that just
# restarted (its pooled connections dropped) is used again at once.
REFUSALS_TO_OPEN = 3
# Commands that wait on purpose: not cut by the round-trip timeout (nothing here sends
# them today; inside a pipeline they would be, as the pipeline is one round trip).
BLOCKING_COMMANDS = frozenset(
    {
        "BLPOP",
        "BRPOP",
        "BRPOPLPUSH",
        "BLMOVE",
        "BLMPOP",
        "BZPOPMIN",
        "BZPOPMAX",
        "BZMPOP",
        "XREAD",
        "XREADGROUP",
        "WAIT",
        "WAITAOF",
    }
)
# Fallbacks log at most this often per kind (a line per request would flood the log
# during an outage).
FALLBACK_LOG_EVERY_SECONDS = 60.0

ClientT = TypeVar("ClientT", bound=Redis)
T = TypeVar("T")


class RedisUnavailable(RedisConnectionError):
    """Refused without trying: Redis failed a moment ago (see `RedisHealth`)."""


class RedisHealth:
    """The circuit breaker the clients of one Redis server share (see the module doc).

    `available` is False from the first round trip that timed out (or the
    `refusals_to_open`th refused in a row) until Redis answers again. Meanwhile `check`
    refuses every command but one per `retry_after` seconds, the probe; a probe that
    fails keeps it open for another `retry_after`, one that gets a reply closes it."""

    def __init__(
        self,
        retry_after: float = 1.0,
        *,
        refusals_to_open: int = REFUSALS_TO_OPEN,
        name: str = "Redis",
    ) -> None:
        self.retry_after = retry_after
        self.refusals_to_open = refusals_to_open
        self.name = name
        self._down = False
        self._since = 0.0
        self._next_try = 0.0
        self._refusals = 0

    @property
    def available(self) -> bool:
        return not self._down

    def down_for(self) -> float:
        """Seconds since Redis failed (0 while it is available)."""
        return time.monotonic() - self._since if self._down else 0.0

    def check(self) -> None:
        """Before taking a connection: raises `RedisUnavailable` while the breaker is open,
        except for one caller per `retry_after` seconds, who tries the server."""
        if self._down:
            now = time.monotonic()
            if now < self._next_try:
                raise RedisUnavailable(f"{self.name} is unavailable")
            self._next_try = now + self.retry_after

    def failed(self) -> None:
        """A round trip timed out (or enough were refused): open, or keep open."""
        now = time.monotonic()
        if not self._down:
            self._down, self._since = True, now
            log.warning(
                "%s unreachable or stalled: reads fall back to PostgreSQL, Redis is tried "
                "again every %.1fs",
                self.name,
                self.retry_after,
            )
        self._next_try = now + self.retry_after

    def refused(self) -> None:
        """A round trip failed on a refused or dropped connection (after its retry)."""
        self._refusals += 1
        if self._refusals >= self.refusals_to_open:
            self.failed()

    def answered(self) -> None:
        if self._down or self._refusals:
            self._refusals = 0
            if self._down:
                self._down = False
                log.warning(
                    "%s answers again after %.1fs", self.name, time.monotonic() - self._since
                )


async def _round_trip(pool: GuardedConnectionPool, bound: float, call: Awaitable[T]) -> T:
    """Await one round trip within `bound` seconds, telling the pool's breaker how it
    went. A timeout is redis-py's `TimeoutError` (a `RedisError`), as a connect timeout is."""
    health = pool.health
    try:
        async with asyncio.timeout(bound):
            reply = await call
    except RedisUnavailable:  # the breaker itself: no news about the server
        raise
    except TimeoutError as error:  # the builtin: this round trip's deadline
        health.failed()
        raise RedisTimeoutError(f"{health.name} did not answer within {bound}s") from error
    except RedisTimeoutError:  # connecting timed out
        health.failed()
        raise
    except RedisConnectionError:
        health.refused()
        raise
    except ResponseError:  # an error reply (NOSCRIPT after a restart, WRONGTYPE...): it answered
        health.answered()
        raise
    health.answered()
    return reply


class _BoundedCommands:
    """Client methods bounding each round trip (`_round_trip`), mixed into the client
    class `create_redis` is asked for (`Redis`, arq's `ArqRedis`)."""

    connection_pool: GuardedConnectionPool
    response_callbacks: Any

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        pool = self.connection_pool
        bound = pool.round_trip_timeout
        command = super().execute_command(*args, **options)  # type: ignore[misc]
        if bound is None or args[0] in BLOCKING_COMMANDS:
            return await command
        return await _round_trip(pool, bound, command)

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return BoundedPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )


class BoundedPipeline(Pipeline):
    """A pipeline whose `execute` (one round trip) and WATCHed commands are bounded."""

    connection_pool: GuardedConnectionPool

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        pool = self.connection_pool
        bound = pool.round_trip_timeout
        if bound is None or not (self.command_stack or self.watching):
            return await super().execute(raise_on_error)
        return await _round_trip(pool, bound, super().execute(raise_on_error))

    async def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        pool = self.connection_pool
        bound = pool.round_trip_timeout
        command = super().immediate_execute_command(*args, **options)
        if bound is None:
            return await command
        return await _round_trip(pool, bound, command)

    async def reset(self) -> None:
        # A connection dropped under a WATCH (a cut round trip) holds no WATCH any more:
        # redis-py would reconnect to send UNWATCH, unbounded, on a stalled server.
        connection = self.connection
        if self.watching and connection is not None and not connection.is_connected:
            self.watching = False
        await super().reset()


@functools.cache
def _bounded(client_class: type[ClientT]) -> type[ClientT]:
    name = f"Bounded{client_class.__name__}"
    return cast(type[ClientT], type(name, (_BoundedCommands, client_class), {}))


class _BoundedHandshake:
    """A new connection's handshake (CLIENT SETINFO, SELECT, AUTH replies) within the
    connect timeout: pub/sub connects outside any round trip, and a stalled server
    accepts the TCP connection and never answers the handshake."""

    socket_connect_timeout: float | None

    async def on_connect(self) -> None:
        try:
            async with asyncio.timeout(self.socket_connect_timeout):
                await super().on_connect()  # type: ignore[misc]  # the connection class's
        except TimeoutError as error:  # the builtin: the handshake's deadline
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise RedisTimeoutError("Timeout in the connection's handshake") from error


class HiredisPackingConnection(_BoundedHandshake, Connection):
    """redis-py's asyncio connection with commands packed by hiredis (C), as its sync
    client already does, instead of its Python loop: packing was the largest single
    cost of a feed page in the profiles (a page sends ~12 commands)."""

    _serializer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        return self._serializer.pack(*args)


class GuardedConnection(_BoundedHandshake, Connection):
    """Plain TCP without hiredis."""


class GuardedSSLConnection(_BoundedHandshake, SSLConnection):
    """rediss:// URLs."""


class GuardedUnixConnection(_BoundedHandshake, UnixDomainSocketConnection):
    """unix:// URLs."""


class GuardedConnectionPool(ConnectionPool):
    """Refuses a connection at once while its `RedisHealth` says Redis is down (before the
    pool's lock, which a connect to a stalled server would hold); carries the clients'
    `round_trip_timeout`."""

    def __init__(
        self,
        *args: Any,
        health: RedisHealth,
        round_trip_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.health = health
        self.round_trip_timeout = round_trip_timeout

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        self.health.check()
        return await super().get_connection(*args, **kwargs)


def _connection_class(url: str) -> type[Connection | UnixDomainSocketConnection]:
    scheme = urlparse(url).scheme
    if scheme == "unix":
        return GuardedUnixConnection
    if scheme == "rediss":
        return GuardedSSLConnection
    return HiredisPackingConnection if HIREDIS_AVAILABLE else GuardedConnection


@overload
def create_redis(
    url: str, *, timeout: float | None = None, health: RedisHealth | None = None
) -> Redis: ...


@overload
def create_redis(
    url: str,
    *,
    timeout: float | None = None,
    health: RedisHealth | None = None,
    client_class: type[ClientT],
) -> ClientT: ...


def create_redis(
    url: str,
    *,
    timeout: float | None = None,
    health: RedisHealth | None = None,
    client_class: type[Redis] = Redis,
) -> Redis:
    """A client of `url` with the guards of the module doc: `timeout` seconds to connect
    and for each round trip (None: wait forever, for tools only), and `health`, the
    breaker to share with the process's other clients of the same server (a new one by
    default; `redis_health(client)` returns it).

        redis = create_redis(settings.redis_url, timeout=2.0)
        jobs = create_redis(url, timeout=2.0, health=redis_health(redis), client_class=ArqRedis)
    """
    pool = GuardedConnectionPool.from_url(
        url,
        connection_class=_connection_class(url),
        health=health if health is not None else RedisHealth(),
        round_trip_timeout=timeout,
        # Bytes in and out: ids and blobs need no decode on the hot path.
        decode_responses=False,
        health_check_interval=30,
        # No socket_timeout: round trips are bounded as a whole (see the module doc).
        socket_timeout=None,
        socket_connect_timeout=timeout,
        retry=RETRY,
        retry_on_error=[RedisConnectionError],
    )
    return _bounded(client_class).from_pool(pool)


def redis_health(redis: Redis) -> RedisHealth | None:
    """The breaker of a client made by `create_redis` (None for another client)."""
    health = getattr(redis.connection_pool, "health", None)
    return health if isinstance(health, RedisHealth) else None


_last_fallback_log: dict[str, float] = {}


def log_fallback(
    what: str, error: BaseException, *, instead: str = "served from PostgreSQL"
) -> None:
    """A read answered without Redis (or, with `instead`, whatever was done without it):
    a warning, at most once a minute per `what` (during an outage every request falls
    back; the breaker logs the outage itself)."""
    now = time.monotonic()
    last = _last_fallback_log.get(what)
    if last is not None and now - last < FALLBACK_LOG_EVERY_SECONDS:
        return
    _last_fallback_log[what] = now
    log.warning("%s %s: Redis failed (%s)", what, instead, type(error).__name__)
