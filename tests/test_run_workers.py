"""`make run` with API_WORKERS=2: two API processes share the port, each serving."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import psutil

from infra.embedded import free_port
from settings import ROOT


def _api_processes(run: psutil.Process) -> list[psutil.Process]:
    found = []
    for child in run.children():
        try:
            if "--api-process" in child.cmdline():
                found.append(child)
        except psutil.Error:  # one that exited, not yet reaped (run.py restarts it)
            continue
    return found


def test_api_workers_start_processes_that_each_listen_on_the_port(tmp_path):
    # Given make run with two API processes and no worker.
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DATA_DIR=str(tmp_path / "data"), API_WORKERS="2")
    proc = subprocess.Popen(  # noqa: S603 - fixed argv
        [sys.executable, "run.py", "--port", str(port), "--no-worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # When it is ready (polled with a generous deadline, nothing timed).
        deadline = time.monotonic() + 90
        listening: set[int] = set()
        while time.monotonic() < deadline:
            assert proc.poll() is None, "run.py exited early"
            apis = _api_processes(psutil.Process(proc.pid))
            listening = {
                p.pid
                for p in apis
                for c in p.net_connections(kind="tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr.port == port
            }
            if len(listening) == 2:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).is_success:
                        break
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
        # Then both API processes hold their own listening socket on the port, and the
        # API answers GraphQL through it.
        assert len(listening) == 2
        body = httpx.post(
            f"http://127.0.0.1:{port}/graphql", json={"query": "{ __typename }"}, timeout=10
        ).json()
        assert body["data"] == {"__typename": "Query"} and "errors" not in body
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    # And Ctrl-C stopped both.
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in apis)
