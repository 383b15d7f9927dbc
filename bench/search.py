"""`python -m bench.search`: searchUsers over 100,000 accounts, through the real API.

1. PostgreSQL and Redis of its own, migrated to head; 100,000 users with the usernames
   people pick (`ana.souza`, `gsilva2366`, `the.lukas42`, `_mia_kowalski_`...), display
   names (some with accents or in other scripts, a tenth none) and long-tailed follower
   counts, written with COPY, then VACUUM ANALYZE.
2. EXPLAIN ANALYZE of one query of each kind: which indexes the statement reads.
3. The database's share: each kind of query (exact usernames, username prefixes of 2-6
   characters, usernames with one typo, display names or their last word) through the
   domain function, as the API runs it, one after the other; and the old prefix-only
   search (the previous version's statement, verbatim) on the same queries.
4. The API (`uvicorn app:app`, as `make run` starts it): the same queries as GraphQL
   requests from one client, after `{ __typename }` (the HTTP + GraphQL floor).

Prints p50/p99 per kind with the ratios to both baselines of the same run, and writes
bench/results/search-<stamp>.json. `--users`, `--requests` (per kind), `--connections`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import secrets
import tempfile
import time
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import select
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.expression import ClauseElement

from bench.common import machine_info, stamp, write_results
from bench.feed.progress import progress
from bench.feed.servers import Children, Databases, embedded_databases, server_env, start_server
from domain.users import (
    SET_SIMILARITY,
    USER_COLUMNS,
    USERNAME_SIMILARITY,
    WORD_SIMILARITY,
    WORDS_SIMILARITY,
    normalize_username,
    search_statement,
    search_term,
    search_users,
    similarity_thresholds,
    users,
)
from infra.security import issue_token
from models import create_engine
from settings import Settings

FIRST_NAMES = (
    "ana", "lucas", "maria", "joao", "sofia", "liam", "emma", "noah", "olivia", "mateo",
    "chloe", "leon", "mia", "hugo", "lea", "elias", "ines", "tomas", "zoe", "david",
    "sarah", "yuki", "haruto", "sakura", "min", "jun", "seo", "wei", "li", "mei",
    "arjun", "priya", "rahul", "aisha", "omar", "fatima", "youssef", "amira", "ivan",
    "olga", "dmitri", "anya", "lukas", "jonas", "finn", "greta", "astrid", "bjorn",
    "sven", "ingrid", "pablo", "lucia", "diego", "carmen", "rafael", "beatriz", "kofi",
    "amara", "chidi", "zainab", "grace", "gregory", "hannah", "henry", "isabel",
    "jack", "kate", "leo", "nina", "oscar", "paula", "quentin", "rosa", "samuel",
    "tara", "victor", "wanda", "xavier", "yara", "zach", "alice", "bruno", "clara",
    "emil", "felix", "gabriel", "helena", "ida", "julia", "karl", "laura", "marco",
    "nora", "otto", "pia", "ruben", "selma", "theo", "ulla", "vera", "william",
)  # fmt: skip
LAST_NAMES = (
    "silva", "souza", "santos", "oliveira", "smith", "johnson", "brown", "garcia",
    "martinez", "lopez", "muller", "schmidt", "schneider", "fischer", "weber", "meyer",
    "dubois", "martin", "bernard", "moreau", "rossi", "russo", "ferrari", "esposito",
    "kim", "lee", "park", "choi", "tanaka", "suzuki", "sato", "takahashi", "wang",
    "zhang", "liu", "chen", "patel", "sharma", "singh", "kumar", "khan", "ali",
    "hassan", "ivanov", "petrov", "novak", "kowalski", "nowak", "jensen", "hansen",
    "nielsen", "larsen", "andersson", "johansson", "karlsson", "okafor", "mensah",
    "diallo", "nguyen", "tran", "pham", "cohen", "levi", "murphy", "kelly", "walsh",
    "oconnor", "dupont", "lambert", "bianchi", "romano", "colombo", "fernandez",
    "gonzalez", "rodriguez", "hernandez", "perez", "sanchez", "ramirez", "torres",
    "rivera", "gomez", "diaz", "reyes", "cruz", "morales", "ortiz", "gutierrez",
    "castillo", "jimenez", "vargas", "romero", "herrera", "medina", "aguilar",
)  # fmt: skip
# How some names are really written in display names (the usernames stay ASCII).
SPELLED = {
    "joao": "João", "ines": "Inês", "tomas": "Tomás", "zoe": "Zoë", "lea": "Léa",
    "bjorn": "Björn", "muller": "Müller", "lucia": "Lucía", "rafael": "Rafaël",
    "yuki": "由紀", "haruto": "陽翔", "sakura": "さくら", "wei": "伟", "mei": "美",
    "ivan": "Иван", "olga": "Ольга", "dmitri": "Дмитрий", "anya": "Аня",
    "fernandez": "Fernández", "gonzalez": "González", "rodriguez": "Rodríguez",
    "hernandez": "Hernández", "perez": "Pérez", "sanchez": "Sánchez", "ramirez": "Ramírez",
    "gomez": "Gómez", "diaz": "Díaz", "jimenez": "Jiménez", "oconnor": "O'Connor",
    "amira": "أميرة", "omar": "عمر", "priya": "प्रिया",
}  # fmt: skip
SEED_COLUMNS = ["id", "username", "email", "password_hash", "display_name", "is_private"]
SEED_COLUMNS += ["follower_count", "following_count", "post_count", "created_at"]

SEARCH = "query ($q: String!) { searchUsers(query: $q, first: 20) { id username displayName } }"
TYPENAME = "{ __typename }"
VIEWER_ID = 1  # who searches: the first seeded account (blocks apply to a viewer)


@dataclass(frozen=True)
class Person:
    username: str
    display_name: str | None
    followers: int


def _ascii(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if c.isascii())


def _spelled(name: str) -> str:
    return SPELLED.get(name, name.title())


def make_people(count: int, seed: int) -> list[Person]:
    """`count` distinct, valid usernames in the shapes people pick, display names, and
    follower counts with a long tail (most have dozens, a few hundreds of thousands)."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data
    shapes: Sequence[Callable[[str, str, int], str]] = (
        lambda f, s, n: f"{f}.{s}",
        lambda f, s, n: f"{f}_{s}",
        lambda f, s, n: f"{f}{s}{n % 100}",
        lambda f, s, n: f"{f}.{s}{n % 1000}",
        lambda f, s, n: f"the.{f}{n % 100}",
        lambda f, s, n: f"{s}.{f}",
        lambda f, s, n: f"{f}{1960 + n % 50}",
        lambda f, s, n: f"_{f}_{s}_",
        lambda f, s, n: f"{f[0]}{s}{n % 10000}",
    )
    people: list[Person] = []
    taken: set[str] = set()
    while len(people) < count:
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        username = rng.choice(shapes)(first, last, rng.randrange(100_000))[:30]
        if username in taken or len(username) < 3:
            continue
        taken.add(username)
        roll = rng.random()
        if roll < 0.1:
            display: str | None = None
        elif roll < 0.2:
            display = _spelled(first)
        else:
            display = f"{_spelled(first)} {_spelled(last)}"
        followers = min(int(rng.paretovariate(1.1) * 20) - 20, 5_000_000)
        people.append(Person(username, display, max(followers, 0)))
    return people


