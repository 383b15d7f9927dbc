"""`python -m bench.likes`: a viral post's like burst, sharded counters against one row.

10,000 distinct users like one post, `--concurrency` (50) requests in flight at a time,
and the burst's throughput is measured twice in the same run: with the post's like count
spread over `--shards` (16) counter rows, the design, and over one row, the hot row it
replaces (the API started with COUNTER_SHARDS=1). After each burst the post must have
exactly 10,000 like rows and a count (the SUM of its shards) of 10,000.

Phases, each announced by a progress line:
1. PostgreSQL and Redis of its own, migrated; 10,000 users and the posts seeded with one
   bulk INSERT each (no signUp, no argon2).
2. Through the real API: `likePost` over raw HTTP/1.1 keep-alive connections, once per
   counter layout (the API started as `make run` starts it with API_WORKERS=2, two
   processes sharing the port: one Python process would be the limit long before the
   row lock; Redis flushed before each burst, so both start equally cold).
3. Through the domain function with the real engine (no HTTP, no GraphQL): the same
   bursts, which show the database's own ceiling for each layout.
While a burst runs, a sampler counts the sessions waiting on a lock (pg_stat_activity),
which is what a hot row costs. Results go to bench/results/likes-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from bench.common import machine_info, stamp, write_results
from bench.feed.progress import progress
from bench.feed.servers import (
    Children,
    Databases,
    embedded_databases,
    server_env,
    start_server,
)
from domain.counters import COUNTER_SHARDS
from domain.likes import like
from infra.ids import to_global_id
from infra.security import issue_token
from models import create_engine
from settings import Settings

# Signs the likers' tokens; the API processes get it through SECRET_KEY.
SECRET = "bench-likes-secret-" + os.urandom(16).hex()
LIKE = "mutation ($id: ID!) { likePost(postId: $id) { errors { code } } }"


@dataclass(frozen=True)
class Config:
    users: int = 10_000
    concurrency: int = 50
    shards: int = COUNTER_SHARDS
    workers: int = 2
    skip_api: bool = False
    skip_domain: bool = False


@dataclass
class Burst:
    """One burst: who drove it, the counter layout, what it achieved."""

    path: str  # "api" or "domain"
    shards: int
    likes: int
    seconds: float
    likes_per_s: float
    errors: int
    like_rows: int
    counted: int
    lock_waiters_mean: float
    lock_waiters_max: int
    p50_ms: float
    p99_ms: float


def parse_args(argv: Sequence[str]) -> Config:
    parser = argparse.ArgumentParser(prog="python -m bench.likes", description=__doc__)
    parser.add_argument("--users", type=int, default=Config.users)
    parser.add_argument("--concurrency", type=int, default=Config.concurrency)
    parser.add_argument("--shards", type=int, default=Config.shards)
    parser.add_argument("--workers", type=int, default=Config.workers, help="API processes")
    parser.add_argument("--skip-api", action="store_true")
    parser.add_argument("--skip-domain", action="store_true")
    parser.add_argument("--quick", action="store_true", help="1,000 users: a smoke test")
    args = parser.parse_args(argv)
    config = Config(
        users=args.users,
        concurrency=args.concurrency,
        shards=args.shards,
        workers=args.workers,
        skip_api=args.skip_api,
        skip_domain=args.skip_domain,
    )
    return replace(config, users=1_000) if args.quick else config


# --- seeding --------------------------------------------------------------------------------


async def seed_users(pg_url: str, count: int) -> tuple[int, list[int]]:
    """An author and `count` likers, in one INSERT each (the password hash is never
    checked: the bench signs their tokens itself)."""
    conn = await asyncpg.connect(pg_url)
    try:
        author = await conn.fetchval(
            "INSERT INTO users (username, email, password_hash)"
            " VALUES ('viral', 'viral@example.com', 'x') RETURNING id"
        )
        rows = await conn.fetch(
            "INSERT INTO users (username, email, password_hash)"
            " SELECT 'liker' || g, 'liker' || g || '@example.com', 'x'"
            " FROM generate_series(1, $1) AS g RETURNING id",
            count,
        )
        await conn.execute("ANALYZE users")
    finally:
        await conn.close()
    return int(author), [int(row["id"]) for row in rows]


async def new_post(pg_url: str, author_id: int) -> int:
    """A READY post with no likes yet (media are not needed to like it)."""
    conn = await asyncpg.connect(pg_url)
    try:
        return int(
            await conn.fetchval(
                "INSERT INTO posts (author_id, status) VALUES ($1, 'READY') RETURNING id",
                author_id,
            )
        )
    finally:
        await conn.close()


async def final_counts(pg_url: str, post_id: int) -> tuple[int, int]:
    """(like rows, the SUM of the post's like counter shards)."""
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetchval("SELECT count(*) FROM likes WHERE post_id = $1", post_id)
        counted = await conn.fetchval(
            "SELECT coalesce(sum(like_count), 0) FROM post_counters WHERE post_id = $1", post_id
        )
    finally:
        await conn.close()
    return int(rows), int(counted)


# --- measuring ------------------------------------------------------------------------------


class LockSampler:
    """Counts the sessions waiting on a lock every 20 ms while a burst runs."""

    def __init__(self, pg_url: str) -> None:
        self.pg_url = pg_url
        self.samples: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.pg_url)
        try:
            while True:
                waiting = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                )
                self.samples.append(int(waiting))
                await asyncio.sleep(0.02)
        finally:
            await conn.close()

    async def __aenter__(self) -> LockSampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def mean(self) -> float:
        return round(statistics.fmean(self.samples), 1) if self.samples else 0.0


