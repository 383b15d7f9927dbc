"""`make run` end to end: a newcomer's first session, a restart, and a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from infra.embedded import free_port
from settings import ROOT

SIGN_UP = """mutation ($u: String!) {
  signUp(username: $u, email: "{u}@example.com", password: "password123") { token user { id } }
}"""


def _start(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")
    }
    env["DATA_DIR"] = str(data_dir)
    return subprocess.Popen(  # noqa: S603 - fixed argv
        [sys.executable, "run.py", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "run.py exited early"
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("make run did not become ready")


def _gql(base: str, query: str, token: str | None = None, **variables: object) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(
        f"{base}/graphql",
        json={"query": query, "variables": variables},
        headers=headers,
        timeout=10,
    )
    body = response.json()
    assert not body.get("errors"), body
    return body["data"]


def _processes_using(data_dir: Path) -> list[psutil.Process]:
    """Any process (PostgreSQL, Redis) still running on data_dir."""
    return [
        candidate
        for candidate in psutil.process_iter(["cmdline"])
        if str(data_dir) in " ".join(candidate.info["cmdline"] or [])
    ]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0


def test_make_run_keeps_data_across_restarts_and_leaves_nothing_running(tmp_path):
    data_dir = tmp_path / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    # Given a fresh start: two users sign up and one follows the other.
    proc = _start(data_dir, port)
    try:
        _wait_ready(base, proc)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 2  # the API and the worker
        alice = _gql(base, SIGN_UP.replace("{u}", "alice"), u="alice")["signUp"]
        bob = _gql(base, SIGN_UP.replace("{u}", "bob"), u="bob")["signUp"]
        follow = "mutation ($id: ID!) { follow(userId: $id) { errors { code } } }"
        assert _gql(base, follow, alice["token"], id=bob["user"]["id"])["follow"]["errors"] == []
    finally:
        _stop(proc)
    # Then Ctrl-C left no API, worker, PostgreSQL or Redis process behind.
    time.sleep(0.5)
    assert all(
        not child.is_running() or child.status() == psutil.STATUS_ZOMBIE for child in children
    )
    assert _processes_using(data_dir) == []

    # When it starts again, the users, the follow and the old token are all still there.
    proc = _start(data_dir, port)
    try:
        _wait_ready(base, proc)
        query = (
            '{ user(username: "bob") { followerCount followers { edges { node { username } } } } }'
        )
        bob_now = _gql(base, query)["user"]
        assert bob_now["followerCount"] == 1
        assert bob_now["followers"]["edges"][0]["node"]["username"] == "alice"
        viewer = _gql(base, "{ viewer { username } }", alice["token"])["viewer"]
        assert viewer == {"username": "alice"}
    finally:
        _stop(proc)
    time.sleep(0.5)
    assert _processes_using(data_dir) == []
