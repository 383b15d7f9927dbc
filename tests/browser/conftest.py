"""Browser tests: a real Chromium (Debian's package, driven by Playwright) using the
reference web client (web/) served from another origin than the API, so every request
the page makes is a cross-origin one (CORS, the WebSocket Origin check).

One API server with a real worker (local storage, as `make run` runs it), one static
file server for web/ and one Chromium serve the whole package; each test gets empty
tables and Redis and fresh browser contexts (separate storage, like separate people).

Without Chromium (or the playwright package) the test modules skip themselves, and
pytest's summary says which is missing (`-ra` in pyproject's addopts); with
REQUIRE_BROWSER=1 (CI, .ci/run) they fail instead, for the same reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from app import WebAppFiles
from infra.embedded import free_port
from infra.storage import MIN_PART_SIZE, S3Storage
from settings import DEFAULT_TRUSTED_DOCUMENTS, ROOT, Settings
from tests.browser.helpers import API_KEY, CHROMIUM, OpenTab, Tab, artifact, token_key_for
from tests.conftest import Server, run_worker, serve, uvicorn_serving, with_redis_db
from tests.conftest import clean_state as shared_clean_state
from tests.factories import MadeUser
from tests.s3_server import s3_settings
from workers.feed import relay_outbox

# Playwright is imported where it is used: without it (or without Chromium) the test
# modules skip themselves, and this file must still import.
if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext

log = logging.getLogger(__name__)

WEB_ROOT = ROOT / "web"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # /dev/shm is small in containers; Chromium would crash tabs there (said explicitly,
    # whatever Playwright adds by default).
    "--disable-dev-shm-usage",
]
# The page's origin: another host name and port than the API's 127.0.0.1:<port>.
PAGE_HOST = "localhost"
# Allowed explicitly (it is also the development default), so the tests do not depend
# on which environment the settings came from.
CORS_ORIGINS = ("http://localhost:*",)
# Generous: a loaded CI machine is slow; a deadline only keeps a broken test from hanging.
EXPECT_TIMEOUT_MS = 30_000
RELAY_EVERY_SECONDS = 0.2


# The workers whose relays run, the newest last. Every server here reads the one
# PostgreSQL outbox, so only the newest relays (the S3 server's, while its module runs):
# another would hand its notifications and fan-out to a worker on another Redis database.
_relaying: list[dict[str, Any]] = []


async def _relay_forever(ctx: dict[str, Any]) -> None:
    """What the worker's one-second relay cron does (the test worker runs no crons, see
    `make_worker`): notifications reach the outbox and only the relay sends them on."""
    # The worker's on_startup has not run yet (nothing to wait on but its ctx).
    while "resources" not in ctx:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    while True:
        if _relaying[-1] is ctx:
            try:
                await relay_outbox(ctx)
            except Exception:  # e.g. a TRUNCATE between tests; the next round retries
                log.warning("outbox relay failed", exc_info=True)
        await asyncio.sleep(RELAY_EVERY_SECONDS)


@contextlib.asynccontextmanager
async def relaying(ctx: dict[str, Any]) -> AsyncIterator[None]:
    """The worker's outbox relay runs (`_relay_forever`) for the block's duration,
    pausing the relay of any server started before."""
    _relaying.append(ctx)
    relay = asyncio.create_task(_relay_forever(ctx))
    try:
        yield
    finally:
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay
        _relaying.remove(ctx)


async def clean_state(srv: Server) -> None:
    """Empty every table and Redis (tests/conftest.py's `clean_state`), except that ids
    keep counting from one test to the next (no RESTART IDENTITY).

    The server, its worker, its outbox relay and the server's end of a closed page's
    WebSocket outlive a test, and what they still do when the next one starts is keyed
    by row ids: arq refuses a job whose id (`notify:{outbox row}`, ...) it still holds,
    so a previous test's job finishing after the flush, its result then kept for
    an hour, would silently swallow this test's job of the same id (a like's
    notification never delivered); and a previous page's subscription for the same user
    id would pass for this test's in `wait_for_listener`. With ids never repeated, what
    is left of a previous test concerns rows that are gone, and no one listens for it.
    """
    await shared_clean_state(srv, restart_identity=False)


@pytest.fixture(scope="package")
async def browser_server_instance(settings: Settings) -> AsyncIterator[Server]:
    """The API with a worker on the local storage backend (uploads go to the API's own
    /uploads route), on its own Redis database so only its worker takes its jobs."""
    base = replace(
        settings,
        redis_url=with_redis_db(settings.redis_url, 3),
        media_root=settings.media_root / "browser-server",
        storage_backend="local",
        web_app=True,
        # As `make run` starts it: the web client's documents are trusted (their hashes
        # must be the ones the client sends).
        trusted_documents=DEFAULT_TRUSTED_DOCUMENTS
        if DEFAULT_TRUSTED_DOCUMENTS.is_file()
        else None,
        cors_allow_origins=CORS_ORIGINS,
    )
    async with serve(base) as running, run_worker(running.settings) as worker:
        running.worker = worker
        async with relaying(worker.ctx):
            yield running


@pytest.fixture
async def browser_server(browser_server_instance: Server) -> Server:
    await clean_state(browser_server_instance)
    return browser_server_instance


# The S3 server's own Redis database (1 media, 2 feed, 3 browser, 5 codegen are taken).
S3_REDIS_DB = 6
# Videos over this go up in multipart parts of this size: S3's smallest part (every
# part but the last must be at least 5 MiB; moto enforces it when completing, and
# `infra.storage.choose_part_size` refuses less), so a video of a few MiB takes two.
S3_MULTIPART_BYTES = MIN_PART_SIZE


@pytest.fixture(scope="module")
async def s3_browser_server_instance(settings: Settings, moto_server: str) -> AsyncIterator[Server]:
    """The API as `browser_server_instance` runs it, but on the S3 backend (moto's
    server, a fresh bucket given its CORS rules and public-renditions policy by
    `S3Storage.ensure_bucket`, as tests/conftest.py's `media_server_instance` does):
    uploads go straight to the bucket (presigned POSTs, multipart parts) and renditions
    are read from it, from the bucket's own URLs (no MEDIA_PUBLIC_BASE_URL).

    Module-scoped: its worker's outbox relay reads the same database as the package's
    `browser_server_instance`, whose relay pauses while this one runs (`_relaying`),
    so each server's worker gets its own notifications and fan-out."""
    base = s3_settings(
        replace(
            settings,
            redis_url=with_redis_db(settings.redis_url, S3_REDIS_DB),
            web_app=True,
            trusted_documents=DEFAULT_TRUSTED_DOCUMENTS
            if DEFAULT_TRUSTED_DOCUMENTS.is_file()
            else None,
            cors_allow_origins=CORS_ORIGINS,
            multipart_threshold_bytes=S3_MULTIPART_BYTES,
            multipart_part_bytes=S3_MULTIPART_BYTES,
        ),
        moto_server,
    )
    storage = S3Storage(base)
    try:
        await storage.ensure_bucket()
    finally:
        await storage.close()
    async with serve(base) as running, run_worker(running.settings) as worker:
        running.worker = worker
        async with relaying(worker.ctx):
            yield running


@pytest.fixture
async def s3_browser_server(s3_browser_server_instance: Server) -> Server:
    """The S3-backed API with empty tables and Redis. A test module that overrides
    `browser_server` with it gets `app_url`, `open_tab`, `gql` and `factory` on it."""
    await clean_state(s3_browser_server_instance)
    return s3_browser_server_instance


@pytest.fixture
def active_server(browser_server: Server) -> Server:
    """tests/conftest.py's `http`, `gql` and `factory` talk to this package's server."""
    return browser_server


@pytest.fixture(scope="package")
async def page_origin() -> AsyncIterator[str]:
    """web/ served by a plain static file server on another origin than the API."""
    port = free_port()
    # Served as the API serves /app (app.WebAppFiles: its Content-Security-Policy too),
    # so a CSP violation shows as a console error in every test.
    app = Starlette(routes=[Mount("/", WebAppFiles(directory=WEB_ROOT, html=True))])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    async with uvicorn_serving(config):
        yield f"http://{PAGE_HOST}:{port}"


@pytest.fixture(scope="package")
async def chromium() -> AsyncIterator[Browser]:
    """One Chromium for the package (Debian's, never a downloaded one)."""
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
def app_url(page_origin: str, browser_server: Server) -> str:
    """The client's entry page, pointed at the API by its `api` query parameter."""
    return f"{page_origin}/index.html?api={browser_server.base_url}"


_failed = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_failed] = True
    return report


