"""Graceful degradation (issue 10, point 5; docs/degradation.md): real servers killed,
stopped (SIGSTOP) and brought back while the real app serves requests.

Each test runs its own redis-server (and, for the PostgreSQL stall, its own PostgreSQL),
so stopping it disturbs no other test. Timeouts are short here (0.5 s) and the client's
10 s: a request that hung on the stall would fail the test by the client's timeout, and
no assertion measures time. A short Redis timeout can also open the breaker on a slow
reply of a loaded machine before any fault: what must happen with Redis up (a feed
written back) is polled until it holds, not asserted after one read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from domain.feed.home import HomeFeed
from domain.records import RecentRecords
from infra.cache import RecordCache
from infra.embedded import EmbeddedPostgres, EmbeddedRedis
from infra.feedstore import create_feed_store, feed_key
from infra.ids import to_global_id
from infra.migrate import upgrade_database
from infra.outages import Overloaded, is_outage
from infra.redis import RedisHealth, RedisUnavailable, create_redis, redis_health
from models import create_engine
from settings import Settings
from tests.conftest import Server, clean_state, serve
from tests.factories import PASSWORD, Factory, MadeUser

CLIENT_TIMEOUT = 10.0
DEADLINE = 15.0  # for what must happen by itself (polled, not timed)

VIEWER = "query { viewer { id username } }"
POST = "query Post($id: ID!) { post(id: $id) { id caption author { username } likeCount } }"
FEED = "query { feed(first: 10) { edges { node { id caption author { username } } } } }"
LIKE = "mutation Like($id: ID!) { likePost(postId: $id) { post { id } errors { code } } }"
FOLLOW = "mutation Follow($id: ID!) { follow(userId: $id) { user { id } errors { code } } }"
USER = "query User($name: String!) { user(username: $name) { id username } }"
LOG_IN = (
    "mutation LogIn($name: String!, $password: String!) {"
    " logIn(username: $name, password: $password) { token errors { code } } }"
)
UPDATE_PROFILE = (
    "mutation Bio($bio: String!) { updateProfile(bio: $bio) { user { bio } errors { code } } }"
)


@contextlib.contextmanager
def private_redis(path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(path, persistent=False).start()
    try:
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(server.pid or 0, signal.SIGCONT)  # never leave a stopped process
        server.stop()


@contextlib.asynccontextmanager
async def degradable_app(settings: Settings, redis_url: str) -> AsyncIterator[Server]:
    async with serve(
        replace(
            settings, redis_url=redis_url, redis_timeout_seconds=0.5, redis_retry_after_seconds=0.5
        )
    ) as running:
        await clean_state(running)
        yield running


class Client:
    """Posts GraphQL to the app with a client timeout well above the server's."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def raw(self, query: str, token: str | None = None, **variables: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables}, headers=headers
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def data(self, query: str, token: str | None = None, **variables: Any) -> Any:
        body = await self.raw(query, token, **variables)
        assert not body.get("errors"), body["errors"]
        return body["data"]