def typo(word: str, rng: random.Random) -> str:
    """One slip of the finger: two letters swapped, one dropped or one doubled."""
    at = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        return word[: at - 1] + word[at] + word[at - 1] + word[at + 1 :]
    if kind == 1:
        return word[:at] + word[at + 1 :]
    return word[:at] + word[at] + word[at:]


def make_queries(people: Sequence[Person], per_kind: int, seed: int) -> dict[str, list[str]]:
    """Search strings a user would type, per kind."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data
    sample = rng.sample(list(people), per_kind * 4)
    named = [p for p in people if p.display_name and " " in p.display_name]
    return {
        "exact": [p.username for p in sample[:per_kind]],
        "prefix": [
            p.username[: rng.randrange(2, min(6, len(p.username)) + 1)]
            for p in sample[per_kind : 2 * per_kind]
        ],
        "typo": [typo(p.username, rng) for p in sample[2 * per_kind : 3 * per_kind]],
        "display_name": [
            rng.choice([p.display_name or "", (p.display_name or "").split(" ")[-1]])
            for p in rng.sample(named, per_kind)
        ],
    }


@dataclass(frozen=True)
class Latency:
    """Milliseconds of one series of requests."""

    count: int
    p50: float
    p99: float
    mean: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        ordered = sorted(s * 1000 for s in seconds)
        return cls(
            count=len(ordered),
            p50=round(_quantile(ordered, 0.50), 2),
            p99=round(_quantile(ordered, 0.99), 2),
            mean=round(sum(ordered) / len(ordered), 2),
        )


def _quantile(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def seed_users(database_url: str, people: Sequence[Person]) -> None:
    """COPY the accounts in, then ANALYZE and VACUUM (statistics for the planner and a
    visibility map, as a table that has lived a while has)."""
    created = datetime.now(UTC)
    records = [
        (i, p.username, f"{p.username}@example.com", "unused", p.display_name, False,
         p.followers, 0, 0, created)
        for i, p in enumerate(people, start=1)
    ]  # fmt: skip
    conn = await asyncpg.connect(database_url)
    try:
        await conn.copy_records_to_table("users", records=records, columns=SEED_COLUMNS)
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT max(id) FROM users))"
        )
        await conn.execute("VACUUM ANALYZE users")
    finally:
        await conn.close()


def as_sql(statement: ClauseElement) -> str:
    """A statement as plain SQL with its values inline (asyncpg runs it as it is)."""
    compiled = statement.compile(
        dialect=PGDialect_asyncpg(), compile_kwargs={"literal_binds": True}
    )
    return str(compiled)


def search_sql(term: str, limit: int) -> str:
    """The statement searchUsers runs for an anonymous viewer."""
    return as_sql(search_statement(term, limit, None))


def threshold_sql(term: str) -> str:
    """What searchUsers runs before its statement when it may need fuzzy matches."""
    return as_sql(SET_SIMILARITY.params(similarity_thresholds(term)))


async def explain(database_url: str, queries: dict[str, list[str]]) -> dict[str, list[str]]:
    """The indexes one query of each kind reads (EXPLAIN ANALYZE of the real statement)."""
    conn = await asyncpg.connect(database_url)
    used: dict[str, list[str]] = {}
    try:
        for kind, texts in queries.items():
            term = search_term(texts[0]) or texts[0]
            async with conn.transaction():
                await conn.execute(threshold_sql(term))
                plan = await conn.fetch("EXPLAIN (ANALYZE) " + search_sql(term, 20))
            lines = [row[0] for row in plan]
            used[kind] = _index_names(lines)
            took = next((line for line in lines if line.startswith("Execution Time")), "")
            progress(f"  {kind:13} {term!r}: {', '.join(used[kind])}; {took.lower()}")
    finally:
        await conn.close()
    return used


def _index_names(lines: Sequence[str]) -> list[str]:
    names = set()
    for line in lines:
        found = re.search(r"(?:Scan using|Scan Backward using|Bitmap Index Scan on) (\w+)", line)
        if found:
            names.add(found.group(1))
    return sorted(names)


async def sql_latency(
    engine: AsyncEngine,
    run: Callable[[AsyncConnection, str], Awaitable[Sequence[Any]]],
    texts: list[str],
) -> Latency:
    """One connection at a time, one query after the other, through SQLAlchemy as the
    API runs it (pool checkout, compiled-statement cache, asyncpg prepared statements),
    without HTTP and GraphQL: the database's share."""
    timings = []
    for text in texts:
        started = time.perf_counter()
        async with engine.connect() as conn:
            await run(conn, text)
        timings.append(time.perf_counter() - started)
    return Latency.of(timings)


