"""Live delivery: many WebSocket subscribers of one author, and the time from a post
becoming READY to each subscriber receiving it.

The parent side (`live_phase`) makes an author and `live_subscribers` accounts who
follow only them (with maintained, empty feeds), starts the API and the real arq
worker, and opens every subscription from a child process:

    python -m bench.feed.live < spec.json

The child (`main`) holds all connections in one asyncio process with the `websockets`
library (graphql-transport-ws, text frames, the token in connection_init's payload,
`subscription { feedItemAdded { id } }`) and stamps each `next` message with the wall
clock as it arrives. Then the author posts through the public API exactly as a client
does (createPost, the bytes to the upload target, completeUpload); the worker renders
the photo, makes the post READY (the transition writes the outbox row), relays it and
fans it out, and the API's pub/sub hub delivers it. Latency is the receive time minus
the post's `status_changed_at` (set in the READY transaction, so a few milliseconds
before it commits: the figure errs on the slow side).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench.common import COMPLETE_UPLOAD, CREATE_POST, FEED_ITEM_ADDED, ROOT

CONNECT_CONCURRENCY = 50
# A post not delivered to everyone this long after READY is reported as such.
DELIVERY_DEADLINE_SECONDS = 15.0
PROTOCOL = "graphql-transport-ws"


# --- The child: every subscriber in one process ------------------------------------------


@dataclass
class Subscribers:
    """What the child knows: connections up, and each post's receive times."""

    connected: int = 0
    failed: int = 0
    received: dict[str, list[float]] | None = None


async def _subscriber(
    url: str, token: str, state: Subscribers, gate: asyncio.Semaphore, stop: asyncio.Event
) -> None:
    from websockets.asyncio.client import connect
    from websockets.typing import Subprotocol

    async with gate:
        ws = await connect(
            url, subprotocols=[Subprotocol(PROTOCOL)], open_timeout=60, ping_interval=None
        )
        init = {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
        await ws.send(json.dumps(init))
        ack = json.loads(await ws.recv())
        if ack.get("type") != "connection_ack":
            raise RuntimeError(f"no connection_ack: {ack}")
        subscribe = {"id": "1", "type": "subscribe", "payload": {"query": FEED_ITEM_ADDED}}
        await ws.send(json.dumps(subscribe))
    state.connected += 1
    try:
        reader = asyncio.create_task(_read(ws, state))
        await stop.wait()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    finally:
        await ws.close()


async def _read(ws: Any, state: Subscribers) -> None:
    received = state.received
    assert received is not None
    async for raw in ws:
        at = time.time()
        message = json.loads(raw)
        kind = message.get("type")
        if kind == "next":
            post = message["payload"]["data"]["feedItemAdded"]["id"]
            times = received.setdefault(post, [])
            times.append(at)
            if len(times) == state.connected:  # everyone has it: tell the parent
                print(json.dumps({"delivered": post}), flush=True)
        elif kind == "ping":
            await ws.send(json.dumps({"type": "pong"}))
        elif kind in ("error", "complete"):
            raise RuntimeError(f"subscription ended: {message}")


async def _child(spec: dict[str, Any]) -> None:
    tokens: list[str] = spec["tokens"]
    state = Subscribers(received={})
    stop = asyncio.Event()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    tasks = [asyncio.create_task(_subscriber(spec["url"], t, state, gate, stop)) for t in tokens]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + float(spec["connect_within"])
    while state.connected < len(tokens) and loop.time() < deadline:
        failed = [t for t in tasks if t.done()]
        if failed:
            break
        await asyncio.sleep(0.05)
    state.failed = sum(1 for t in tasks if t.done())
    print(json.dumps({"connected": state.connected, "failed": state.failed}), flush=True)
    # The parent says when it has seen every post through (a line on stdin).
    await loop.run_in_executor(None, sys.stdin.readline)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({"received": state.received}), flush=True)


def main() -> None:
    import uvloop

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    spec = json.loads(sys.stdin.readline())
    uvloop.run(_child(spec))


# --- The parent: accounts, servers, posts, figures ----------------------------------------


def small_photo() -> bytes:
    """A 640x800 JPEG: the worker renders it in a few tens of milliseconds (rendering is
    not what this measures; delivery after READY is)."""
    from PIL import Image

    image = Image.linear_gradient("L").resize((640, 800)).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


