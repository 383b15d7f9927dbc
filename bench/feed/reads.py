"""The read side: the feed page through the API against its baselines, with the CPU it
costs each server, PostgreSQL above all.

Every load run is sampled with the kernel's CPU accounting of three process trees
(PostgreSQL, Redis, the HTTP server with its workers) before and after, and the
difference is divided by the pages answered in the whole run, warm-up included: the
CPU of one feed page on each tier.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from bench.common import FEED_QUERY
from bench.feed.config import Config
from bench.feed.load import LoadResult, LoadSpec, load, raw_request
from bench.feed.pgcpu import CpuMeter, ProcessTreeCpu
from bench.feed.progress import progress
from bench.feed.servers import Server


@dataclass(frozen=True)
class Target:
    """An endpoint answering the feed page: ours (/graphql) or a baseline; `query` is
    the document each request sends (the plain feed page unless told)."""

    name: str
    server: Server
    path: str
    query: str = FEED_QUERY

    @property
    def port(self) -> int:
        return self.server.port


class Probe:
    """Runs load against targets and charges each run's CPU to its pages."""

    def __init__(self, tokens: list[str], postgres: ProcessTreeCpu, redis: ProcessTreeCpu):
        self.tokens = tokens
        self.postgres = postgres
        self.redis = redis

    async def run(
        self,
        target: Target,
        mode: str,
        connections: int,
        *,
        warmup: float,
        duration: float,
        rate: float = 0.0,
    ) -> dict[str, Any]:
        spec = LoadSpec(
            port=target.port,
            requests=[raw_request(target.port, target.path, t, target.query) for t in self.tokens],
            mode=mode,
            connections=connections,
            warmup=warmup,
            duration=duration,
            rate=rate,
        )
        meter = CpuMeter(
            {
                "postgres": self.postgres,
                "redis": self.redis,
                "server": ProcessTreeCpu(*target.server.pids),
            }
        )
        server = meter.trees["server"]
        before, processes = meter.sample(), server.per_process()
        result: LoadResult = await load(spec)
        used = meter.used(before, meter.sample())
        spread = server.per_process()
        out = asdict(result)
        pages = max(result.answered, 1)
        out["cpu_ms_per_page"] = {k: round(v * 1000 / pages, 4) for k, v in used.items()}
        out["cpu_s"] = {k: round(v, 3) for k, v in used.items()}
        out["server_cpu_s_by_process"] = [
            round(spread[pid] - processes.get(pid, 0.0), 3) for pid in sorted(spread)
        ]
        return out

    async def idle_postgres(self, seconds: float = 2.0) -> float:
        """PostgreSQL's own CPU while nothing asks it anything (ms per second): the
        background noise under every per-page figure."""
        before = self.postgres.seconds()
        await asyncio.sleep(seconds)
        return round((self.postgres.seconds() - before) * 1000 / seconds, 2)


async def same_pages(targets: list[Target], tokens: list[str]) -> dict[str, Any]:
    """Do the endpoints answer with the same posts, authors and URLs for every viewer?
    (Also warms every cache on the way: records, celebrity lists, prepared statements.)"""
    identical, edges = 0, []
    async with httpx.AsyncClient(timeout=60) as client:
        for token in tokens:
            pages = []
            for target in targets:
                response = await client.post(
                    f"http://127.0.0.1:{target.port}{target.path}",
                    json={"query": FEED_QUERY},
                    headers={"Authorization": f"Bearer {token}"},
                )
                body = response.json()
                if response.status_code != 200 or body.get("errors"):
                    raise RuntimeError(f"{target.name}: {response.status_code} {body}")
                pages.append(
                    [
                        (
                            e["cursor"],
                            e["node"]["id"],
                            e["node"]["author"]["username"],
                            *(m["url"] for m in e["node"]["media"]),
                        )
                        for e in body["data"]["feed"]["edges"]
                    ]
                )
            identical += all(page == pages[0] for page in pages)
            edges.append(len(pages[0]))
    return {"viewers": len(tokens), "identical": identical, "min_edges": min(edges)}