async def new_search(conn: AsyncConnection, text: str) -> Sequence[Any]:
    """searchUsers' domain function, for the bench's viewer (user 1)."""
    return await search_users(conn=conn, query=text, limit=20, viewer_id=VIEWER_ID)


async def old_search(conn: AsyncConnection, text: str) -> Sequence[Any]:
    """The previous searchUsers, verbatim: username prefix, most followed first."""
    prefix = normalize_username(text)
    if not prefix:
        return []
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    statement = (
        select(*USER_COLUMNS)
        .where(users.c.username.like(escaped + "%", escape="\\"))
        .order_by(users.c.follower_count.desc(), users.c.id)
        .limit(20)
    )
    return (await conn.execute(statement)).all()


async def api_latency(
    client: httpx.AsyncClient, token: str, document: str, texts: list[str], connections: int
) -> Latency:
    """`connections` clients in a closed loop over the texts, each request timed."""
    pending = list(enumerate(texts))
    timings: list[float] = []

    async def client_loop() -> None:
        while pending:
            _, text = pending.pop()
            body = {"query": document, "variables": {"q": text}}
            started = time.perf_counter()
            response = await client.post(
                "/graphql", json=body, headers={"Authorization": f"Bearer {token}"}
            )
            timings.append(time.perf_counter() - started)
            if response.status_code != 200 or "errors" in response.json():
                raise RuntimeError(f"{text!r}: {response.text[:300]}")

    await asyncio.gather(*(client_loop() for _ in range(connections)))
    return Latency.of(timings)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=400, help="per kind of query")
    parser.add_argument("--connections", type=int, default=1, help="concurrent clients")
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


