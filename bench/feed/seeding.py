"""Writing the synthetic network into the real tables and the real Redis feeds.

PostgreSQL rows go in with COPY (today's network) or one INSERT ... SELECT over
`generate_series` (the history network's million older posts), straight into the
migrated schema; Redis feeds are written by the real `FeedStore.write_rebuilt`, what a
read does when Redis lacks a feed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench.feed.config import Config
from bench.feed.network import (
    SEQUENCE_BITS,
    SNOWFLAKE_EPOCH_MS,
    Network,
    feed_ids,
    snowflake,
)
from bench.feed.progress import progress
from domain.posts import original_key, rendition_key
from infra.feedstore import TRUNCATED, FeedStore, feed_key, posts_key

PLACEHOLDER = "LKO2?U%2Tw=w]~RBVZRi};RPxuwH"  # a real BlurHash string, 4x3 components
RENDITIONS: tuple[tuple[str, str], ...] = tuple(
    (size, fmt) for size in ("THUMB", "FEED", "FULL") for fmt in ("JPEG", "WEBP")
)
MEDIA_COLUMNS = [
    "id", "post_id", "position", "kind", "content_type", "byte_size", "original_key",
    "detected_type", "width", "height", "placeholder", "rendition_keys",
]  # fmt: skip
POST_COLUMNS = ["id", "author_id", "caption", "hashtags", "status", "created_at"]
POST_COLUMNS += ["status_changed_at"]
USER_COLUMNS = ["id", "username", "email", "password_hash", "display_name", "is_private"]
USER_COLUMNS += ["follower_count", "following_count", "post_count", "created_at"]
FOLLOW_COLUMNS = ["follower_id", "followee_id", "id", "created_at"]


def rendition_keys(post_id: int, media_id: int) -> dict[str, str]:
    """The six rendition keys the worker writes for a photo."""
    return {f"{s}:{f}": rendition_key(post_id, media_id, s, f) for s, f in RENDITIONS}


def media_record(post_id: int, media_id: int, rng: random.Random) -> tuple[Any, ...]:
    """A processed photo's media row, as the worker leaves it."""
    return (
        media_id, post_id, 0, "PHOTO", "image/jpeg", rng.randrange(200_000, 4_000_000),
        original_key(post_id, media_id), "image/jpeg", 1080, rng.choice((1080, 1350, 608)),
        PLACEHOLDER, json.dumps(rendition_keys(post_id, media_id)),
    )  # fmt: skip


def user_record(
    user: int, name: str, password_hash: str, created: datetime, counts: tuple[int, int, int]
) -> tuple[Any, ...]:
    followers, following, posts = counts
    return (
        user, name, f"{name}@example.com", password_hash, name.replace("user", "User "),
        False, followers, following, posts, created,
    )  # fmt: skip


async def move_sequences(conn: asyncpg.Connection) -> None:
    """Rows were given explicit ids: move the identity sequences past them, so that rows
    the app inserts later (signUp, follow) get fresh ones."""
    for table in ("users", "follows"):
        await conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"  # noqa: S608 - fixed names
            f" (SELECT max(id) FROM {table}))"
        )


def _password_hash() -> str:
    # One hash for everybody: nobody logs in with a password here (tokens are issued
    # directly), and argon2 is slow on purpose.
    from argon2 import PasswordHasher

    return PasswordHasher().hash("bench-password")


async def seed_network(database_url: str, net: Network, cfg: Config) -> None:
    """Users, follows, READY posts and their media with COPY, in one transaction."""
    password_hash = _password_hash()
    created = datetime.now(UTC) - timedelta(days=60)
    rng = random.Random(cfg.seed + 1)  # noqa: S311 - synthetic data, not secrets
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            users = [
                user_record(
                    u,
                    f"user{u:06d}",
                    password_hash,
                    created,
                    (net.follower_count[u], len(net.following[u]), net.post_count[u]),
                )
                for u in range(1, net.users + 1)
            ]
            await conn.copy_records_to_table("users", records=users, columns=USER_COLUMNS)
            progress(f"  users: {len(users):,}")
            edge_ids = itertools.count(1)
            follows = (
                (follower, followee, next(edge_ids), created)
                for follower in range(1, net.users + 1)
                for followee in net.following[follower]
            )
            await conn.copy_records_to_table("follows", records=follows, columns=FOLLOW_COLUMNS)
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
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


# --- The history network ------------------------------------------------------------------


def _sql_template(layout: str, post_sentinel: int, media_sentinel: int) -> str:
    """A key layout of domain.posts turned into a PostgreSQL format() string over
    (post id, media id): the layout stays written once, in domain.posts."""
    escaped = layout.replace("%", "%%")
    return escaped.replace(str(post_sentinel), "%1$s").replace(str(media_sentinel), "%2$s")


@dataclass(frozen=True)
class History:
    """What the history network added."""

    authors: list[int]
    posts: int
    lowest_id: int
    highest_id: int
    seconds: float


