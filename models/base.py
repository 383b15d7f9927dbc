from __future__ import annotations

from typing import Any, Literal, TypeAlias, cast

from sqlalchemy import BigInteger, MetaData, Row, Table, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from settings import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# A result row of any shape, read by attribute (row.id, row.username...).
DbRow: TypeAlias = Row[*tuple[Any, ...]]


# `column == any_(IDS)` with a list bound as one array: one prepared statement for any
# number of ids (an expanding IN would make a new statement per list length).
IDS = bindparam("ids", type_=ARRAY(BigInteger))


def table_of(model: type[Base]) -> Table:
    """The Core table of a model, for Core statements on the hot paths."""
    return cast(Table, model.__table__)


# Who the engine is for (`create_engine`): the API (every wait bounded by
# `db_timeout_seconds`), the worker (statements and pool waits by
# `worker_db_timeout_seconds`: lock waits on hot rows and sweeps over large tables run
# longer than a request may), or a tool (benchmarks, scripts: no statement timeout).
EngineRole = Literal["api", "worker", "tool"]


def create_engine(settings: Settings, *, role: EngineRole = "api") -> AsyncEngine:
    """The process-wide async engine (asyncpg), sized by settings.

    Bounded waits (docs/degradation.md): connecting gives up after
    `db_timeout_seconds` for every role; each statement and waiting for a pooled
    connection after `db_timeout_seconds` in the API (a stalled server accepts
    connections and never answers; without these a request waits as long as the stall),
    `worker_db_timeout_seconds` in the worker (None: no limit), never for a tool.

    A statement that timed out leaves asyncpg cancelling it on that connection:
    SQLAlchemy discards that connection only (asyncio's TimeoutError is an "exit
    exception" to it: a disconnect that does not invalidate the rest of the pool), so
    connections idle during a stall are kept and work again when the server does.
    """
    connect = settings.db_timeout_seconds
    statement: float | None
    if role == "api":
        statement = connect
    elif role == "worker":
        statement = settings.worker_db_timeout_seconds
    else:
        statement = None
    return create_async_engine(
        settings.sqlalchemy_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        # SQLAlchemy's default (30 s) where statements are unbounded.
        pool_timeout=statement if statement is not None else 30.0,
        # No ping per checkout (a round trip on every request): a connection that fails
        # for being dead (or timed out) is discarded by SQLAlchemy's disconnect handling.
        pool_pre_ping=False,
        # asyncpg's own statement cache does the prepared-statement work.
        connect_args={
            "server_settings": {"application_name": "instagraph"},
            "timeout": connect,
            "command_timeout": statement,
        },
    )