def saturation(runs: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The closed-loop run with the highest throughput: (connections, run)."""
    best = max(runs, key=lambda c: runs[c]["rps"])
    return best, runs[best]


def cpu_per_page(runs: dict[str, dict[str, Any]], tier: str) -> float:
    """A tier's CPU per page over all of a target's runs (ms): total CPU / total pages."""
    cpu = sum(r["cpu_s"][tier] for r in runs.values())
    pages = sum(r["answered"] for r in runs.values())
    return round(cpu * 1000 / max(pages, 1), 4)


async def closed_round(
    probe: Probe, targets: list[Target], clients: tuple[int, ...], cfg: Config, label: str
) -> dict[str, dict[str, Any]]:
    """Closed-loop runs at each connection count, interleaved (ours, naive, floor at one
    count, then the next): drift of a noisy machine hits all alike."""
    results: dict[str, dict[str, Any]] = {t.name: {} for t in targets}
    for target in targets:  # a short run each first: caches, pools, JIT-free warm-up
        await probe.run(target, "closed", 4, warmup=0, duration=1.0)
    for connections in clients:
        for target in targets:
            run = await probe.run(
                target, "closed", connections, warmup=cfg.warmup, duration=cfg.duration
            )
            results[target.name][str(connections)] = run
            progress(
                f"  {label} {target.name:8} {connections:>3} conns: {run['rps']:>7,.0f} req/s  "
                f"p50 {run['p50_ms']:>7} ms  p99 {run['p99_ms']:>7} ms  PostgreSQL "
                f"{run['cpu_ms_per_page']['postgres']:.3f} ms/page  errors {run['errors']}"
            )
    return results


async def fixed_rate(
    probe: Probe, targets: list[Target], rate: float, cfg: Config
) -> dict[str, dict[str, Any]]:
    """Each target at the same fixed offered rate (open loop)."""
    results = {}
    for target in targets:
        run = await probe.run(
            target,
            "open",
            cfg.open_connections,
            warmup=cfg.warmup,
            duration=cfg.open_duration,
            rate=rate,
        )
        results[target.name] = run
        progress(
            f"  {target.name:8} at {rate:,.0f} req/s: achieved {run['rps']:,.0f}  p50 "
            f"{run['p50_ms']} ms  p99 {run['p99_ms']} ms  late {run['late']}  "
            f"errors {run['errors']}"
        )
    return results


async def explain_naive(database_url: str, viewer: int) -> dict[str, Any]:
    """EXPLAIN ANALYZE of the naive query for one viewer: its plan's shape and time."""
    import asyncpg

    from bench.feed.apps import NAIVE_POSTS_SQL

    conn = await asyncpg.connect(database_url)
    try:
        await conn.fetch(NAIVE_POSTS_SQL, viewer, 21)  # warm the buffers first
        rows = await conn.fetch(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + NAIVE_POSTS_SQL, viewer, 21
        )
        text = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + NAIVE_POSTS_SQL, viewer, 21)
    finally:
        await conn.close()
    plan = json.loads(rows[0][0])[0]

    def nodes(node: dict[str, Any]) -> list[str]:
        out = [
            node["Node Type"] + (f" on {node['Relation Name']}" if "Relation Name" in node else "")
        ]
        for child in node.get("Plans", []):
            out += nodes(child)
        return out

    def rows_read(node: dict[str, Any]) -> int:
        own = int(node.get("Actual Rows", 0)) * int(node.get("Actual Loops", 1))
        return max([own, *(rows_read(c) for c in node.get("Plans", []))])

    top = plan["Plan"]
    return {
        "execution_ms": round(float(plan["Execution Time"]), 2),
        "nodes": nodes(top),
        "largest_row_count": rows_read(top),
        "shared_buffers_hit": int(top.get("Shared Hit Blocks", 0)),
        "shared_buffers_read": int(top.get("Shared Read Blocks", 0)),
        "text": [row[0] for row in text],
    }