@contextlib.asynccontextmanager
async def client(server: Server) -> AsyncIterator[Client]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=CLIENT_TIMEOUT) as http:
        yield Client(http)


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll `check` until it holds, failing after DEADLINE seconds."""
    async with asyncio.timeout(DEADLINE):
        while not await check():  # noqa: ASYNC110 - the state is another process's
            await asyncio.sleep(0.1)


async def feed_cached(redis_server: EmbeddedRedis, user: MadeUser) -> bool:
    """Whether the user's feed is in Redis, asked by a client of the test's own (the
    app's would refuse while its breaker is open)."""
    redis = Redis.from_url(redis_server.url)
    try:
        return bool(await redis.exists(feed_key(user.pk)))
    finally:
        await redis.aclose()


def breaker(app: Server) -> RedisHealth:
    """The app's Redis circuit breaker (`infra.redis.RedisHealth`)."""
    health = redis_health(app.resources.redis)
    assert health is not None
    return health


async def feed_written_back(api: Client, redis_server: EmbeddedRedis, reader: MadeUser) -> None:
    """Read the feed until a read (with the breaker closed) wrote it back into Redis."""

    async def cached() -> bool:
        await api.data(FEED, reader.token)
        return await feed_cached(redis_server, reader)

    await eventually(cached)


async def given_a_reader_and_a_post(factory: Factory) -> tuple[MadeUser, int]:
    """A reader following an author who has a READY post (not fanned out: no worker
    runs here, so the reader's feed comes from the rebuild path)."""
    author, reader = await factory.user("author"), await factory.user("reader")
    await factory.follow(reader, author)
    post_id = await factory.ready_post(author, caption="hello")
    return reader, post_id


async def reads_are_right(api: Client, reader: MadeUser, post_id: int) -> None:
    """viewer, post(id) and feed answer the right data, without errors."""
    viewer = (await api.data(VIEWER, reader.token))["viewer"]
    assert viewer == {"id": reader.id, "username": "reader"}
    post = (await api.data(POST, reader.token, id=to_global_id("Post", post_id)))["post"]
    assert post["caption"] == "hello" and post["author"] == {"username": "author"}
    feed = (await api.data(FEED, reader.token))["feed"]["edges"]
    assert [(e["node"]["id"], e["node"]["caption"]) for e in feed] == [
        (to_global_id("Post", post_id), "hello")
    ]


async def compiled_executions(api: Client) -> float:
    """Requests the compiled fast path answered so far (schema/fast_path.py)."""
    metrics = (await api.http.get("/metrics")).text
    line = 'instagraph_graphql_executions_total{executor="compiled"} '
    return sum(float(row[len(line) :]) for row in metrics.splitlines() if row.startswith(line))


def unavailable(body: Any) -> bool:
    """A SERVICE_UNAVAILABLE error with the fixed message (never a driver's words)."""
    errors = body.get("errors") or []
    return bool(errors) and all(
        e["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        and e["message"] == "Unavailable for a moment; try again."
        for e in errors
    )


async def test_with_redis_killed_reads_come_from_postgresql_and_it_heals_on_restart(
    settings, workdir
):
    with private_redis(workdir / "redis") as redis_server:
        async with degradable_app(settings, redis_server.url) as app, client(app) as api:
            factory = Factory(engine=app.engine, settings=app.settings)
            reader, post_id = await given_a_reader_and_a_post(factory)
            await reads_are_right(api, reader, post_id)
            await feed_written_back(api, redis_server, reader)  # rebuilt into Redis

            # Given Redis is killed...
            os.kill(redis_server.pid or 0, signal.SIGKILL)
            await eventually(lambda: asyncio.sleep(0, result=not redis_server.alive()))

            # ...then the API answers reads from PostgreSQL (on the compiled path too, which
            # serves documents from their second request on), and mutations that need only
            # PostgreSQL work...
            compiled = await compiled_executions(api)
            await reads_are_right(api, reader, post_id)
            assert await compiled_executions(api) > compiled
            liked = await api.data(LIKE, reader.token, id=to_global_id("Post", post_id))
            assert liked["likePost"] == {
                "post": {"id": to_global_id("Post", post_id)},
                "errors": [],
            }
            other = await factory.user("other")
            followed = await api.data(FOLLOW, reader.token, id=other.id)
            assert followed["follow"] == {"user": {"id": other.id}, "errors": []}
            post = (await api.data(POST, reader.token, id=to_global_id("Post", post_id)))["post"]
            assert post["likeCount"] == 1

            # ...and /readyz says it is degraded but keeps it in rotation.
            ready = await api.http.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["degraded"] is True and ready.json()["postgres"] == "ok"
            assert ready.json()["redis"] != "ok"

            # When Redis comes back (empty, at the same address), the API uses it again by
            # itself: the next reads rebuild the feed into it.
            redis_server.restart()

            async def feed_back_in_redis() -> bool:
                feed = (await api.data(FEED, reader.token))["feed"]["edges"]
                assert [e["node"]["caption"] for e in feed] == ["hello"]
                return await feed_cached(redis_server, reader)

            await eventually(feed_back_in_redis)
            await reads_are_right(api, reader, post_id)
            ready = await api.http.get("/readyz")
            assert ready.status_code == 200 and ready.json()["degraded"] is False


async def test_a_stalled_redis_costs_a_timeout_not_a_hang_and_recovers(settings, workdir):
    with private_redis(workdir / "redis") as redis_server:
        async with degradable_app(settings, redis_server.url) as app, client(app) as api:
            factory = Factory(engine=app.engine, settings=app.settings)
            reader, post_id = await given_a_reader_and_a_post(factory)
            await reads_are_right(api, reader, post_id)
            await feed_written_back(api, redis_server, reader)
            assert breaker(app).available
            process = psutil.Process(redis_server.pid)

            # Given Redis is stopped (it accepts connections and never answers)...
            process.suspend()
            try:
                # ...then reads still answer, from PostgreSQL, well within the client's
                # timeout (each of them would hang for the whole stall otherwise), the
                # same again once the breaker is open, and concurrently too.
                await reads_are_right(api, reader, post_id)
                await reads_are_right(api, reader, post_id)
                await asyncio.gather(*(reads_are_right(api, reader, post_id) for _ in range(5)))
                ready = await api.http.get("/readyz")
                assert ready.status_code == 200 and ready.json()["degraded"] is True
                # The breaker is open: requests skip Redis instead of each waiting for it.
                assert not breaker(app).available
            finally:
                process.resume()

            # When it runs again, the API uses it again by itself: a feed dropped from Redis
            # is rebuilt there by the next read.
            plain = Redis.from_url(redis_server.url)
            await plain.delete(feed_key(reader.pk))
            await plain.aclose()

            async def feed_back_in_redis() -> bool:
                await reads_are_right(api, reader, post_id)
                return await feed_cached(redis_server, reader)

            await eventually(feed_back_in_redis)
            assert breaker(app).available


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A directory of this test's own (not pytest's tmp_path, which a concurrent pytest
    run may clean up under a running server)."""
    with tempfile.TemporaryDirectory(prefix="instagraph-degradation-") as root:
        os.chmod(root, 0o755)  # the embedded PostgreSQL runs as its own system user
        yield Path(root)


@pytest.fixture
async def private_postgres(workdir: Path) -> AsyncIterator[EmbeddedPostgres]:
    with EmbeddedPostgres(workdir / "pg", persistent=False, database="degradation") as pg:
        with ThreadPoolExecutor(max_workers=1) as pool:  # Alembic runs its own loop
            await asyncio.wrap_future(pool.submit(upgrade_database, pg.url))
        yield pg
        # A throwaway server: PostgreSQL's immediate shutdown (SIGQUIT), not pg_ctl's
        # clean one, which takes 5-25 s here with its shutdown checkpoint.
        postmaster = psutil.Process(pg.pid)
        postmaster.send_signal(signal.SIGQUIT)
        postmaster.wait(10)


def postgres_processes(pg: EmbeddedPostgres) -> list[psutil.Process]:
    """The postmaster and its backends: stopping the postmaster alone leaves the
    backends of open connections answering."""
    postmaster = psutil.Process(pg.pid)
    return [postmaster, *postmaster.children(recursive=True)]


async def test_a_stalled_postgresql_answers_service_unavailable_then_recovers(
    settings, workdir, private_postgres
):
    with private_redis(workdir / "redis") as redis_server:
        app_settings = replace(
            settings,
            database_url=private_postgres.url,
            db_timeout_seconds=0.5,
            db_pool_size=3,
            db_max_overflow=2,
        )
        async with degradable_app(app_settings, redis_server.url) as app, client(app) as api:
            factory = Factory(engine=app.engine, settings=app.settings)
            user = await factory.user("stalled")
            assert (await api.data(USER, name="stalled"))["user"]["username"] == "stalled"

            # Given PostgreSQL is stopped...
            processes = postgres_processes(private_postgres)
            for process in processes:
                process.suspend()
            try:
                # ...then requests that need it fail within the timeout, with
                # SERVICE_UNAVAILABLE and no driver text, concurrently as well.
                bodies = await asyncio.gather(
                    api.raw(USER, name="stalled"),
                    api.raw(LOG_IN, name="stalled", password=PASSWORD),
                    api.raw(UPDATE_PROFILE, user.token, bio="during the stall"),
                    *(api.raw(USER, name="stalled") for _ in range(6)),
                )
                for body in bodies:
                    assert unavailable(body), body
            finally:
                for process in processes:
                    process.resume()

            # When it runs again, the same requests succeed (no connection left poisoned).
            async def answers() -> bool:
                body = await api.raw(USER, name="stalled")
                return not body.get("errors")

            await eventually(answers)
            for _ in range(8):  # more than the pool holds: every pooled connection works
                assert (await api.data(USER, name="stalled"))["user"]["username"] == "stalled"
            logged_in = (await api.data(LOG_IN, name="stalled", password=PASSWORD))["logIn"]
            assert logged_in["token"] and logged_in["errors"] == []
            updated = await api.data(UPDATE_PROFILE, user.token, bio="after")
            assert updated["updateProfile"] == {"user": {"bio": "after"}, "errors": []}


# -- the Redis client's bounds and breaker, against a real server ---------------------


async def until_not_refused(redis: Redis) -> Any:
    """Send GET until the breaker lets one through (a probe); its reply or its error."""
    async with asyncio.timeout(DEADLINE):
        while True:
            try:
                return await redis.get("a")
            except RedisUnavailable:
                await asyncio.sleep(0.05)
            except RedisError as error:
                return error


async def test_the_breaker_opens_on_refusals_and_stalls_probes_once_per_interval_and_closes(
    workdir,
):
    health = RedisHealth(retry_after=1.0, refusals_to_open=3)
    with private_redis(workdir / "redis") as redis_server:
        redis = create_redis(redis_server.url, timeout=0.5, health=health)
        try:
            await redis.set("a", "A")
            await redis.set("b", "B")
            assert health.available

            # Killed: refused connections open the breaker after three round trips in a
            # row (each already retried once), not at the first...
            os.kill(redis_server.pid or 0, signal.SIGKILL)
            await eventually(lambda: asyncio.sleep(0, result=not redis_server.alive()))
            for _ in range(2):
                with pytest.raises(RedisConnectionError) as refused:
                    await redis.get("a")
                assert not isinstance(refused.value, RedisUnavailable)
                assert health.available
            with pytest.raises(RedisConnectionError):
                await redis.get("a")
            assert not health.available
            # ...then every command is refused without trying, but one per interval: a
            # refused probe keeps it open for another interval.
            with pytest.raises(RedisUnavailable):
                await redis.get("a")
            probe = await until_not_refused(redis)
            assert isinstance(probe, RedisConnectionError)
            assert not isinstance(probe, RedisUnavailable)
            with pytest.raises(RedisUnavailable):
                await redis.get("a")
            assert not health.available

            # Back: the next probe's reply closes it (an empty Redis: a miss is a reply).
            redis_server.restart()
            assert await until_not_refused(redis) is None
            assert health.available
            await redis.set("a", "A")
            await redis.set("b", "B")

            # Stalled: one round trip that timed out opens it at once...
            process = psutil.Process(redis_server.pid)
            process.suspend()
            try:
                with pytest.raises(RedisTimeoutError):
                    await redis.get("a")
                assert not health.available
                with pytest.raises(RedisUnavailable):
                    await redis.get("b")
                pipe = redis.pipeline(transaction=False)
                pipe.get("a")
                with pytest.raises(RedisUnavailable):
                    await pipe.execute()
                probe = await until_not_refused(redis)  # a pipeline probe would do the same
                assert isinstance(probe, RedisTimeoutError)
            finally:
                process.resume()
            # ...and the replies the stalled server sends late to the cut round trips are
            # never read as the answer to a later command (redis-py dropped those
            # connections): every command gets its own reply.
            assert await until_not_refused(redis) == b"A"
            assert health.available
            for _ in range(3):
                assert await redis.get("b") == b"B"
                pipe = redis.pipeline(transaction=False)
                pipe.get("a")
                pipe.get("b")
                assert await pipe.execute() == [b"A", b"B"]
        finally:
            await redis.aclose()


async def test_blocking_commands_and_pub_sub_are_not_cut_by_the_round_trip_bound(workdir):
    with private_redis(workdir / "redis") as redis_server:
        redis = create_redis(redis_server.url, timeout=0.3)
        health = redis_health(redis)
        assert health is not None
        try:
            # A blocking pop waits its own timeout (1 s), longer than the bound (0.3 s).
            assert await redis.execute_command("BLPOP", "nothing", 1) is None
            pubsub = redis.pubsub()
            await pubsub.subscribe("news")
            assert (await pubsub.get_message(timeout=1.0))["type"] == "subscribe"
            assert await pubsub.get_message(timeout=0.6) is None  # quiet: no error
            await redis.publish("news", "hello")
            message = await pubsub.get_message(timeout=5.0)
            assert message is not None and message["data"] == b"hello"
            await pubsub.aclose()
            assert health.available
        finally:
            await redis.aclose()


async def test_feed_fallback_reads_beyond_the_bound_are_refused_at_once(server):
    # Redis refused (the breaker open for a minute: every command fails at once)...
    redis = create_redis("redis://127.0.0.1:1/0", health=RedisHealth(retry_after=60))
    health = redis_health(redis)
    assert health is not None
    health.failed()
    settings = replace(server.settings, feed_fallback_concurrency=1)
    cache = RecordCache(redis, settings.cache_ttl_seconds)
    feed = HomeFeed(
        engine=server.engine,
        feeds=create_feed_store(redis, settings),
        cache=cache,
        settings=settings,
        recent=RecentRecords(server.engine, cache),
    )
    try:
        # ...three pages at once with room for one PostgreSQL fallback: one is read from
        # PostgreSQL, the others are refused at once as an outage (SERVICE_UNAVAILABLE)
        # instead of queueing for the pool.
        pages = await asyncio.gather(
            *(feed.page_ids(1, below=None, count=10) for _ in range(3)), return_exceptions=True
        )
        assert sum(page == [] for page in pages) == 1
        shed = [page for page in pages if isinstance(page, BaseException)]
        assert len(shed) == 2
        assert all(isinstance(error, Overloaded) and is_outage(error) for error in shed)
        # The slot is given back: the next page is read.
        assert await feed.page_ids(1, below=None, count=10) == []
    finally:
        await redis.aclose()


async def test_a_bug_in_fallback_code_is_not_taken_for_an_outage(server):
    # A statement that fails for being wrong, raised while handling a Redis failure: its
    # context is the RedisError, and it must still be a bug (INTERNAL_SERVER_ERROR).
    bug: BaseException | None = None
    async with server.engine.connect() as conn:
        try:
            try:
                raise RedisUnavailable("Redis is unavailable")
            except RedisError:
                await conn.execute(text("SELECT no_such_column FROM users"))
        except ProgrammingError as error:
            bug = error
    assert bug is not None and isinstance(bug.__context__, RedisError)
    assert not is_outage(bug)
    # Outages themselves, and what is raised `from` one, are outages.
    assert is_outage(RedisUnavailable("Redis is unavailable"))
    try:
        raise RuntimeError("wrapped") from RedisTimeoutError("no reply")
    except RuntimeError as error:
        assert is_outage(error)


async def test_a_statement_timeout_is_an_outage_in_the_api_but_not_in_the_worker(settings):
    # The API's engine gives up on a statement after db_timeout_seconds; the worker's
    # has its own (here none), for lock waits and sweeps that take longer.
    timed = replace(settings, db_timeout_seconds=0.2, worker_db_timeout_seconds=None)
    api, worker = create_engine(timed), create_engine(timed, role="worker")
    try:
        with pytest.raises(TimeoutError) as timed_out:
            async with api.connect() as conn:
                await conn.execute(text("SELECT pg_sleep(0.6)"))
        assert is_outage(timed_out.value)
        async with api.connect() as conn:  # the timed-out connection was discarded
            assert await conn.scalar(text("SELECT 1")) == 1
        async with worker.connect() as conn:
            await conn.execute(text("SELECT pg_sleep(0.6)"))
            assert await conn.scalar(text("SELECT 1")) == 1
    finally:
        await api.dispose()
        await worker.dispose()
