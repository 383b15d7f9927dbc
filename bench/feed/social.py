"""The feed page with its social fields against the plain page (issue 8, point 9).

The viewers' first pages get likes (by other users, and about a third of them by the
viewer) and a few comments each, written straight into PostgreSQL with the counter rows
the app keeps (`domain.counters`). Then, on the same API process and in the same run:
every viewer's social page is checked against what was written (counts, their own
likes, the first two comments), closed-loop runs of the plain page and the social page
interleaved at each connection count, and one more social run at the largest count
that charges PostgreSQL's table scans, Redis's commands and the compiled executor's
share to its pages: a warm social page should need neither SQL nor Strawberry.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from bench.feed.config import Config
from bench.feed.progress import progress
from bench.feed.reads import Probe, Target, closed_round, saturation
from bench.feed.servers import Server
from domain.counters import shard_of
from infra.ids import pk_from_global_id
from infra.redis import create_redis

SOCIAL_FIELDS = """
        likeCount commentCount viewerHasLiked
        comments(first: 2) { edges { node { id text author { username } } } }"""


def feed_page(name: str, extra: str = "") -> str:
    """The feed page document of this phase, with `extra` fields on each post."""
    return f"""query {name} {{
  feed(first: 20) {{
    edges {{
      cursor
      node {{
        id caption createdAt
        author {{ id username }}
        media {{ url(size: FEED) placeholder }}{extra}
      }}
    }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}"""


# The same page without and with its social fields.
PLAIN_PAGE = feed_page("PlainPage")
SOCIAL_PAGE = feed_page("SocialPage", SOCIAL_FIELDS)
# Longer than the cumulative-statistics flush of an idle PostgreSQL backend (10 s):
# transaction counts read after it include every transaction before it.
STATS_SETTLE_SECONDS = 11.0
EXECUTIONS = re.compile(rb'instagraph_graphql_executions_total\{executor="(\w+)"\} ([0-9.e+]+)')


@dataclass(frozen=True)
class Engagement:
    """What was written: each post's likers and its comments' texts, oldest first."""

    likers: dict[int, set[int]]
    comments: dict[int, list[str]]

    @property
    def likes(self) -> int:
        return sum(len(users) for users in self.likers.values())


async def social_phase(
    cfg: Config,
    probe: Probe,
    ours: Server,
    tokens: list[str],
    viewers: list[int],
    database_url: str,
    redis_url: str,
    users: int,
) -> dict[str, Any]:
    """The whole phase; `tokens[i]` logs in as `viewers[i]`."""
    progress("social feed page vs plain page (likes, comments, viewerHasLiked)")
    base = f"http://127.0.0.1:{ours.port}"
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        pages = {}
        for viewer, token in zip(viewers, tokens, strict=True):
            page = await _page(client, token, PLAIN_PAGE)
            pages[viewer] = [pk_from_global_id(e["node"]["id"], "Post") for e in page]
        written = await seed_engagement(database_url, pages, users, cfg.seed)
        progress(
            f"  {written.likes:,} likes and {sum(map(len, written.comments.values())):,} "
            f"comments on the {len(written.likers):,} posts of the viewers' first pages"
        )
        for token in tokens:  # compiled on the second use; caches filled on the first
            await _page(client, token, SOCIAL_PAGE)
        checked = 0
        for viewer, token in zip(viewers, tokens, strict=True):
            checked += _check(viewer, await _page(client, token, SOCIAL_PAGE), written)
        progress(f"  every social page right: {checked:,} posts checked against PostgreSQL")
        targets = [
            Target("plain", ours, "/graphql", PLAIN_PAGE),
            Target("social", ours, "/graphql", SOCIAL_PAGE),
        ]
        runs = await closed_round(probe, targets, cfg.clients, cfg, "page")
        warm = await _warm_run(cfg, probe, targets[1], client, database_url, redis_url)
    plain, social = saturation(runs["plain"])[1]["rps"], saturation(runs["social"])[1]["rps"]
    progress(
        f"  social / plain at saturation: {social / plain:.0%} ({social:,.0f} vs {plain:,.0f}"
        f" req/s); warm social page: {warm['sql_table_scans_per_page']} SQL table scans,"
        f" {warm['compiled_share']:.0%} compiled; Redis commands {warm['redis_commands_per_page']}"
    )
    return {
        "posts": len(written.likers),
        "likes": written.likes,
        "comments": sum(len(texts) for texts in written.comments.values()),
        "checked_posts": checked,
        "runs": runs,
        "warm": warm,
        "social_over_plain": round(social / plain, 3),
    }


async def _page(client: httpx.AsyncClient, token: str, query: str) -> list[dict[str, Any]]:
    response = await client.post(
        "/graphql", json={"query": query}, headers={"Authorization": f"Bearer {token}"}
    )
    body = response.json()
    if response.status_code != 200 or body.get("errors"):
        raise RuntimeError(f"feed page: {response.status_code} {body}")
    edges: list[dict[str, Any]] = body["data"]["feed"]["edges"]
    return edges


async def seed_engagement(
    database_url: str, pages: dict[int, list[int]], users: int, seed: int
) -> Engagement:
    """Likes and comments on every post of the viewers' first pages, with their counter
    rows (each like counted in its liker's shard, each comment in its own: what
    `domain.likes` and `domain.comments` write), in one transaction."""
    rng = random.Random(seed + 9)  # noqa: S311 - synthetic data, not secrets
    posts = sorted({post for ids in pages.values() for post in ids})
    likers = {post: set(rng.sample(range(1, users + 1), rng.randint(0, 40))) for post in posts}
    for viewer, ids in pages.items():
        for post in ids:
            if rng.random() < 0.3:
                likers[post].add(viewer)
    drafts = [
        (post, rng.randint(1, users), f"Comment {index + 1}: {rng.choice(WORDS)}")
        for post in posts
        for index in range(rng.choice((0, 0, 1, 2, 3, 4, 6)))
    ]
    counts: Counter[tuple[int, int, str]] = Counter()
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            likes = [(post, user) for post in posts for user in sorted(likers[post])]
            await conn.copy_records_to_table("likes", records=likes, columns=["post_id", "user_id"])
            # Ids and times from the column defaults (next_snowflake(), now()), in order.
            await conn.copy_records_to_table(
                "comments", records=drafts, columns=["post_id", "author_id", "text"]
            )
            rows = await conn.fetch(
                "SELECT id, post_id, text FROM comments WHERE post_id = ANY($1::bigint[])"
                " ORDER BY post_id, id",
                posts,
            )
            counts.update((post, shard_of(user), "likes") for post, user in likes)
            counts.update((row["post_id"], shard_of(row["id"]), "comments") for row in rows)
            shards = sorted({(post, shard) for post, shard, _ in counts})
            await conn.copy_records_to_table(
                "post_counters",
                records=[
                    (post, shard, counts[post, shard, "likes"], counts[post, shard, "comments"])
                    for post, shard in shards
                ],
                columns=["post_id", "shard", "like_count", "comment_count"],
            )
        # Fresh statistics now, so that autovacuum does not analyze these tables (in
        # transactions of its own) while the runs below count transactions.
        await conn.execute("ANALYZE likes, comments, post_counters")
    finally:
        await conn.close()
    comments: dict[int, list[str]] = {post: [] for post in posts}
    for row in rows:
        comments[row["post_id"]].append(row["text"])
    return Engagement(likers=likers, comments=comments)


WORDS = ("lovely", "where is this?", "so good", "wow", "the light!", "miss this place")


def _check(viewer: int, page: list[dict[str, Any]], written: Engagement) -> int:
    """The page's social fields against what was written; raises on any difference."""
    for edge in page:
        node = edge["node"]
        post = pk_from_global_id(node["id"], "Post")
        expected = (
            len(written.likers[post]),
            len(written.comments[post]),
            viewer in written.likers[post],
            written.comments[post][:2],
        )
        texts = [c["node"]["text"] for c in node["comments"]["edges"]]
        got = (node["likeCount"], node["commentCount"], node["viewerHasLiked"], texts)
        if got != expected:
            raise RuntimeError(f"viewer {viewer}, post {post}: {got} != {expected}")
    return len(page)


async def _warm_run(
    cfg: Config,
    probe: Probe,
    target: Target,
    client: httpx.AsyncClient,
    database_url: str,
    redis_url: str,
) -> dict[str, Any]:
    """A social run at the largest connection count, with what it cost around it (after
    the statistics settled): PostgreSQL's table scans (every statement of the read path
    reads a table; autovacuum's work does not count, unlike transactions), Redis
    commands by name, and the executors' counts."""
    connections = max(cfg.clients)
    await asyncio.sleep(STATS_SETTLE_SECONDS)
    before = (
        await _postgres_counts(database_url),
        await _redis_commands(redis_url),
        await _executions(client),
    )
    run = await probe.run(target, "closed", connections, warmup=0, duration=cfg.duration)
    await asyncio.sleep(STATS_SETTLE_SECONDS)
    after = (
        await _postgres_counts(database_url),
        await _redis_commands(redis_url),
        await _executions(client),
    )
    pages = max(run["answered"], 1)
    scans = after[0]["scans"] - before[0]["scans"]
    # The first count's own query is a transaction too.
    transactions = after[0]["transactions"] - before[0]["transactions"] - 1
    commands = {
        name: round((after[1].get(name, 0) - calls) / pages, 3)
        for name, calls in sorted(before[1].items())
        if after[1].get(name, 0) - calls > 0
    }
    compiled = after[2].get("compiled", 0) - before[2].get("compiled", 0)
    return {
        "connections": connections,
        "pages": run["answered"],
        "rps": run["rps"],
        "sql_table_scans": scans,
        "sql_table_scans_per_page": round(scans / pages, 4),
        "sql_transactions": transactions,
        "redis_commands_per_page": commands,
        "compiled_share": round(compiled / pages, 4),
        "postgres_cpu_ms_per_page": run["cpu_ms_per_page"]["postgres"],
    }


async def _postgres_counts(database_url: str) -> dict[str, int]:
    """Table scans (sequential and index) and transactions so far in the database."""
    conn = await asyncpg.connect(database_url)
    try:
        scans = await conn.fetchval(
            "SELECT sum(seq_scan + coalesce(idx_scan, 0)) FROM pg_stat_user_tables"
        )
        transactions = await conn.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    return {"scans": int(scans), "transactions": int(transactions)}


async def _redis_commands(redis_url: str) -> dict[str, int]:
    """Calls of each Redis command so far (INFO commandstats)."""
    redis = create_redis(redis_url)
    try:
        stats = await redis.info("commandstats")
    finally:
        await redis.aclose()
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def _executions(client: httpx.AsyncClient) -> dict[str, float]:
    """The API's GraphQL executions so far, by executor (its /metrics)."""
    text = (await client.get("/metrics")).content
    return {name.decode(): float(value) for name, value in EXECUTIONS.findall(text)}