async def seed_history(database_url: str, net: Network, cfg: Config) -> History:
    """`history_posts_each` older READY posts (each with its photo) for each of the
    `history_authors` accounts most followed by the viewers, all before the oldest seeded
    post and after the snowflake epoch, written by PostgreSQL itself (generate_series)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    authors = net.most_followed_by_viewers(cfg.history_authors)
    total = len(authors) * cfg.history_posts_each
    first_ms = SNOWFLAKE_EPOCH_MS + 24 * 3600 * 1000
    last_ms = net.oldest_post_ms() - 1
    step = max(1, (last_ms - first_ms) // total)
    if first_ms + step * total > last_ms:
        raise SystemExit("the history does not fit between the snowflake epoch and today")
    post_sentinel, media_sentinel = 9_000_000_000_000_001, 9_000_000_000_000_002
    original = _sql_template(
        original_key(post_sentinel, media_sentinel), post_sentinel, media_sentinel
    )
    keys = rendition_keys(post_sentinel, media_sentinel)
    pairs: list[str] = []
    params: list[Any] = [original, PLACEHOLDER]
    for name, layout in keys.items():
        params += [name, _sql_template(layout, post_sentinel, media_sentinel)]
        pairs.append(f"${len(params) - 1}::text, format(${len(params)}::text, p.id, p.id + 1)")
    low, high = snowflake(first_ms, 0), snowflake(first_ms + step * (total - 1), 0)
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            # Round-robin authors, one post per `step` milliseconds: every author's
            # history spans the whole period, and ids stay unique (sequence 0).
            await conn.execute(
                """
                INSERT INTO posts (id, author_id, caption, hashtags, status, created_at,
                                   status_changed_at)
                SELECT ((ms - $4::bigint) << $5::int), ($1::bigint[])[1 + n % $6::int],
                       'Older post ' || n || ' #bench', '{bench}', 'READY',
                       to_timestamp(ms / 1000.0), to_timestamp(ms / 1000.0)
                FROM (SELECT n, $2::bigint + n * $3::bigint AS ms
                      FROM generate_series(0, $7::int - 1) AS n) AS moments
                """,
                authors, first_ms, step, SNOWFLAKE_EPOCH_MS, SEQUENCE_BITS, len(authors), total,
            )  # fmt: skip
            progress(f"  {total:,} older posts by {len(authors)} authors")
            await conn.execute(
                f"""
                INSERT INTO media ({", ".join(MEDIA_COLUMNS)})
                SELECT p.id + 1, p.id, 0, 'PHOTO', 'image/jpeg', 200000 + p.id % 3800000,
                       format($1::text, p.id, p.id + 1), 'image/jpeg', 1080, 1350, $2::text,
                       jsonb_build_object({", ".join(pairs)})
                FROM posts p WHERE p.id BETWEEN ${len(params) + 1} AND ${len(params) + 2}
                """,  # noqa: S608 - column names and placeholders are ours
                *params,
                low,
                high,
            )
            await conn.execute(
                "UPDATE users SET post_count = post_count + $2 WHERE id = ANY($1::bigint[])",
                authors,
                cfg.history_posts_each,
            )
            progress(f"  {total:,} photos")
        # What autovacuum would get to on its own, done now: not during a measured run.
        await conn.execute("VACUUM ANALYZE posts")
        await conn.execute("VACUUM ANALYZE media")
        await conn.execute("VACUUM ANALYZE users")
    finally:
        await conn.close()
    return History(authors, total, low, high, round(loop.time() - started, 1))


async def refresh_after_history(
    database_url: str, net: Network, feeds: FeedStore, history: History
) -> None:
    """Keep Redis true to PostgreSQL after the older posts: feeds of the history authors'
    followers now continue past their end (sentinel: truncated), the authors' `posts:`
    sets hold their newest posts again, and their cached user records (post counts) go."""
    redis = feeds.redis
    touched = set(history.authors)
    pipe = redis.pipeline(transaction=False)
    for user in range(1, net.users + 1):
        if user in touched or touched.intersection(net.following[user]):
            pipe.zadd(feed_key(user), {"0": TRUNCATED}, xx=True)
        if len(pipe) >= 1000:
            await pipe.execute()
    await pipe.execute()
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """
            SELECT author_id, id FROM (
              SELECT author_id, id,
                     row_number() OVER (PARTITION BY author_id ORDER BY id DESC) AS rank
              FROM posts WHERE author_id = ANY($1::bigint[]) AND status = 'READY'
            ) ranked WHERE rank <= $2
            """,
            history.authors,
            feeds.author_posts_cap,
        )
    finally:
        await conn.close()
    newest: dict[int, dict[str, int]] = {}
    for row in rows:
        newest.setdefault(row["author_id"], {})[str(row["id"])] = row["id"]
    pipe = redis.pipeline(transaction=False)
    for author, members in newest.items():
        pipe.delete(posts_key(author))
        pipe.zadd(posts_key(author), members)
    pipe.delete(*[f"user:{a}" for a in history.authors])
    await pipe.execute()


# --- Extra accounts: fan-out authors and the live author's subscribers ---------------------


async def add_followed_accounts(
    database_url: str, followers_of: Sequence[Sequence[int]], name: str
) -> list[int]:
    """One new account per entry, followed by exactly those users; returns their ids."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            first = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM users")) + 1
            edge = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM follows")) + 1
            now = datetime.now(UTC)
            accounts = []
            for offset, followers in enumerate(followers_of):
                account = first + offset
                username = f"{name}{offset}_{len(followers)}"
                await conn.execute(
                    "INSERT INTO users (id, username, email, password_hash, display_name,"
                    " follower_count) VALUES ($1, $2, $3, 'x', $4, $5)",
                    account,
                    username,
                    f"{username}@example.com",
                    username.title(),
                    len(followers),
                )
                edges = [(f, account, edge + i, now) for i, f in enumerate(followers)]
                edge += len(followers)
                await conn.copy_records_to_table("follows", records=edges, columns=FOLLOW_COLUMNS)
                await conn.execute(
                    "UPDATE users SET following_count = following_count + 1"
                    " WHERE id = ANY($1::bigint[])",
                    list(followers),
                )
                accounts.append(account)
            await move_sequences(conn)
        await conn.execute("ANALYZE follows")
        await conn.execute("ANALYZE users")
    finally:
        await conn.close()
    return accounts


