from __future__ import annotations

from typing import Any, TypeAlias, cast

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


def create_engine(settings: Settings) -> AsyncEngine:
    """The process-wide async engine (asyncpg), sized by settings."""
    return create_async_engine(
        settings.sqlalchemy_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=False,
        # asyncpg's own statement cache does the prepared-statement work.
        connect_args={"server_settings": {"application_name": "instagraph"}},
    )