async def measure(db: Databases, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    progress(f"seeding {args.users:,} users")
    people = make_people(args.users, args.seed)
    await seed_users(db.pg_url, people)
    queries = make_queries(people, args.requests, args.seed + 1)
    examples = {kind: texts[:3] for kind, texts in queries.items()}
    progress(f"  done; queries: {examples}")

    progress("EXPLAIN ANALYZE, one query of each kind")
    indexes = await explain(db.pg_url, queries)

    progress("database only: the search statement, and the old prefix-only one, per kind")
    database: dict[str, Any] = {}
    engine = create_engine(Settings(database_url=db.pg_url), role="tool")
    try:
        for kind, texts in queries.items():
            await sql_latency(engine, new_search, texts[:20])  # warm the caches
            database[kind] = await sql_latency(engine, new_search, texts)
            database[f"{kind}_old"] = await sql_latency(engine, old_search, texts)
            progress(f"  {kind:13} {database[kind]}; old: {database[f'{kind}_old']}")
    finally:
        await engine.dispose()

    secret = secrets.token_urlsafe(32)
    env = server_env(db, tmp, secret=secret)
    children = Children()
    api: dict[str, Any] = {}
    try:
        progress("starting the API (uvicorn app:app)")
        server = await start_server(children, "api", "app:app", env)
        token = issue_token(VIEWER_ID, secret=secret, ttl_seconds=3600)
        base_url = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            warm = [text for texts in queries.values() for text in texts[:20]]
            await api_latency(client, token, SEARCH, warm, args.connections)
            api["typename"] = await api_latency(
                client, token, TYPENAME, ["x"] * args.requests, args.connections
            )
            progress(f"  {'__typename':13} {api['typename']}")
            for kind, texts in queries.items():
                api[kind] = await api_latency(client, token, SEARCH, texts, args.connections)
                progress(f"  {kind:13} {api[kind]}")
    finally:
        children.stop_all()
    return {
        "users": args.users,
        "requests_per_kind": args.requests,
        "connections": args.connections,
        "similarity_thresholds": {
            "username": USERNAME_SIMILARITY,
            "one_word": WORD_SIMILARITY,
            "words": WORDS_SIMILARITY,
        },
        "indexes": indexes,
        "database_ms": {k: v.__dict__ for k, v in database.items()},
        "api_ms": {k: v.__dict__ for k, v in api.items()},
    }


def report(results: dict[str, Any]) -> None:
    """The figures as a table, with the ratios to the baselines of the same run: the API
    against `{ __typename }`, the statement against the old prefix-only one."""
    api, database = results["api_ms"], results["database_ms"]
    floor = api["typename"]
    print()
    print(
        f"searchUsers over {results['users']:,} users, {results['requests_per_kind']} "
        f"queries per kind, {results['connections']} connection(s); milliseconds"
    )
    print(
        f"{'kind':14}{'API p50':>9}{'API p99':>9}{'x floor':>9}"
        f"{'SQL p50':>9}{'SQL p99':>9}{'old p50':>9}{'old p99':>9}"
    )
    for kind in ("exact", "prefix", "typo", "display_name"):
        a, new, old = api[kind], database[kind], database[f"{kind}_old"]
        print(
            f"{kind:14}{a['p50']:9.2f}{a['p99']:9.2f}{a['p50'] / floor['p50']:9.1f}"
            f"{new['p50']:9.2f}{new['p99']:9.2f}{old['p50']:9.2f}{old['p99']:9.2f}"
        )
    print(f"{'{ __typename }':14}{floor['p50']:9.2f}{floor['p99']:9.2f}{1:9.1f}")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="instagraph-bench-search-") as root:
        tmp = Path(root)
        tmp.chmod(0o755)  # the embedded PostgreSQL runs as its own system user
        progress("starting PostgreSQL and Redis, migrating")
        with embedded_databases(tmp) as db:
            results = asyncio.run(measure(db, tmp, args))
    results |= {"timestamp": stamp(), "machine": machine_info()}
    report(results)
    path = write_results("search", results)
    progress(f"results in {path}")


if __name__ == "__main__":
    main()