async def drive(
    count: int, concurrency: int, one: Callable[[int, int], Awaitable[bool]]
) -> tuple[float, int, list[float]]:
    """Run `one(lane, index)` for every index in 0..count-1, `concurrency` lanes at a
    time; (seconds, errors, latencies in ms)."""
    errors = 0
    latencies: list[float] = []
    next_index = 0

    async def lane(number: int) -> None:
        nonlocal errors, next_index
        while next_index < count:
            index = next_index
            next_index += 1
            started = time.perf_counter()
            ok = await one(number, index)
            latencies.append((time.perf_counter() - started) * 1000)
            errors += not ok

    started = time.perf_counter()
    await asyncio.gather(*(lane(n) for n in range(concurrency)))
    return time.perf_counter() - started, errors, latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) if ordered else 0.0


async def measured(
    path: str,
    shards: int,
    db: Databases,
    post_id: int,
    count: int,
    concurrency: int,
    one: Callable[[int, int], Awaitable[bool]],
) -> Burst:
    """One burst with the lock sampler running, then the post's counts checked."""
    async with LockSampler(db.pg_url) as sampler:
        seconds, errors, latencies = await drive(count, concurrency, one)
    rows, counted = await final_counts(db.pg_url, post_id)
    burst = Burst(
        path=path,
        shards=shards,
        likes=count,
        seconds=round(seconds, 2),
        likes_per_s=round(count / seconds, 1),
        errors=errors,
        like_rows=rows,
        counted=counted,
        lock_waiters_mean=sampler.mean,
        lock_waiters_max=max(sampler.samples, default=0),
        p50_ms=percentile(latencies, 0.5),
        p99_ms=percentile(latencies, 0.99),
    )
    progress(
        f"  {path} with {shards} counter row(s): {burst.likes_per_s:,.0f} likes/s "
        f"({seconds:.1f} s, p50 {burst.p50_ms} ms, p99 {burst.p99_ms} ms), "
        f"{burst.lock_waiters_mean} sessions waiting on a lock on average; "
        f"rows {rows:,}, count {counted:,}, errors {errors}"
    )
    return burst


# --- through the API ------------------------------------------------------------------------


