"""`python -m bench.feed`: the whole feed benchmark, start to end (see the package doc).

Phases, each announced by a progress line:
1. PostgreSQL and Redis of its own, migrated; the network seeded with COPY; every
   user's Redis feed written by `FeedStore.write_rebuilt`, a sample checked against
   the rebuild query.
2. Today's network: ours (`uvicorn app:app`) and the baselines, same pages checked for
   every viewer, closed loop at each connection count; the fixed-rate runs; ours and
   the floor as 2 processes sharing the port (`make run` with API_WORKERS=2), and ours
   under `uvicorn --workers 2` beside them.
3. The feed page with its social fields (likes, comments, viewerHasLiked) against the
   plain page, on ours, in the same run (`social`).
4. Live delivery to the subscribers of one author, through the real worker.
5. The history network: older posts added, the same closed-loop runs again.
6. Fan-out on write against the ZADD ceiling.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from types import FrameType
from typing import Any

from bench.common import ROOT, machine_info, stamp, write_results
from bench.feed import fanout, live, seeding, social
from bench.feed.config import Config, build_config, parse_args
from bench.feed.network import Network, build_network
from bench.feed.pgcpu import ProcessTreeCpu, postmaster_pid
from bench.feed.progress import progress
from bench.feed.reads import (
    Probe,
    Target,
    closed_round,
    explain_naive,
    fixed_rate,
    same_pages,
    saturation,
)
from bench.feed.report import goals, print_report
from bench.feed.servers import Children, Databases, embedded_databases, server_env, start_server
from infra.embedded import free_port
from infra.resources import Resources
from infra.security import issue_token
from settings import Settings

# The query budget of every bench user (points an hour): charged like production's,
# never spent under the bench's load. "unlimited" runs the same app with budgets off.
BENCH_BUDGET_POINTS = 1_000_000_000


class Interrupted(Exception):
    """SIGTERM: unwind through every cleanup, as Ctrl-C does."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


class Clock:
    """Seconds per phase, for the report's last line."""

    def __init__(self) -> None:
        self.started = self.last = time.monotonic()
        self.phases: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.phases[f"{name}_s"] = round(now - self.last, 1)
        self.last = now

    def total(self) -> dict[str, float]:
        return {**self.phases, "total_s": round(time.monotonic() - self.started, 1)}


