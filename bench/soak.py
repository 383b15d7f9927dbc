"""`make soak`: an open-loop mixed workload against `make run`'s stack, for minutes.

    .venv/bin/python bench/soak.py [--duration 600] [--rate 50] [--users 40]
    make soak SOAK_ARGS="--duration 120"

It starts the whole stack as `make run` does (`run.py`: embedded PostgreSQL and Redis,
the API, the arq worker) on a free port with its own data directory, creates accounts,
follows and a first post per account through the public API, then offers requests at a
FIXED rate (open loop: a request starts on schedule whether or not the earlier ones have
answered, so a slow server shows up as latency and backlog instead of a politely slower
client). The mix, as in the issue: 90% feed reads (a fifth of them a second page), 5%
likes or follows (each toggling), 3% profile reads, 2% posts with real uploads
(createPost, the bytes to the upload target, completeUpload).

Latency is measured from the moment a request was due, not when it was sent (no
coordinated omission). A progress line every few seconds; at the end: requests/s,
p50/p99 per operation, errors (goal: 0), API and worker RSS after warm-up and at the
end (goal: under 10% growth), and the outbox and queue backlog after the load stops,
with the time they took to drain (goal: within 30 s). Results go to
bench/results/soak.json; docs/benchmarks.md has a run.

Limits: the stack runs with its development settings, except that the action rate
limits are switched off and the query budget raised out of reach (every simulated user
comes from 127.0.0.1 here, and a soak measures the system, not the limiter), see
SOAK_ENV; everything else is as `make run` has it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from common import COMPLETE_UPLOAD, CREATE_POST, FEED_QUERY, RESULTS, ROOT, machine_info
from seed import LOG_IN, SIGN_UP, Api, SeedError, photo, send_bytes

# One client IP plays every user: lift the limits meant for one real person or one IP,
# so that the soak measures the system, not the limiter.
SOAK_ENV = {
    "RATE_LIMITS_ENABLED": "false",
    "QUERY_BUDGET_POINTS": "1000000000",
}

FOLLOW = "mutation ($id: ID!) { follow(userId: $id) { errors { code message } } }"
UNFOLLOW = "mutation ($id: ID!) { unfollow(userId: $id) { errors { code message } } }"
LIKE = "mutation ($id: ID!) { likePost(postId: $id) { errors { code message } } }"
UNLIKE = "mutation ($id: ID!) { unlikePost(postId: $id) { errors { code message } } }"
PROFILE = """query ($username: String!) {
  user(username: $username) {
    id username displayName bio followerCount followingCount postCount viewerIsFollowing
    posts(first: 12) { edges { node { id media { url width height placeholder } } } }
  }
}"""
MIX = (("feed", 0.90), ("like_or_follow", 0.05), ("profile", 0.03), ("post", 0.02))
PERCENTILES = (50, 99)


@dataclass
class User:
    username: str
    user_id: str
    token: str
    cursor: str | None = None  # the end of its last first page: the next read's page 2


@dataclass
class State:
    users: list[User]
    posts: list[str]  # READY posts (seen in a feed) to like
    liked: set[tuple[int, str]] = field(default_factory=set)
    following: set[tuple[int, int]] = field(default_factory=set)
    photos: list[bytes] = field(default_factory=list)
    posted: int = 0


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)
    sent: int = 0
    done: int = 0
    dropped: int = 0

    def fail(self, op: str, what: str) -> None:
        self.errors[op] += 1
        self.samples.setdefault(op, what[:300])


class Failed(Exception):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# --- The stack --------------------------------------------------------------------------


class Stack:
    """`run.py` in a subprocess on its own port and data directory."""

    def __init__(self, port: int, data_dir: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, DATA_DIR=str(data_dir), PORT=str(port), **SOAK_ENV)
        for name in ("DATABASE_URL", "REDIS_URL", "MEDIA_ROOT", "STORAGE_BACKEND"):
            env.pop(name, None)
        self.log = (data_dir / "stack.log").open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - our own script
            [sys.executable, str(ROOT / "run.py"), "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def processes(self) -> tuple[list[psutil.Process], list[psutil.Process]]:
        """The API processes and the worker processes, as they are now (a supervisor may
        have restarted one)."""
        api, workers = [], []
        for child in psutil.Process(self.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                line = " ".join(child.cmdline())
                if "uvicorn" in line or "--api-process" in line:
                    api.append(child)
                elif "arq" in line and "WorkerSettings" in line:
                    workers.append(child)
        return api, workers

    def rss_mib(self) -> tuple[float, float]:
        api, workers = self.processes()

        def total(group: list[psutil.Process]) -> float:
            rss = 0
            for process in group:
                with contextlib.suppress(psutil.Error):
                    rss += process.memory_info().rss
            return rss / 2**20

        return total(api), total(workers)

    def urls(self) -> tuple[str, str]:
        """DATABASE_URL and REDIS_URL, as run.py handed them to its children."""
        api, _ = self.processes()
        environ = api[0].environ()
        return environ["DATABASE_URL"], environ["REDIS_URL"]

    async def wait_ready(self, within: float = 120) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise SeedError(f"run.py exited with {self.process.returncode}")
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    ready = await client.get("/readyz")
                    if ready.status_code == 200 and ready.json().get("workers", 1) > 0:
                        return
                await asyncio.sleep(0.5)
        raise SeedError("the stack did not become ready within 120 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


async def backlog(database_url: str, redis_url: str) -> tuple[int, int]:
    """Unsent outbox rows, and jobs queued or running in arq."""
    import asyncpg
    import redis.asyncio as aioredis

    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(dsn)
    try:
        unsent = await connection.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
    finally:
        await connection.close()
    client = aioredis.from_url(redis_url)
    try:
        # Jobs due now (arq keeps deferred jobs in the same sorted set, scored by when
        # they are due: a retry backing off is not backlog yet).
        # Jobs due now, not counting the worker's own crons (the outbox relay runs every
        # second for ever); arq keeps deferred jobs in the same sorted set, scored by when
        # they are due, and a retry backing off is not backlog yet.
        due = await client.zrangebyscore("arq:queue", "-inf", int(time.time() * 1000))
        queued = [job for job in due if not job.startswith(b"cron:")]
        # A job runs while both its in-progress key and its job key exist: arq deletes
        # the job key when the job finishes, but keeps a cron job's in-progress key a
        # while longer (so a cron is not enqueued twice).
        running = []
        async for key in client.scan_iter("arq:in-progress:*"):
            job_id = key.removeprefix(b"arq:in-progress:")
            if not job_id.startswith(b"cron:") and await client.exists(b"arq:job:" + job_id):
                running.append(job_id)
        if os.environ.get("SOAK_DEBUG"):
            print(f"backlog: {unsent} unsent, due {queued[:5]}, running {running[:5]}")
    finally:
        await client.aclose()
    return int(unsent), len(queued) + len(running)


# --- Set-up -----------------------------------------------------------------------------


async def sign_up(api: Api, username: str) -> User:
    password = "soak-password-123"  # noqa: S105 - throwaway accounts of a local stack
    data = (
        await api.call(
            SIGN_UP, username=username, email=f"{username}@soak.example", password=password
        )
    )["signUp"]
    if data["errors"]:
        data = await api.mutate(LOG_IN, "logIn", username=username, password=password)
    return User(username, data["user"]["id"], data["token"])


async def publish(api: Api, uploads: httpx.AsyncClient, state: State, who: User) -> str:
    state.posted += 1
    data = state.photos[state.posted % len(state.photos)]
    created = await api.mutate(
        CREATE_POST,
        "createPost",
        who.token,
        input={
            "caption": f"soak #{state.posted} #soak",
            "media": [{"contentType": "image/jpeg", "byteSize": str(len(data))}],
            "idempotencyKey": f"soak/{who.username}/{state.posted}/{random.random()}",  # noqa: S311
        },
    )
    for target in created["uploads"]:
        await send_bytes(uploads, target, data)
    await api.mutate(COMPLETE_UPLOAD, "completeUpload", who.token, id=created["post"]["id"])
    return str(created["post"]["id"])


async def set_up(
    api: Api, uploads: httpx.AsyncClient, users: int, follows: int, rng: random.Random
) -> State:
    photos = [photo("soak", index, f"soak photo {index}") for index in range(6)]
    state = State(users=[], posts=[], photos=photos)
    gate = asyncio.Semaphore(4)

    async def one(index: int) -> User:
        async with gate:
            return await sign_up(api, f"soak{index:04d}")

    state.users = list(await asyncio.gather(*(one(i) for i in range(users))))
    print(f"set-up: {users} accounts", file=sys.stderr)
    pairs = set()
    for a in range(users):
        for b in rng.sample(range(users), min(follows, users - 1) + 1):
            if a != b:
                pairs.add((a, b))

    async def follow(pair: tuple[int, int]) -> None:
        async with gate:
            a, b = pair
            await api.mutate(FOLLOW, "follow", state.users[a].token, id=state.users[b].user_id)

    await asyncio.gather(*(follow(p) for p in sorted(pairs)))
    state.following = pairs
    print(f"set-up: {len(pairs)} follows", file=sys.stderr)

    async def first_post(who: User) -> str:
        async with gate:
            return await publish(api, uploads, state, who)

    posted = await asyncio.gather(*(first_post(u) for u in state.users))
    print(f"set-up: {len(posted)} posts uploaded", file=sys.stderr)
    return state


# --- The workload -----------------------------------------------------------------------


def operations(
    api: Api, uploads: httpx.AsyncClient, state: State, rng: random.Random
) -> dict[str, Callable[[], Awaitable[str]]]:
    """Each operation returns the name it is reported under."""

    async def feed() -> str:
        user = rng.choice(state.users)
        second = user.cursor is not None and rng.random() < 0.2
        data = await api.call(FEED_QUERY, user.token, after=user.cursor if second else None)
        if len(state.posts) < 5000:  # what a feed shows is READY: something to like
            seen = {edge["node"]["id"] for edge in data["feed"]["edges"]}
            state.posts.extend(seen.difference(state.posts))
        page = data["feed"]["pageInfo"]
        if not second:
            user.cursor = page["endCursor"] if page["hasNextPage"] else None
        return "feed page 2" if second else "feed"

    async def like_or_follow() -> str:
        who = rng.randrange(len(state.users))
        user = state.users[who]
        if rng.random() < 0.5 and state.posts:
            post = rng.choice(state.posts)
            key = (who, post)
            liked = key in state.liked
            state.liked.symmetric_difference_update({key})
            field_name = "unlikePost" if liked else "likePost"
            await api.mutate(UNLIKE if liked else LIKE, field_name, user.token, id=post)
            return "like"
        other = rng.randrange(len(state.users))
        if other == who:
            other = (other + 1) % len(state.users)
        pair = (who, other)
        followed = pair in state.following
        state.following.symmetric_difference_update({pair})
        target = state.users[other].user_id
        if followed:
            await api.mutate(UNFOLLOW, "unfollow", user.token, id=target)
        else:
            await api.mutate(FOLLOW, "follow", user.token, id=target)
        return "follow"

    async def profile() -> str:
        viewer, other = rng.choice(state.users), rng.choice(state.users)
        data = await api.call(PROFILE, viewer.token, username=other.username)
        if data["user"] is None:
            raise Failed(f"profile of {other.username} is null")
        return "profile"

    async def post() -> str:
        await publish(api, uploads, state, rng.choice(state.users))
        return "post"

    return {"feed": feed, "like_or_follow": like_or_follow, "profile": profile, "post": post}


async def offer(
    ops: dict[str, Callable[[], Awaitable[str]]],
    rate: float,
    duration: float,
    max_in_flight: int,
    rng: random.Random,
    tally: Tally,
    on_tick: Callable[[float], Awaitable[None]],
) -> float:
    """Starts requests on a fixed schedule for `duration` seconds; returns the time taken
    including the wait for the last answers."""
    loop = asyncio.get_running_loop()
    names = [name for name, _ in MIX]
    weights = [weight for _, weight in MIX]
    in_flight: set[asyncio.Task[None]] = set()
    start = loop.time()
    next_tick = start + 5

    async def run(name: str, due: float) -> None:
        try:
            reported = await ops[name]()
        except (SeedError, Failed, httpx.HTTPError, KeyError, TypeError) as exc:
            tally.fail(name, f"{type(exc).__name__}: {exc}")
        else:
            tally.latencies[reported].append(loop.time() - due)
        finally:
            tally.done += 1

    index = 0
    while True:
        due = start + index / rate
        if due - start >= duration:
            break
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if loop.time() >= next_tick:
            await on_tick(loop.time() - start)
            next_tick += 5
        index += 1
        tally.sent += 1
        if len(in_flight) >= max_in_flight:
            tally.dropped += 1
            tally.fail("dropped", f"more than {max_in_flight} requests in flight")
            continue
        name = rng.choices(names, weights)[0]
        task = asyncio.create_task(run(name, due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(in_flight, timeout=60)
    return loop.time() - start


async def soak(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)  # noqa: S311 - a workload mix, not secrets
    data_dir = Path(tempfile.mkdtemp(prefix="instagraph-soak-"))
    port = args.port or free_port()
    print(f"starting the stack (run.py) on port {port}, data in {data_dir}", file=sys.stderr)
    stack = Stack(port, data_dir)
    try:
        await stack.wait_ready()
        limits = httpx.Limits(max_connections=args.connections)
        async with (
            httpx.AsyncClient(base_url=stack.url, timeout=30, limits=limits) as client,
            httpx.AsyncClient(timeout=60, limits=limits) as uploads,
        ):
            api = Api(client)
            state = await set_up(api, uploads, args.users, args.follows, rng)
            ops = operations(api, uploads, state, rng)
            tally = Tally()
            warm_up = min(args.warm_up, args.duration / 2)
            rss: dict[str, tuple[float, float]] = {}

            async def tick(elapsed: float) -> None:
                if "start" not in rss and elapsed >= warm_up:
                    rss["start"] = stack.rss_mib()
                feed = tally.latencies.get("feed", [])[-2000:]
                print(
                    f"[{elapsed:6.0f}/{args.duration:.0f} s] sent {tally.sent} "
                    f"answered {tally.done} errors {sum(tally.errors.values())} "
                    f"feed p50 {percentile(feed, 50) * 1000:.1f} ms "
                    f"p99 {percentile(feed, 99) * 1000:.1f} ms",
                    file=sys.stderr,
                    flush=True,
                )

            print(
                f"offering {args.rate:g} requests/s for {args.duration:g} s "
                f"(warm-up {warm_up:g} s)",
                file=sys.stderr,
            )
            elapsed = await offer(
                ops, args.rate, args.duration, args.max_in_flight, rng, tally, tick
            )
            rss.setdefault("start", stack.rss_mib())
            rss["end"] = stack.rss_mib()
        database_url, redis_url = stack.urls()
        stopped = time.monotonic()
        outbox_end, queue_end = await backlog(database_url, redis_url)
        drained_after: float | None = None
        while time.monotonic() - stopped < args.drain_within:
            unsent, queued = await backlog(database_url, redis_url)
            if unsent == 0 and queued == 0:
                drained_after = time.monotonic() - stopped
                break
            await asyncio.sleep(0.5)
    finally:
        stack.stop()

    answered = sum(len(v) for v in tally.latencies.values())
    result: dict[str, Any] = {
        "machine": machine_info(),
        "offered_rate": args.rate,
        "duration_s": args.duration,
        "users": args.users,
        "requests_sent": tally.sent,
        "requests_answered_ok": answered,
        "achieved_rate": round(answered / elapsed, 1),
        "errors": dict(tally.errors),
        "error_samples": tally.samples,
        "latency_ms": {
            op: {f"p{p}": round(percentile(values, p) * 1000, 1) for p in PERCENTILES}
            | {"count": len(values)}
            for op, values in sorted(tally.latencies.items())
        },
        "rss_mib": {
            "api_after_warm_up": round(rss["start"][0], 1),
            "api_end": round(rss["end"][0], 1),
            "worker_after_warm_up": round(rss["start"][1], 1),
            "worker_end": round(rss["end"][1], 1),
        },
        "backlog_at_stop": {"outbox_unsent": outbox_end, "arq_jobs": queue_end},
        "drained_after_s": None if drained_after is None else round(drained_after, 1),
    }
    growth = {
        name: (result["rss_mib"][f"{name}_end"] / result["rss_mib"][f"{name}_after_warm_up"] - 1)
        for name in ("api", "worker")
        if result["rss_mib"][f"{name}_after_warm_up"]
    }
    result["rss_growth_pct"] = {name: round(value * 100, 1) for name, value in growth.items()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    report(result)
    ok = (
        not tally.errors
        and drained_after is not None
        and all(value < 0.10 for value in growth.values())
    )
    return 0 if ok else 1


def report(result: dict[str, Any]) -> None:
    print()
    print(
        f"offered {result['offered_rate']:g}/s for {result['duration_s']:g} s; "
        f"answered {result['achieved_rate']}/s ({result['requests_answered_ok']} ok of "
        f"{result['requests_sent']})"
    )
    print("| operation | count | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for op, figures in result["latency_ms"].items():
        print(f"| {op} | {figures['count']} | {figures['p50']} | {figures['p99']} |")
    errors = sum(result["errors"].values())
    print(f"errors: {errors} (goal 0) {result['errors'] or ''}")
    for op, sample in result["error_samples"].items():
        print(f"  {op}: {sample}")
    rss = result["rss_mib"]
    growth = result["rss_growth_pct"]
    print(
        f"RSS API {rss['api_after_warm_up']} -> {rss['api_end']} MiB "
        f"({growth.get('api', 'n/a')}%), worker {rss['worker_after_warm_up']} -> "
        f"{rss['worker_end']} MiB ({growth.get('worker', 'n/a')}%) (goal: under 10%)"
    )
    stop = result["backlog_at_stop"]
    drained = result["drained_after_s"]
    print(
        f"backlog when the load stopped: {stop['outbox_unsent']} outbox rows, "
        f"{stop['arq_jobs']} jobs; drained "
        + (f"after {drained} s" if drained is not None else "NOT within the limit")
        + " (goal: within 30 s)"
    )
    print(f"written to {RESULTS / 'soak.json'}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds of load")
    parser.add_argument("--rate", type=float, default=50, help="requests offered per second")
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--follows", type=int, default=15, help="follows per user at set-up")
    parser.add_argument("--warm-up", type=float, default=60, help="seconds before RSS start")
    parser.add_argument("--drain-within", type=float, default=30)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--max-in-flight", type=int, default=2000)
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        return asyncio.run(soak(args))
    except SeedError as exc:
        print(f"soak failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