@pytest.fixture
async def open_tab(
    request: pytest.FixtureRequest, chromium: Browser, app_url: str, browser_server: Server
) -> AsyncIterator[OpenTab]:
    """Opens the client in a new browser context (its own localStorage): signed in as
    `user` when given (the token where the client keeps it: one key per API origin),
    at `route` (a hash route), after `prepare(context)` when given. The API is the one the person chose before (stored as
    the client keeps it), so the page's `?api=` names the API in use and needs no
    confirmation (a link naming another API only proposes it: see
    test_api_parameter_in_chromium.py). On a failed test every open page is saved as a
    screenshot; routes a test left (a held response) are dropped before closing."""
    token_key = token_key_for(browser_server)
    tabs: list[Tab] = []

    async def open_(
        user: MadeUser | None = None,
        route: str = "#/",
        *,
        prepare: Callable[[BrowserContext], Awaitable[None]] | None = None,
    ) -> Tab:
        context = await chromium.new_context(viewport={"width": 1000, "height": 900})
        context.set_default_timeout(EXPECT_TIMEOUT_MS)
        await context.add_init_script(
            f"if (!localStorage.getItem({json.dumps(API_KEY)}))"
            f" localStorage.setItem({json.dumps(API_KEY)}, {json.dumps(browser_server.base_url)});"
        )
        if user is not None:
            # Once per tab (sessionStorage survives a reload), so a log-out would stick.
            await context.add_init_script(
                "if (!sessionStorage.getItem('test.signed-in')) {"
                f" localStorage.setItem({json.dumps(token_key)}, {json.dumps(user.token)});"
                " sessionStorage.setItem('test.signed-in', '1'); }"
            )
        if prepare is not None:  # e.g. routes that must be in place before the page loads
            await prepare(context)
        page = await context.new_page()
        tab = Tab(name=user.username if user else f"tab{len(tabs) + 1}", context=context, page=page)
        tab.watch_console()
        tabs.append(tab)
        await page.goto(app_url + route)
        return tab

    yield open_
    failed = request.node.stash.get(_failed, False)
    for tab in tabs:
        if failed:
            with contextlib.suppress(Exception):  # the failure is the report, not this
                await tab.page.screenshot(
                    path=artifact(request.node.name, f"failure-{tab.name}"), full_page=True
                )
        # A handler still waiting (a test that failed before releasing it) must not
        # keep the close waiting, nor raise into the next test.
        await tab.context.unroute_all(behavior="ignoreErrors")
        await tab.context.close()