def describe_network(net: Network, cfg: Config) -> tuple[dict[str, Any], int]:
    """The network's shape for the report, and the read phase's celebrity threshold:
    10,000 users cannot give anyone 10,000 followers, so it is the follower count of the
    k-th most followed account (exactly `celebrities` accounts are pulled at read time)."""
    counts = sorted(net.follower_count, reverse=True)
    threshold = cfg.read_threshold or counts[cfg.celebrities - 1]
    shape = {
        "users": cfg.users,
        "follows": net.edges,
        "posts": len(net.post_ids),
        "median_followers": sorted(net.follower_count[1:])[cfg.users // 2],
        "top_followers": counts[:8],
        "viewers": len(net.viewers),
        "viewer_followees": round(statistics.mean(len(net.following[v]) for v in net.viewers)),
        "read_threshold": threshold,
        "celebrities": sum(1 for c in net.follower_count if c >= threshold),
        "fanout_threshold": cfg.fanout_threshold,
    }
    return shape, threshold


class FeedBench:
    """One run: the resources and processes every phase shares, and the report."""

    def __init__(self, cfg: Config, db: Databases, tmp: Path) -> None:
        self.cfg, self.db, self.tmp = cfg, db, tmp
        self.clock = Clock()
        self.children = Children()
        self.secret = "bench-secret-key-" + os.urandom(16).hex()
        self.report: dict[str, Any] = {
            "timestamp": stamp(),
            "machine": machine_info(),
            "config": asdict(cfg),
            "reads": {},
        }
        self.reads: dict[str, Any] = self.report["reads"]

    async def run(self) -> dict[str, Any]:
        cfg = self.cfg
        net = await self.seed()
        try:
            async with Resources.open(self.settings) as res:
                self.report.update(await feeds_phase(cfg, net, res))
                self.clock.lap("feeds")
                self.postgres = ProcessTreeCpu(postmaster_pid(self.db.pgdata))
                tokens = [
                    issue_token(v, secret=self.secret, ttl_seconds=6 * 3600)
                    for v in sorted(net.viewers)
                ]
                redis = ProcessTreeCpu(int((await res.redis.info("server"))["process_id"]))
                self.probe = Probe(tokens, self.postgres, redis)
                targets = await self.start_targets()
                await self.reads_today(net, targets, tokens)
                if "social" not in cfg.skip:
                    self.report["social"] = await social.social_phase(
                        cfg,
                        self.probe,
                        targets[0].server,
                        tokens,
                        sorted(net.viewers),
                        self.db.pg_url,
                        self.db.redis_url,
                        cfg.users,
                    )
                    self.clock.lap("social")
                if "live" not in cfg.skip:
                    self.report["live"] = await live_phase(self, res)
                    self.clock.lap("live")
                if "history" not in cfg.skip:
                    await self.reads_history(net, res, targets, tokens)
                for server in {t.server.name: t.server for t in targets}.values():
                    self.children.stop_server(server)
            if "fanout" not in cfg.skip:
                fan_settings = replace(
                    self.settings, celebrity_follower_threshold=cfg.fanout_threshold
                )
                async with Resources.open(fan_settings) as res:
                    self.report["fanout"] = await fanout_phase(cfg, net, self.db, res)
                self.clock.lap("fanout")
            self.report["versions"] = await versions(self.db.redis_url)
        finally:
            self.children.stop_all()
        self.report["timings"] = self.clock.total()
        self.report["goals"] = [asdict(g) | {"verdict": g.verdict} for g in goals(self.report)]
        return self.report

    async def seed(self) -> Network:
        """The network, in memory and then in PostgreSQL; the settings of the run."""
        cfg = self.cfg
        progress(f"network: {cfg.users:,} users, {cfg.posts:,} posts (seed {cfg.seed})")
        net = build_network(cfg)
        self.report["network"], self.threshold = describe_network(net, cfg)
        shape = self.report["network"]
        progress(
            f"  {net.edges:,} follows; most followed {shape['top_followers'][:5]}; median "
            f"{shape['median_followers']}; read-phase celebrity threshold "
            f"{self.threshold:,} ({shape['celebrities']} accounts)"
        )
        progress("seeding PostgreSQL (COPY)")
        await seeding.seed_network(self.db.pg_url, net, cfg)
        self.clock.lap("seed")
        self.settings = Settings(
            database_url=self.db.pg_url,
            redis_url=self.db.redis_url,
            secret_key=self.secret,
            data_dir=self.tmp / "data",
            media_root=self.tmp / "media",
            feed_cap=cfg.feed_cap,
            celebrity_follower_threshold=self.threshold,
        )
        return net

    def server_env(self, public_port: int, threshold: int) -> dict[str, str]:
        return server_env(
            self.db,
            self.tmp,
            secret=self.secret,
            public_port=public_port,
            CELEBRITY_FOLLOWER_THRESHOLD=str(threshold),
            FEED_CAP=str(self.cfg.feed_cap),
            # Budgets charged as in production (leases, `extensions.cost`), but too large to
            # run out under the bench's load (docs/limits.md).
            QUERY_BUDGET_POINTS=str(BENCH_BUDGET_POINTS),
        )

    async def start_targets(self) -> list[Target]:
        """Ours and the baselines, one process each; media URLs name ours' port in both,
        so that their pages compare equal."""
        port = free_port()
        self.env = self.server_env(port, self.threshold)
        ours = await start_server(self.children, "ours", "app:app", self.env, port=port)
        base = await start_server(
            self.children, "baselines", "bench.feed.apps:create_app", self.env, factory=True
        )
        # The same app with no cost limits at all: what budgets cost the feed's hot path.
        unlimited_env = dict(self.env, QUERY_BUDGET_POINTS="0", MAX_QUERY_COST="0")
        unlimited = await start_server(self.children, "ours_unlimited", "app:app", unlimited_env)
        progress(f"  servers up: ours :{ours.port} (pid {ours.pids[0]}), baselines :{base.port}")
        return [
            Target("ours", ours, "/graphql"),
            Target("naive", base, "/naive"),
            Target("floor", base, "/floor"),
            Target("unlimited", unlimited, "/graphql"),
        ]

    async def reads_today(self, net: Network, targets: list[Target], tokens: list[str]) -> None:
        cfg, reads, probe = self.cfg, self.reads, self.probe
        reads["pages_today"] = await check_pages(targets, tokens)
        reads["postgres_idle_ms_per_s"] = await probe.idle_postgres()
        progress("feed reads, today's network: ours (GraphQL) vs naive SQL vs floor")
        reads["today"] = await closed_round(probe, targets, cfg.clients, cfg, "today")
        reads["naive_plan_today"] = await explain_naive(self.db.pg_url, sorted(net.viewers)[0])
        if "fixed" not in cfg.skip:
            floor_rps = saturation(reads["today"]["floor"])[1]["rps"]
            rate = round(floor_rps * cfg.open_fraction, 1)
            progress(f"fixed offered rate: {rate:,.0f} req/s (half the floor's saturation)")
            reads["fixed_rate"] = {
                "rate": rate,
                "connections": cfg.open_connections,
                "runs": await fixed_rate(probe, [targets[0], targets[2]], rate, cfg),
            }
        plain = Target("plain", targets[1].server, "/plain")
        reads["plain_json_16"] = await probe.run(
            plain, "closed", 16, warmup=cfg.warmup, duration=cfg.duration
        )
        if "workers" not in cfg.skip:
            reads["workers"] = await workers_phase(cfg, probe, self.children, self.env, reads)
        reads["rss_mb"] = {
            name: round(ProcessTreeCpu(*t.server.pids).rss_bytes() / 2**20, 1)
            for name, t in (("api", targets[0]), ("baselines", targets[1]))
        }
        self.clock.lap("reads_today")

    async def reads_history(
        self, net: Network, res: Resources, targets: list[Target], tokens: list[str]
    ) -> None:
        await history_phase(self.cfg, net, self.db, res, self.report)
        self.clock.lap("history_seed")
        self.reads["pages_history"] = await check_pages(targets, tokens)
        progress("feed reads, history network")
        self.reads["history"] = await closed_round(
            self.probe, targets, self.cfg.history_clients, self.cfg, "history"
        )
        if "workers" not in self.cfg.skip:
            self.reads["workers_history"] = await workers_phase(
                self.cfg, self.probe, self.children, self.env, self.reads, network="history"
            )
        self.reads["naive_plan_history"] = await explain_naive(
            self.db.pg_url, sorted(net.viewers)[0]
        )
        self.clock.lap("reads_history")


async def feeds_phase(cfg: Config, net: Network, res: Resources) -> dict[str, Any]:
    """Every user's Redis feed, checked against the rebuild query; feed memory."""
    progress("building Redis feeds (FeedStore.write_rebuilt)")
    before = int((await res.redis.info("memory"))["used_memory"])
    started = time.monotonic()
    built = await seeding.build_feeds(net, res.feeds, cfg)
    seconds = time.monotonic() - started
    after = int((await res.redis.info("memory"))["used_memory"])
    build = {
        "feeds": built["feeds"],
        "entries": built["entries"],
        "seconds": round(seconds, 1),
        "feeds_per_s": round(built["feeds"] / seconds),
        "full_feed_rebuild_redis_ms": await seeding.full_rebuild_cost(net, res.feeds, cfg),
    }
    checked = await seeding.check_rebuild_sample(net, res.engine, cfg)
    progress(f"  {built['entries']:,} entries in {seconds:.0f} s; {checked} feeds match the query")
    full = [v for v in net.viewers if len(net.following[v]) >= cfg.viewer_follows][:10]
    memory = await seeding.feed_memory(res.redis, full)
    memory["used_memory_per_entry"] = round((after - before) / built["entries"], 1)
    return {"feed_build": build, "memory": memory}


async def check_pages(targets: list[Target], tokens: list[str]) -> dict[str, Any]:
    """Every viewer's first page, equal from every endpoint, or no figure counts."""
    check = await same_pages(targets, tokens)
    progress(
        f"  first pages identical across {', '.join(t.name for t in targets)} for "
        f"{check['identical']}/{check['viewers']} viewers ({check['min_edges']}+ edges each)"
    )
    if check["identical"] != check["viewers"]:
        raise RuntimeError("the endpoints disagree on a viewer's first page: no figure is valid")
    return check


async def workers_phase(
    cfg: Config,
    probe: Probe,
    children: Children,
    env: dict[str, str],
    reads: dict[str, Any],
    *,
    network: str = "today",
) -> dict[str, Any]:
    """Ours, naive and the floor as N processes sharing the port (what `make run` does
    with API_WORKERS=N), and (today's network) ours under `uvicorn --workers N` beside
    them, at the largest connection count. Each run records how the CPU spread over the
    processes. Naive is here because the design's point shows with more API processes:
    ours and the floor scale with them, naive is held by PostgreSQL."""
    out: dict[str, Any] = {}
    connections = max(cfg.clients)
    runs: tuple[tuple[str, str, bool, str, str], ...] = (
        ("ours", "app:app", False, "/graphql", "reuseport"),
        ("naive", "bench.feed.apps:create_app", True, "/naive", "reuseport"),
        ("floor", "bench.feed.apps:create_app", True, "/floor", "reuseport"),
    )
    if network == "today":
        runs += (("ours_uvicorn_workers", "app:app", False, "/graphql", "uvicorn-workers"),)
    for workers in (w for w in cfg.workers if w > 1):
        progress(f"{workers} API processes, {connections} connections")
        row: dict[str, Any] = {"workers": workers, "connections": connections}
        for name, target, factory, path, mode in runs:
            # The same environment: media URLs stay those of the single-process run.
            server = await start_server(
                children, name, target, env, workers=workers, factory=factory, mode=mode
            )
            try:
                endpoint = Target(name, server, path)
                await probe.run(endpoint, "closed", connections, warmup=0, duration=1.0)
                run = await probe.run(
                    endpoint, "closed", connections, warmup=cfg.warmup, duration=cfg.duration
                )
            finally:
                children.stop_server(server)
            run["mode"] = mode
            row[name] = run
            single = saturation(reads[network][name.split("_")[0]])[1]["rps"]
            spread = ", ".join(f"{s:.1f}" for s in run["server_cpu_s_by_process"] if s >= 0.05)
            progress(
                f"  {name:21} {run['rps']:>7,.0f} req/s ({run['rps'] / single:.2f}x one process)"
                f"  p50 {run['p50_ms']} ms  p99 {run['p99_ms']} ms  CPU s by process: {spread}"
            )
        out[str(workers)] = row
    return out


async def live_phase(bench: FeedBench, res: Resources) -> dict[str, Any]:
    """An author, subscribers following only them, a fresh API and the real worker."""
    cfg, db, children = bench.cfg, bench.db, bench.children
    progress(f"live delivery: {cfg.live_subscribers:,} WebSocket subscribers of one author")
    subscribers = await seeding.add_users(db.pg_url, cfg.live_subscribers, "live")
    [author] = await seeding.add_followed_accounts(db.pg_url, [subscribers], "liveauthor")
    await seeding.write_empty_feeds(res.feeds, [*subscribers, author])
    port = free_port()
    # The production threshold: the author is fanned out, as anyone with 1,000 followers.
    env = bench.server_env(port, cfg.fanout_threshold)
    api = await start_server(children, "live-api", "app:app", env, port=port)
    # arq logs every job: to a file, shown only if the phase fails.
    worker_log = bench.tmp / "worker.log"
    worker = children.spawn(
        [sys.executable, "-m", "arq", "workers.WorkerSettings"], env, log=worker_log
    )
    try:
        await wait_for_worker(res, worker)
        return await live.live_phase(
            subscribers=cfg.live_subscribers,
            posts=cfg.live_posts,
            api_port=api.port,
            api_pid=api.pids[0],
            tokens=[issue_token(u, secret=bench.secret, ttl_seconds=3600) for u in subscribers],
            author_token=issue_token(author, secret=bench.secret, ttl_seconds=3600),
            redis=res.redis,
            jobs=res.jobs,
            user_ids=subscribers,
            database_url=db.pg_url,
            postgres=bench.postgres,
        )
    except Exception:
        print(worker_log.read_text()[-4000:], file=sys.stderr)
        raise
    finally:
        # Stopped before the next phase: its crons (outbox relay, sweeper) would add
        # PostgreSQL CPU to the figures measured there.
        children.stop(worker)
        children.stop_server(api)


async def wait_for_worker(res: Resources, worker: Any, within: float = 60) -> None:
    """The worker writes its heartbeat key once its startup finished."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"the arq worker exited with {worker.returncode}")
        if [key async for key in res.redis.scan_iter("worker:heartbeat:*")]:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the arq worker did not start")


async def history_phase(
    cfg: Config, net: Network, db: Databases, res: Resources, report: dict[str, Any]
) -> None:
    """The older posts, in PostgreSQL and (what that changes) in Redis."""
    total = cfg.history_authors * cfg.history_posts_each
    progress(
        f"history network: {total:,} older posts by the {cfg.history_authors} accounts "
        "the viewers follow most (PostgreSQL generate_series)"
    )
    history = await seeding.seed_history(db.pg_url, net, cfg)
    await seeding.refresh_after_history(db.pg_url, net, res.feeds, history)
    chosen = set(history.authors)
    per_viewer = [len(chosen.intersection(net.following[v])) for v in net.viewers]
    visible = [
        sum(net.post_count[f] for f in net.following[v]) + net.post_count[v]
        + cfg.history_posts_each * n
        for v, n in zip(net.viewers, per_viewer, strict=True)
    ]  # fmt: skip
    report["history"] = {
        "authors": history.authors,
        "posts": history.posts,
        "seconds": history.seconds,
        "viewer_history_followees": round(statistics.mean(per_viewer)),
        "viewer_visible_posts": round(statistics.mean(visible)),
    }
    progress(
        f"  written in {history.seconds} s; a viewer follows {statistics.mean(per_viewer):.0f} "
        f"of these authors and can see {statistics.mean(visible):,.0f} posts"
    )


async def fanout_phase(cfg: Config, net: Network, db: Databases, res: Resources) -> dict[str, Any]:
    """Three extra authors fanned out to, against the ZADD ceiling of the same feeds."""
    import random

    from infra.feedstore import feed_key

    progress(f"fan-out (threshold {cfg.fanout_threshold:,}) vs pipelined ZADD ceiling")
    rng = random.Random(cfg.seed + 3)  # noqa: S311 - synthetic data, not secrets
    followers = [rng.sample(range(1, net.users + 1), size) for size in cfg.fanout_sizes]
    accounts = await seeding.add_followed_accounts(db.pg_url, followers, "fanout")
    authors = list(zip(accounts, followers, strict=True))
    largest = max(followers, key=len)
    ceiling = await fanout.zadd_ceiling(res.redis, db.redis_port, [feed_key(f) for f in largest])
    progress(
        f"  ceiling: {ceiling['ceiling_per_s']:,} ZADD/s ({ceiling['ceiling_method']}); "
        f"redis-py pipelines {ceiling['redis_py_per_s']:,}/s"
    )
    return {"ceiling": ceiling, "authors": await fanout.measure_fanout(res, authors, cfg.quick)}


async def versions(redis_url: str) -> dict[str, str]:
    from importlib.metadata import version

    from infra.redis import create_redis

    redis = create_redis(redis_url)
    try:
        info = await redis.info("server")
    finally:
        await redis.aclose()
    out = {"redis_server": str(info["redis_version"])}
    for package in ("uvicorn", "starlette", "strawberry-graphql", "asyncpg", "redis", "uvloop"):
        out[package] = version(package)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    cfg = build_config(parse_args(sys.argv[1:] if argv is None else argv))
    signal.signal(signal.SIGTERM, _on_sigterm)
    wall = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-feed-") as name:
            tmp = Path(name)
            # The embedded PostgreSQL runs as its own system user, which must reach its dir.
            os.chmod(tmp, 0o755)  # noqa: S103
            progress(f"starting PostgreSQL and Redis in {tmp}")
            with embedded_databases(tmp) as db:
                import uvloop

                report = uvloop.run(FeedBench(cfg, db, tmp).run())
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted: servers and child processes stopped", file=sys.stderr)
        return 130
    report["timings"]["wall_s"] = round(time.monotonic() - wall, 1)
    print_report(report)
    path = write_results("feed", report)
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
