"""The HTTP load generator: a separate process with a minimal HTTP/1.1 keep-alive client.

    python -m bench.feed.load < spec.json > result.json

Two modes over `connections` keep-alive connections, each cycling through the given
raw requests (one per viewer):

- closed loop: each connection sends its next request when the last one is answered;
  throughput at saturation, and latency as seen by such a client;
- open loop: requests are due at a fixed rate whatever happens to earlier ones, and
  latency counts from when a request was due, so a stall is charged to every request
  it delayed (no coordinated omission). A request still unanswered when the run's
  grace period ends counts as late with its wait so far (the figure is then a lower
  bound, and the result says how many).

It runs in its own process, never in the bench's: its event loop and garbage would be
measured too. A constant JSON answer runs at several thousand requests per second
through it, far above any feed endpoint here, so it is not the bottleneck.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from bench.common import FEED_QUERY, ROOT

# An overloaded open-loop run stops this long after its last request was due.
OPEN_GRACE_SECONDS = 3.0


@dataclass(frozen=True)
class LoadSpec:
    """One load run, as sent to the child process."""

    port: int
    requests: list[str]  # raw HTTP/1.1 requests, cycled through
    mode: str  # "closed" or "open"
    connections: int
    warmup: float
    duration: float
    rate: float = 0.0  # open loop: requests per second
    host: str = "127.0.0.1"


@dataclass
class LoadResult:
    """What one run measured; latencies in milliseconds, over the measured window."""

    requests: int  # answered in the measured window
    answered: int  # answered in the whole run, warm-up included (the CPU figures divide by it)
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    late: int = 0  # open loop: due in the window but unanswered when the run ended
    offered_rps: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def raw_request(port: int, path: str, token: str, query: str = FEED_QUERY) -> str:
    """A GraphQL document (the feed page unless told) POSTed with a bearer token, as raw
    HTTP/1.1."""
    body = orjson.dumps({"query": query}).decode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """One request on a keep-alive connection; a minimal parser keeps the client's own
    CPU cost (on the same cores as the server) to a few tens of microseconds."""
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


async def run_load(spec: LoadSpec) -> LoadResult:
    """Drive one run and measure it (in the child process)."""
    requests = [r.encode("latin-1") for r in spec.requests]
    streams = [await asyncio.open_connection(spec.host, spec.port) for _ in range(spec.connections)]
    latencies: list[float] = []
    errors = answered = 0
    last_done = 0.0
    start = time.perf_counter() + 0.02
    measure_from = start + spec.warmup
    end = measure_from + spec.duration

    async def closed_worker(index: int) -> None:
        nonlocal errors, answered, last_done
        reader, writer = streams[index]
        turn = index
        while (sent := time.perf_counter()) < end:
            status, body = await _exchange(reader, writer, requests[turn % len(requests)])
            turn += spec.connections
            done = time.perf_counter()
            answered += 1
            if sent >= measure_from:
                latencies.append(done - sent)
                last_done = max(last_done, done)
                errors += not _ok(status, body)

    queue: asyncio.Queue[tuple[float, int] | None] = asyncio.Queue()
    total = int(spec.rate * (spec.warmup + spec.duration))
    outstanding: dict[int, float] = {}  # due time of each dispatched, unanswered request

    async def dispatcher() -> None:
        index = 0
        while index < total:
            delay = start + index / spec.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.perf_counter()
            while index < total and start + index / spec.rate <= now:
                due = start + index / spec.rate
                outstanding[index] = due
                queue.put_nowait((due, index))
                index += 1
        for _ in range(spec.connections):
            queue.put_nowait(None)

    async def open_worker(index: int) -> None:
        nonlocal errors, answered, last_done
        reader, writer = streams[index]
        while (item := await queue.get()) is not None:
            due, number = item
            status, body = await _exchange(reader, writer, requests[number % len(requests)])
            done = time.perf_counter()
            answered += 1
            del outstanding[number]
            if due >= measure_from:
                latencies.append(done - due)
                last_done = max(last_done, done)
                errors += not _ok(status, body)

    late = 0
    if spec.mode == "closed":
        await asyncio.gather(*(closed_worker(i) for i in range(spec.connections)))
    else:
        workers = [asyncio.create_task(open_worker(i)) for i in range(spec.connections)]
        await dispatcher()
        _, pending = await asyncio.wait(
            workers, timeout=end + OPEN_GRACE_SECONDS - time.perf_counter()
        )
        cutoff = time.perf_counter()
        for task in pending:
            task.cancel()
        # Unanswered when the grace ran out: late by at least their wait so far.
        waited = [cutoff - due for due in outstanding.values() if due >= measure_from]
        late = len(waited)
        latencies += waited
        if pending:
            last_done = cutoff
    for _, writer in streams:
        writer.close()
    latencies.sort()
    elapsed = max(last_done - measure_from, 1e-9)

    def pct(q: float) -> float:
        if not latencies:
            return float("nan")
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 2)

    measured = len(latencies) - late
    return LoadResult(
        requests=measured,
        answered=answered,
        errors=errors,
        seconds=round(elapsed, 3),
        rps=round(measured / elapsed, 1),
        p50_ms=pct(0.50),
        p90_ms=pct(0.90),
        p99_ms=pct(0.99),
        max_ms=pct(1.0),
        late=late,
        offered_rps=spec.rate,
    )


async def load(spec: LoadSpec) -> LoadResult:
    """One run in a fresh child process (from the bench's event loop)."""
    from infra.embedded import die_with_parent

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.feed.load",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    try:
        out, _ = await proc.communicate(json.dumps(asdict(spec)).encode())
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed with {proc.returncode}")
    return LoadResult(**json.loads(out.decode().strip().splitlines()[-1]))


def main() -> None:
    import uvloop

    spec = LoadSpec(**json.loads(sys.stdin.read()))
    print(json.dumps(asdict(uvloop.run(run_load(spec)))))


if __name__ == "__main__":
    main()