def like_request(port: int, post_gid: str, token: str) -> bytes:
    body = orjson.dumps({"query": LIKE, "variables": {"id": post_gid}})
    head = (
        f"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """One request on a keep-alive connection (the API answers with a Content-Length):
    a few tens of microseconds of client CPU, on the cores the server uses too."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return int(head[9:12]), await reader.readexactly(length)


async def api_burst(
    cfg: Config, db: Databases, tmp: Path, author_id: int, likers: list[int], shards: int
) -> Burst:
    """The burst through `likePost` on the API started with COUNTER_SHARDS=shards."""
    post_id = await new_post(db.pg_url, author_id)
    # Both layouts start as cold (the likers' cached hidden sets of a run before would
    # spare the next run a statement per like).
    redis = Redis.from_url(db.redis_url)
    try:
        await redis.flushall()
    finally:
        await redis.aclose()
    env = server_env(db, tmp, secret=SECRET, COUNTER_SHARDS=str(shards))
    children = Children()
    try:
        server = await start_server(children, "api", "app:app", env, workers=cfg.workers)
        post_gid = to_global_id("Post", post_id)
        requests = [
            like_request(server.port, post_gid, issue_token(u, secret=SECRET, ttl_seconds=3600))
            for u in likers
        ]
        streams = [
            await asyncio.open_connection("127.0.0.1", server.port) for _ in range(cfg.concurrency)
        ]

        async def one(lane: int, index: int) -> bool:
            reader, writer = streams[lane]
            status, body = await exchange(reader, writer, requests[index])
            return status == 200 and body == b'{"data":{"likePost":{"errors":[]}}}'

        try:
            return await measured("api", shards, db, post_id, len(likers), cfg.concurrency, one)
        finally:
            for _, writer in streams:
                writer.close()
    finally:
        children.stop_all()


# --- through the domain function ------------------------------------------------------------


async def domain_burst(
    cfg: Config, db: Databases, author_id: int, likers: list[int], shards: int
) -> Burst:
    """The burst through `domain.likes.like`, one transaction per like as the resolver
    opens it, on an engine with a connection per lane."""
    post_id = await new_post(db.pg_url, author_id)
    settings = Settings(
        database_url=db.pg_url,
        redis_url=db.redis_url,
        secret_key=SECRET,
        db_pool_size=cfg.concurrency,
        db_max_overflow=0,
    )
    engine = create_engine(settings, role="tool")
    try:

        async def one(lane: int, index: int) -> bool:
            async with engine.begin() as conn:
                return await like(
                    conn=conn,
                    post_id=post_id,
                    post_author_id=author_id,
                    user_id=likers[index],
                    shards=shards,
                )

        return await measured("domain", shards, db, post_id, len(likers), cfg.concurrency, one)
    finally:
        await engine.dispose()


# --- the run --------------------------------------------------------------------------------


def ratio(bursts: list[Burst], path: str, shards: int) -> float | None:
    found = {b.shards: b.likes_per_s for b in bursts if b.path == path}
    if shards in found and 1 in found and found[1] > 0:
        return round(found[shards] / found[1], 2)
    return None


async def run(cfg: Config, db: Databases, tmp: Path) -> dict[str, Any]:
    layouts = (cfg.shards, 1)
    bursts: list[Burst] = []
    started = time.perf_counter()
    author_id, likers = await seed_users(db.pg_url, cfg.users)
    progress(f"seeded {len(likers):,} users in {time.perf_counter() - started:.1f} s")
    if not cfg.skip_api:
        progress(
            f"through the API ({cfg.workers} process(es)), {cfg.concurrency} requests in flight"
        )
        for shards in layouts:
            bursts.append(await api_burst(cfg, db, tmp, author_id, likers, shards))
    if not cfg.skip_domain:
        progress(f"through domain.likes.like, {cfg.concurrency} transactions in flight")
        for shards in layouts:
            bursts.append(await domain_burst(cfg, db, author_id, likers, shards))
    exact = all(b.like_rows == b.likes == b.counted and b.errors == 0 for b in bursts)
    return {
        "timestamp": stamp(),
        "machine": machine_info(),
        "config": asdict(cfg),
        "bursts": [asdict(b) for b in bursts],
        "api_ratio": ratio(bursts, "api", cfg.shards),
        "domain_ratio": ratio(bursts, "domain", cfg.shards),
        "exact": exact,
    }


def print_report(report: dict[str, Any]) -> None:
    print()
    print(f"{'path':<8}{'shards':>7}{'likes/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'lock waits':>12}")
    for b in report["bursts"]:
        print(
            f"{b['path']:<8}{b['shards']:>7}{b['likes_per_s']:>10,.0f}"
            f"{b['p50_ms']:>9}{b['p99_ms']:>9}{b['lock_waiters_mean']:>12}"
        )
    shards = report["config"]["shards"]
    for path in ("api", "domain"):
        if report[f"{path}_ratio"] is not None:
            print(f"{path}: {shards} counter rows vs one: x{report[f'{path}_ratio']}")
    print("every count equals its like rows:", "yes" if report["exact"] else "NO")


def main(argv: Sequence[str] | None = None) -> int:
    import uvloop

    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="bench-likes-") as root:
        tmp = Path(root)
        os.chmod(tmp, 0o755)  # noqa: S103 - the embedded PostgreSQL runs as its own user
        progress("starting PostgreSQL and Redis, migrating")
        # Outside the event loop: the migrations run one of their own.
        with embedded_databases(tmp) as db:
            report = uvloop.run(run(cfg, db, tmp))
    print_report(report)
    path = write_results("likes", report)
    progress(f"results in {path}")
    return 0 if report["exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