async def post_photo(client: Any, token: str, photo: bytes, caption: str) -> str:
    """createPost, PUT the bytes to the upload target, completeUpload: the post's ID."""
    headers = {"Authorization": f"Bearer {token}"}

    async def call(query: str, **variables: Any) -> Any:
        response = await client.post(
            "/graphql", json={"query": query, "variables": variables}, headers=headers
        )
        body = response.json()
        if response.status_code != 200 or body.get("errors"):
            raise RuntimeError(f"{response.status_code}: {body}")
        return body["data"]

    media = [{"contentType": "image/jpeg", "byteSize": str(len(photo))}]
    created = (await call(CREATE_POST, input={"caption": caption, "media": media}))["createPost"]
    if created["errors"]:
        raise RuntimeError(f"createPost: {created['errors']}")
    for target in created["uploads"]:
        put_headers = {h["name"]: h["value"] for h in target["headers"]}
        response = await client.put(target["url"], content=photo, headers=put_headers)
        response.raise_for_status()
    post_id = created["post"]["id"]
    done = (await call(COMPLETE_UPLOAD, id=post_id))["completeUpload"]
    if done["errors"]:
        raise RuntimeError(f"completeUpload: {done['errors']}")
    return str(post_id)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def live_phase(
    *,
    subscribers: int,
    posts: int,
    api_port: int,
    api_pid: int,
    tokens: list[str],
    author_token: str,
    redis: Any,
    jobs: Any,
    user_ids: list[int],
    database_url: str,
    postgres: Any,
) -> dict[str, Any]:
    """Connect the subscribers, post `posts` photos one after another (each once every
    subscriber has the previous one, or after a deadline), and measure."""
    import httpx

    from bench.feed.pgcpu import ProcessTreeCpu
    from bench.feed.progress import progress
    from infra.embedded import die_with_parent
    from infra.feedstore import live_key
    from infra.ids import pk_from_global_id

    api = ProcessTreeCpu(api_pid)
    rss_before = api.rss_bytes()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.feed.live",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        start_new_session=True,
        preexec_fn=die_with_parent,
        limit=2**26,  # the final line carries every receive time
    )
    assert proc.stdin is not None and proc.stdout is not None
    spec = {"url": f"ws://127.0.0.1:{api_port}/graphql", "tokens": tokens, "connect_within": 120}
    started = time.monotonic()
    proc.stdin.write(json.dumps(spec).encode() + b"\n")
    await proc.stdin.drain()
    try:
        hello = json.loads(await asyncio.wait_for(proc.stdout.readline(), 180))
        connect_s = time.monotonic() - started
        # Subscribed = the API's hub joined them (their presence key is its last step).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pipe = redis.pipeline(transaction=False)
            for user in user_ids:
                pipe.exists(live_key(user))
            present = sum(await pipe.execute())
            if present >= hello["connected"]:
                break
            await asyncio.sleep(0.1)
        progress(
            f"  {hello['connected']:,} subscribers connected in {connect_s:.1f} s "
            f"({hello['failed']} failed), {present:,} registered"
        )
        rss_connected = api.rss_bytes()
        photo = small_photo()
        cpu_before = (api.seconds(), postgres.seconds(), await _transactions(database_url))
        post_ids = []
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=60) as c:
            for index in range(posts):
                post_ids.append(await post_photo(c, author_token, photo, f"Live {index} #bench"))
                await _wait_ready(database_url, pk_from_global_id(post_ids[-1], "Post"))
                # One post at a time: the next once every subscriber has this one.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.stdout.readline(), DELIVERY_DEADLINE_SECONDS)
        rss_delivered = api.rss_bytes()
        cpu_after = (api.seconds(), postgres.seconds(), await _transactions(database_url))
        proc.stdin.write(b"done\n")
        await proc.stdin.drain()
        final: dict[str, Any] = {}
        while "received" not in final:  # late "delivered" lines may come first
            final = json.loads(await asyncio.wait_for(proc.stdout.readline(), 120))
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    pks = [pk_from_global_id(p, "Post") for p in post_ids]
    stages = await _stages(database_url, jobs, pks)
    received: dict[str, list[float]] = final["received"]
    latencies: list[float] = []
    per_post = []
    for post, pk in zip(post_ids, pks, strict=True):
        times = sorted(received.get(post, []))
        stage = stages.get(pk, {})
        ready_at = stage.pop("ready_at", None)
        row: dict[str, Any] = {"delivered": len(times), "ready": ready_at is not None}
        if ready_at is not None and times:
            delays = [t - ready_at for t in times]
            latencies += delays
            # Where the time goes, each stage from READY (ms): the relay's enqueue, the
            # worker starting the fan-out job and finishing it, then the deliveries.
            row.update({f"{k}_ms": round((v - ready_at) * 1000, 1) for k, v in stage.items()})
            row["first_received_ms"] = round(delays[0] * 1000, 1)
            row["p50_ms"] = round(_percentile(delays, 0.5) * 1000, 1)
            row["last_received_ms"] = round(delays[-1] * 1000, 1)
        per_post.append(row)
    expected = hello["connected"] * len(post_ids)

    def per_delivery(seconds: float) -> float:
        return round(seconds * 1000 / max(len(latencies), 1), 3)

    return {
        "subscribers": subscribers,
        "connected": hello["connected"],
        "connect_s": round(connect_s, 1),
        "posts": len(post_ids),
        "deliveries": len(latencies),
        "expected_deliveries": expected,
        "p50_ms": round(_percentile(latencies, 0.5) * 1000, 1) if latencies else None,
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 1) if latencies else None,
        "max_ms": round(max(latencies) * 1000, 1) if latencies else None,
        "mean_ms": round(statistics.mean(latencies) * 1000, 1) if latencies else None,
        "per_post": per_post,
        "api_rss_mb_before": round(rss_before / 2**20, 1),
        "api_rss_mb_connected": round(rss_connected / 2**20, 1),
        "api_rss_mb_delivered": round(rss_delivered / 2**20, 1),
        # Everything the posts cost from createPost to the last delivery (the worker's
        # rendering is in PostgreSQL's share only through its few statements).
        "api_cpu_ms_per_delivery": per_delivery(cpu_after[0] - cpu_before[0]),
        "postgres_cpu_ms_per_delivery": per_delivery(cpu_after[1] - cpu_before[1]),
        "postgres_transactions_per_delivery": round(
            (cpu_after[2] - cpu_before[2]) / max(len(latencies), 1), 2
        ),
    }


