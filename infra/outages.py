"""Which errors mean "a dependency is down or stalled", as opposed to a bug.

A request that PostgreSQL or Redis could not serve in time (a server killed, stopped or
overloaded: `settings.db_timeout_seconds`, `settings.redis_timeout_seconds`) is answered
SERVICE_UNAVAILABLE with a fixed message (`schema.root.InstagraphSchema.process_errors`):
never the driver's words, which name hosts, sockets and statements. The client may try
again; the process recovers by itself (docs/degradation.md). So is a request shed by a
bound on fallback work (`Overloaded`), which would otherwise queue into those timeouts.
"""

from __future__ import annotations

import logging
import time

from asyncpg import exceptions as pg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

log = logging.getLogger("instagraph.outages")

UNAVAILABLE_MESSAGE = "Unavailable for a moment; try again."
LOG_EVERY_SECONDS = 60.0


class Overloaded(Exception):
    """Refused at once: too much work already waits on a dependency in this process (the
    feed's PostgreSQL fallback while Redis is down, `domain.feed.home`)."""


_OUTAGES = (
    Overloaded,  # shed before it could queue (see the class)
    RedisConnectionError,  # refused, reset, or refused by the breaker (infra.redis)
    RedisTimeoutError,  # a reply that did not come in time
    PoolTimeoutError,  # no pooled PostgreSQL connection came free in time
    TimeoutError,  # asyncpg: connecting or a statement took longer than its timeout
    ConnectionError,  # the OS refused or reset a connection
    # PostgreSQL says so itself (asyncpg's classes; SQLSTATEs below for wrapped ones):
    pg.PostgresConnectionError,  # class 08: connection exceptions
    pg.CannotConnectNowError,  # 57P03: "the database system is starting up" (a restart)
    pg.AdminShutdownError,  # 57P01: the server is shutting down
    pg.CrashShutdownError,  # 57P02: another backend crashed, the server restarts
)
# SQLSTATEs of the same, as SQLAlchemy's asyncpg adapter carries them (`.sqlstate`).
_OUTAGE_STATES = frozenset({"57P01", "57P02", "57P03"})
_OUTAGE_STATE_CLASS = "08"


def _says_outage(error: BaseException) -> bool:
    if isinstance(error, _OUTAGES):
        return True
    state = getattr(error, "sqlstate", None)
    if isinstance(state, str) and (
        state in _OUTAGE_STATES or state.startswith(_OUTAGE_STATE_CLASS)
    ):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True  # the connection died under the statement
    # A Unix socket that is not there (PostgreSQL's, between a crash and the restarted
    # server's listen): connect() raises ENOENT with no file name, unlike open().
    return isinstance(error, FileNotFoundError) and error.filename is None


def is_outage(error: BaseException | None) -> bool:
    """Whether `error`, or what it was raised `from`, says a server could not be reached
    in time.

    Only `__cause__` (explicit chaining: SQLAlchemy's `DBAPIError` and its translation
    of asyncpg's errors, redis-py's wrappers all use `raise ... from`), never
    `__context__`: a bug raised while handling an outage (a `ProgrammingError` in the
    PostgreSQL fallback inside `except RedisError:`) carries the RedisError as its
    context, and must stay INTERNAL_SERVER_ERROR, not be hidden as an outage."""
    seen = 0
    while error is not None and seen < 5:
        if _says_outage(error):
            return True
        error = error.__cause__
        seen += 1
    return False


_last_logged = 0.0
_since_logged = 0


def log_outage(where: str, error: BaseException) -> None:
    """A warning for a request refused by an outage: the first at once, then at most one
    a minute with how many were refused meanwhile (an outage refuses every request)."""
    global _last_logged, _since_logged
    _since_logged += 1
    now = time.monotonic()
    if now - _last_logged < LOG_EVERY_SECONDS and _last_logged:
        return
    log.warning(
        "SERVICE_UNAVAILABLE at %s (%s: %s); %d such answers since the last line",
        where,
        type(error).__name__,
        error,
        _since_logged,
    )
    _last_logged, _since_logged = now, 0
