"""`make run` supervises its children: a killed Redis, worker or PostgreSQL is started
again, and the rest (the API above all) keeps running; Ctrl-C still stops everything.

Real processes, really killed (SIGKILL), found as run.py's children with psutil.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import psutil
import pytest
import redis
from sqlalchemy.dialects.postgresql.asyncpg import (
    AsyncAdapt_asyncpg_connection,
    AsyncAdapt_asyncpg_dbapi,
)
from sqlalchemy.exc import DBAPIError

from infra.embedded import EmbeddedRedis, free_port
from infra.outages import is_outage
from run import POSTGRES_BACKOFF_CAP, Backoff, Stop, Supervised, supervise
from settings import ROOT

SIGN_UP = """mutation ($u: String!, $e: String!) {
  signUp(username: $u, email: $e, password: "password123") { token }
}"""
VIEWER_AND_FEED = "{ viewer { username } feed(first: 5) { edges { node { id } } } }"

T = TypeVar("T")


def _until(what: str, probe: Callable[[], T | None], within: float = 120) -> T:
    """Poll `probe` until it returns something truthy (a generous deadline for a loaded
    CI machine, not a timing). OSError and IndexError: postmaster.pid read while the
    restarted server rewrites it."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if result := probe():
                return result
        except (httpx.HTTPError, redis.RedisError, psutil.Error, ValueError, OSError, IndexError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting: {what}")


def _stack_env(data_dir: Path) -> dict[str, str]:
    """make run's environment: embedded servers in `data_dir`, no limits in the way of a
    test that polls (the sign-up probe would meet the per-address sign-up limit)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DATA_DIR=str(data_dir),
        WORKER_HEARTBEAT_SECONDS="1",
        API_WORKERS="1",
        RATE_LIMITS_ENABLED="false",
        QUERY_BUDGET_POINTS="0",
    )
    return env


def _start_stack(data_dir: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - fixed argv
        [sys.executable, "run.py", "--port", str(port), *extra],
        cwd=ROOT,
        env=_stack_env(data_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _leftovers(data_dir: Path) -> list[psutil.Process]:
    """Servers of this stack still running (their command lines name the data
    directory; the postmaster's backends die with it)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if str(data_dir) in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def _postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])


def _children(run: subprocess.Popen[bytes], marker: str) -> list[psutil.Process]:
    """run.py's live children whose command line holds `marker` (not a killed one that
    run.py has not reaped yet)."""
    found = []
    for child in psutil.Process(run.pid).children():
        try:
            if marker in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # a zombie, or gone
            continue
    return found


def _one(run: subprocess.Popen[bytes], marker: str) -> psutil.Process | None:
    found = _children(run, marker)
    return found[0] if len(found) == 1 else None


def _graphql(base: str, query: str, token: str | None = None, **variables: Any) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = httpx.post(
        f"{base}/graphql",
        json={"query": query, "variables": variables},
        headers=headers,
        timeout=10,
    ).json()
    assert isinstance(body, dict)
    return body


def test_backoff_doubles_up_to_a_cap_and_starts_over_after_a_stable_run():
    backoff = Backoff(first=0.5, cap=4, stable_after=30)
    assert [backoff.next_delay(ran_for=1) for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]
    assert backoff.next_delay(ran_for=31) == 0.5  # it had run a while: a fresh failure
    assert backoff.next_delay(ran_for=1) == 1
    # PostgreSQL's restart often fails while the dead server's backends exit: it is
    # retried often, never 30 s apart.
    postgres = Backoff(cap=POSTGRES_BACKOFF_CAP)
    assert max(postgres.next_delay(ran_for=0) for _ in range(10)) <= 2


def test_a_ctrl_c_during_a_restart_stops_the_supervisor():
    """Stop (the signal handler's) is no failure to retry: it ends supervise() even when it
    lands inside a unit's start()."""
    attempts = []

    def start() -> None:
        attempts.append(1)
        raise Stop("SIGINT")

    unit = Supervised("Redis", start, alive=lambda: False, pid=lambda: None)
    unit.backoff = Backoff(first=0)
    with pytest.raises(Stop):
        supervise([unit], poll=0.01)
    assert attempts == [1]


def test_a_dependent_unit_starts_over_when_what_it_needs_is_back():
    """The worker exits while Redis is down and backs off; Redis' restart wakes it."""
    worker = Supervised("worker", lambda: None, alive=lambda: False, pid=lambda: None)
    for _ in range(8):
        worker.backoff.next_delay(ran_for=0)
    worker.restart_at = 1000.0
    worker.woken(now=10.0)
    assert worker.restart_at == 10.0
    assert worker.backoff.next_delay(ran_for=0) == worker.backoff.first


def test_a_redis_restart_refuses_a_port_another_server_took(tmp_path: Path):
    """A restart on the same port checks that the server answering there is its own
    (INFO's process_id), not one that took the port meanwhile."""
    ours = EmbeddedRedis(tmp_path / "ours", persistent=False).start()
    port, first = ours.port, ours.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    _until("the killed redis-server", lambda: not ours.alive(), within=30)
    squatter = EmbeddedRedis(tmp_path / "squatter", persistent=False).start(port=port)
    try:
        with pytest.raises(RuntimeError):
            ours.restart()
        assert not ours.alive()
        client = redis.Redis(port=port)
        info: dict[str, Any] = client.info("server")  # type: ignore[assignment]
        assert info["process_id"] == squatter.pid
        client.close()
    finally:
        squatter.stop()
        ours.stop()


def test_postgres_outages_are_service_unavailable_not_internal_errors():
    """asyncpg's own classes for "the server is away" (SQLSTATE class 08, 57P01-57P03), as
    raised, and as SQLAlchemy wraps them (`.orig.sqlstate`, raised from each other)."""
    dbapi = AsyncAdapt_asyncpg_dbapi(asyncpg)
    away = [
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.CrashShutdownError("terminating connection"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection does not exist"),
        asyncpg.exceptions.ConnectionFailureError("connection failure"),
    ]
    bug = asyncpg.exceptions.UniqueViolationError("duplicate key")

    def wrapped(error: Exception) -> DBAPIError:
        try:
            AsyncAdapt_asyncpg_connection._handle_exception_no_connection(dbapi, error)
        except dbapi.Error as adapted:
            try:
                raise DBAPIError.instance("SELECT 1", {}, adapted, dbapi.Error) from adapted
            except DBAPIError as outer:
                return outer
        raise AssertionError("not translated")

    for error in away:
        assert is_outage(error), error
        outer = wrapped(error)
        assert not outer.connection_invalidated
        assert is_outage(outer), error
        # The SQLSTATE alone says so, even with the chain cut.
        orig = outer.orig
        assert orig is not None
        orig.__cause__ = None
        assert is_outage(orig)
    assert not is_outage(bug) and not is_outage(wrapped(bug))
    # A Unix socket not there (between a crash and the restarted server's listen).
    assert is_outage(FileNotFoundError(2, "No such file or directory"))
    assert not is_outage(FileNotFoundError(2, "No such file or directory", "/some/file"))


def test_killed_redis_worker_and_postgres_are_restarted_and_the_api_stays_up(tmp_path: Path):
    data_dir, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    run = _start_stack(data_dir, port)
    seen: list[psutil.Process] = []
    try:
        # Given make run's stack, ready, with a worker beating and a signed-up user.
        def ready() -> bool:
            assert run.poll() is None, "run.py exited"
            body = httpx.get(f"{base}/readyz", timeout=2).json()
            return bool(body["ready"] and body["workers"] == 1)

        _until("the stack is ready", ready)
        api = _one(run, "uvicorn")
        worker = _one(run, "arq workers.WorkerSettings")
        server = _one(run, "redis-server")
        assert api and worker and server
        seen += [api, worker, server]
        redis_url = api.environ()["REDIS_URL"]
        signed = _graphql(base, SIGN_UP, u="alice", e="alice@example.com")
        token = signed["data"]["signUp"]["token"]

        # When redis-server is killed.
        server.send_signal(signal.SIGKILL)
        # Then the API keeps answering, Redis comes back on the same URL with its data
        # (AOF), and the API serves the viewer and the feed from it again.
        assert httpx.get(f"{base}/healthz", timeout=5).text == "ok"
        client = redis.Redis.from_url(redis_url)
        _until("Redis is back on the same URL", lambda: client.ping())
        client.close()
        restarted = _until("a new redis-server", lambda: _one(run, "redis-server"))
        assert restarted.pid != server.pid
        seen.append(restarted)

        def viewer_and_feed() -> dict[str, Any] | None:
            body = _graphql(base, VIEWER_AND_FEED, token)
            return None if body.get("errors") else body["data"]

        data = _until("the API answers from Redis again", viewer_and_feed)
        assert data == {"viewer": {"username": "alice"}, "feed": {"edges": []}}
        assert _one(run, "uvicorn") == api  # the same API process all along

        # When the worker is killed (a worker that lost Redis may have been restarted
        # already: kill the current one).
        worker = _until("a worker", lambda: _one(run, "arq workers.WorkerSettings"))
        seen.append(worker)
        worker.send_signal(signal.SIGKILL)
        # Then a new worker process comes, the API never stopped, and /readyz counts the
        # new worker only (the killed one's heartbeat is reported dead, not counted).
        replacement = _until(
            "a new worker",
            lambda: (w := _one(run, "arq workers.WorkerSettings")) and w.pid != worker.pid and w,
        )
        seen.append(replacement)
        assert httpx.get(f"{base}/healthz", timeout=5).text == "ok"
        assert _one(run, "uvicorn") == api

        def replacement_beats() -> dict[str, Any] | None:
            body = httpx.get(f"{base}/readyz", timeout=2).json()
            names = {w["name"].split(":")[1]: w["alive"] for w in body["worker_heartbeats"]}
            return body if names.get(str(replacement.pid)) else None

        ready_now = _until("the new worker's heartbeat", replacement_beats)
        assert ready_now["ready"] is True and ready_now["workers"] == 1
        beats = {w["name"].split(":")[1]: w["alive"] for w in ready_now["worker_heartbeats"]}
        assert beats.get(str(worker.pid)) in (False, None)  # dead, or already expired
        assert _graphql(base, VIEWER_AND_FEED, token)["data"]["viewer"] == {"username": "alice"}

        # When PostgreSQL's postmaster is killed (pg_ctl daemonized it: not a child).
        postmaster = psutil.Process(_postmaster_pid(data_dir))
        seen.append(postmaster)
        postmaster.send_signal(signal.SIGKILL)
        # Then it is started again on the same data directory and socket, and the same
        # API process signs a new user up (a write) once its pool has reconnected;
        # meanwhile every answer is SERVICE_UNAVAILABLE, never an internal error.
        _until("a new postmaster", lambda: _postmaster_pid(data_dir) != postmaster.pid)
        seen.append(psutil.Process(_postmaster_pid(data_dir)))
        refusals: list[Any] = []

        def sign_up_bob() -> dict[str, Any] | None:
            body = _graphql(base, SIGN_UP, u="bob", e="bob@example.com")
            if body.get("errors"):
                refusals.append(body["errors"])
                return None
            return body["data"]["signUp"]

        assert _until("a sign-up after PostgreSQL's restart", sign_up_bob)["token"]
        codes = {error["extensions"]["code"] for errors in refusals for error in errors}
        assert codes <= {"SERVICE_UNAVAILABLE"}, refusals
        assert _one(run, "uvicorn") == api
    finally:
        # When Ctrl-C comes.
        run.send_signal(signal.SIGINT)
        code = run.wait(60)
    # Then run.py exits cleanly, and no process it ever started is left: not the API, not
    # a worker (old or new), not a Redis (old or new), not PostgreSQL.
    assert code == 0
    _until(
        "every process gone",
        lambda: all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in seen),
        within=30,
    )
    assert _leftovers(data_dir) == []


def test_ctrl_c_while_postgres_and_redis_restart_leaves_nothing_running(tmp_path: Path):
    """A Ctrl-C that lands while the servers are being started again (a restarted
    postmaster still starting up, a Redis not yet answering): run.py still exits cleanly,
    stops what it had just started, and nothing listens any more."""
    data_dir, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    run = _start_stack(data_dir, port, "--no-worker")
    try:
        # Given make run's stack (no worker), ready.
        def ready() -> bool:
            assert run.poll() is None, "run.py exited"
            return bool(httpx.get(f"{base}/readyz", timeout=2).json()["ready"])

        _until("the stack is ready", ready)
        api = _one(run, "uvicorn")
        assert api is not None
        environment = api.environ()
        redis_port = int(environment["REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
        socket_dir = environment["DATABASE_URL"].split("host=")[1].split("&")[0]
        # When PostgreSQL and Redis are killed, and Ctrl-C comes as soon as run.py has
        # spawned a new postmaster (its own child now), whatever state it is in.
        psutil.Process(_postmaster_pid(data_dir)).send_signal(signal.SIGKILL)
        server = _one(run, "redis-server")
        assert server is not None
        server.send_signal(signal.SIGKILL)
        _until("a restarted postmaster", lambda: _one(run, str(data_dir / "postgres")))
    finally:
        run.send_signal(signal.SIGINT)
        code = run.wait(90)
    # Then run.py exits cleanly, nothing it started runs, and nothing listens.
    assert code == 0
    _until("every process gone", lambda: not _leftovers(data_dir), within=30)
    assert not api.is_running() or api.status() == psutil.STATUS_ZOMBIE
    listening = {
        conn.laddr.port
        for conn in psutil.net_connections("tcp")
        if conn.status == psutil.CONN_LISTEN
    }
    assert port not in listening and redis_port not in listening
    unix = {conn.laddr for conn in psutil.net_connections("unix") if conn.laddr}
    assert not any(str(path).startswith(socket_dir) for path in unix)