async def _stages(database_url: str, jobs: Any, post_ids: list[int]) -> dict[int, dict[str, float]]:
    """Per post, the wall-clock moments of the path from READY to the fan-out's end: the
    READY transition (`status_changed_at`), the outbox row marked sent, and the arq
    fan-out job's enqueue, start and finish (arq keeps each job's result an hour)."""
    import asyncpg
    from arq.jobs import Job

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT p.id, p.status, p.status_changed_at, o.sent_at FROM posts p"
            " LEFT JOIN outbox o ON o.kind = 'fan_out' AND (o.payload->>'post_id')::bigint = p.id"
            " WHERE p.id = ANY($1::bigint[])",
            post_ids,
        )
    finally:
        await conn.close()
    out: dict[int, dict[str, float]] = {}
    for row in rows:
        if row["status"] != "READY":
            continue
        stage = {"ready_at": row["status_changed_at"].timestamp()}
        if row["sent_at"] is not None:
            stage["relayed"] = row["sent_at"].timestamp()
        # The job id workers.jobs.enqueue_fan_out gives a post's fan-out.
        info = await Job(f"fan_out:{row['id']}", jobs).result_info()
        if info is not None:
            stage["job_enqueued"] = info.enqueue_time.timestamp()
            stage["job_started"] = info.start_time.timestamp()
            stage["job_finished"] = info.finish_time.timestamp()
        out[row["id"]] = stage
    return out


async def _transactions(database_url: str) -> int:
    """Transactions PostgreSQL has finished in the database so far (every connection
    checkout of the app is one): counts the statements' round trips, roughly."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database"
                " WHERE datname = current_database()"
            )
        )
    finally:
        await conn.close()


async def _wait_ready(database_url: str, post_id: int, within: float = 60) -> None:
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            status = await conn.fetchval("SELECT status FROM posts WHERE id = $1", post_id)
            if status in ("READY", "FAILED"):
                if status == "FAILED":
                    raise RuntimeError(f"post {post_id} FAILED in the worker")
                return
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    raise RuntimeError(f"post {post_id} not READY after {within} s: is the worker running?")


if __name__ == "__main__":
    main()