async def add_users(database_url: str, count: int, prefix: str) -> list[int]:
    """`count` new accounts following nobody yet (the live subscribers)."""
    password_hash = _password_hash()
    created = datetime.now(UTC)
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            first = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM users")) + 1
            ids = list(range(first, first + count))
            records = [
                user_record(u, f"{prefix}{u:06d}", password_hash, created, (0, 0, 0)) for u in ids
            ]
            await conn.copy_records_to_table("users", records=records, columns=USER_COLUMNS)
            await move_sequences(conn)
    finally:
        await conn.close()
    return ids


# --- Redis feeds ----------------------------------------------------------------------------


async def build_feeds(net: Network, feeds: FeedStore, cfg: Config) -> dict[str, int]:
    """Every user's feed through FeedStore.write_rebuilt (the read path's rebuild), which
    also marks them active (`seen:`), so fan-out maintains them from then on; then the
    authors' `posts:` sets (what record_author_post keeps; the celebrity pull reads it)."""
    by_author = net.posts_by_author()
    entries = 0
    in_flight: set[asyncio.Task[None]] = set()
    done_count = 0
    for user in range(1, net.users + 1):
        ids = feed_ids(net, by_author, user, cfg.feed_cap)
        entries += min(len(ids), cfg.feed_cap)
        task = asyncio.create_task(
            feeds.write_rebuilt(user, ids[: cfg.feed_cap], truncated=len(ids) > cfg.feed_cap)
        )
        in_flight.add(task)
        if len(in_flight) >= 32:
            done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                finished.result()
            done_count += len(done)
            if done_count // 2_000 != (done_count - len(done)) // 2_000:
                progress(f"  feeds: {done_count:,}/{net.users:,}")
    for pending in asyncio.as_completed(in_flight):
        await pending
    redis = feeds.redis
    pipe = redis.pipeline(transaction=False)
    for author, ids in enumerate(by_author):
        if ids:
            pipe.zadd(posts_key(author), {str(i): i for i in ids[: feeds.author_posts_cap]})
        if len(pipe) >= 1000:
            await pipe.execute()
    await pipe.execute()
    return {"feeds": net.users, "entries": entries}


async def write_empty_feeds(feeds: FeedStore, users: Iterable[int]) -> None:
    """Maintained, empty feeds (new accounts that follow nobody yet)."""
    await asyncio.gather(*(feeds.write_rebuilt(u, [], truncated=False) for u in users))


async def full_rebuild_cost(net: Network, feeds: FeedStore, cfg: Config) -> float:
    """Redis's own time (ms) for one rebuild of a full feed (the ZADD in write_rebuilt):
    Redis runs one command at a time, so this is how long a rebuild holds up everyone."""
    by_author = net.posts_by_author()
    viewer = net.viewers[0]
    ids = feed_ids(net, by_author, viewer, cfg.feed_cap)
    await feeds.redis.config_resetstat()
    for _ in range(3):
        await feeds.write_rebuilt(viewer, ids[: cfg.feed_cap], truncated=len(ids) > cfg.feed_cap)
    zadd = (await feeds.redis.info("commandstats")).get("cmdstat_zadd", {})
    return round(float(zadd.get("usec_per_call", 0)) / 1000, 2)


async def check_rebuild_sample(net: Network, engine: Any, cfg: Config) -> int:
    """The in-memory feeds must equal what the real rebuild query returns."""
    from domain.feed.queries import home_feed_ids

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
    usages, counts, encodings = [], [], set()
    for user in users:
        key = feed_key(user)
        usages.append(int(await redis.memory_usage(key, samples=0)))
        counts.append(int(await redis.zcard(key)))
        encodings.add((await redis.object("encoding", key)).decode())
    return {
        "keys": len(users),
        "entries_per_key": round(statistics.mean(counts), 1),
        "bytes_per_key": round(statistics.mean(usages)),
        "bytes_per_entry": round(sum(usages) / sum(counts), 1),
        "encodings": sorted(encodings),
    }
