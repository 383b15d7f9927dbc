"""The client's `?api=` parameter in a real Chromium: a link may only PROPOSE another
API. The page keeps talking to the API in use (nothing, least of all a password, goes
to the other one) until the person clicks "Use …"; "Stay on …" keeps the current one;
a link naming the API in use asks nothing; and a session never follows to another API.
The login page's demo-account hint shows only for an API on this machine.

Unlike the package's other modules, the page is served by the API itself (/app/, as
`make run` serves it), so its own origin is the default API the way back leads to.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from tests.browser.conftest import EXPECT_TIMEOUT_MS
from tests.browser.helpers import API_KEY, skip_without_browser, token_key_for
from tests.conftest import Server
from tests.factories import PASSWORD, Factory

skip_without_browser()

from playwright.async_api import Page, Request, Route, expect  # noqa: E402

if TYPE_CHECKING:
    from playwright.async_api import Browser

OTHER_API = "http://other-api.test"  # never resolved: the page's requests to it are routed
STORED_API = f"localStorage.getItem({json.dumps(API_KEY)})"


@pytest.fixture
async def page(chromium: Browser) -> AsyncIterator[Page]:
    """A page in a fresh browser context (its own localStorage)."""
    context = await chromium.new_context()
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    try:
        yield await context.new_page()
    finally:
        await context.unroute_all(behavior="ignoreErrors")
        await context.close()


@pytest.fixture
async def to_other(page: Page) -> list[Request]:
    """Every request the page sends to OTHER_API (answered as an API with no viewer)."""
    sent: list[Request] = []

    async def other_api(route: Route) -> None:
        sent.append(route.request)
        await route.fulfill(status=200, json={"data": {"viewer": None}})

    await page.route(f"{OTHER_API}/**", other_api)
    return sent


async def test_a_link_naming_another_api_only_proposes_it(
    page: Page, to_other: list[Request], factory: Factory, browser_server: Server
) -> None:
    """Signed in to the page's own API, a link naming another one: the page asks and
    keeps the session where it is; "Stay" changes nothing; "Use" switches, without the
    token; the login page then says where a password would go, with a way back."""
    user = await factory.user("linked")
    app = f"{browser_server.base_url}/app/"
    # Signed in to the page's own API (as the client stores a session)...
    await page.goto(app)
    await page.evaluate(
        "([key, t]) => localStorage.setItem(key, t)", [token_key_for(browser_server), user.token]
    )
    await page.reload()
    await expect(page.get_by_test_id("nav-profile")).to_be_visible()
    assert await page.evaluate(STORED_API) is None  # no choice made yet: the page's origin

    # ...a link names another server: the page asks, and meanwhile keeps the API in use.
    await page.goto(f"{app}?api={OTHER_API}/anything#/")
    proposal = page.get_by_test_id("api-proposal")
    await expect(proposal).to_contain_text(f"This link points the app at the API at {OTHER_API}")
    await expect(page.get_by_test_id("api-proposal-use")).to_have_text(f"Use {OTHER_API}")
    stay = page.get_by_test_id("api-proposal-stay")
    await expect(stay).to_have_text(f"Stay on {browser_server.base_url}")
    await expect(page.get_by_test_id("nav-profile")).to_be_visible()  # still signed in here
    assert "api=" not in page.url
    assert await page.evaluate(STORED_API) is None
    assert to_other == []

    # "Stay": the proposal goes, the choice of the current API is remembered.
    await stay.click()
    await expect(proposal).to_have_count(0)
    assert await page.evaluate(STORED_API) == browser_server.base_url
    await page.reload()
    await expect(page.get_by_test_id("nav-profile")).to_be_visible()
    await expect(proposal).to_have_count(0)
    assert to_other == []

    # The same link again, and "Use": now (only now) the page talks to the other API,
    # without the token of this one: its login page says where the password would go.
    await page.goto(f"{app}?api={OTHER_API}#/")
    await page.get_by_test_id("api-proposal-use").click()
    notice = page.get_by_test_id("api-notice")
    await expect(notice).to_contain_text(f"Signing in to API at {OTHER_API}")
    await expect(page.get_by_test_id("login-form")).to_be_visible()
    await expect(proposal).to_have_count(0)
    # A server elsewhere than this machine: no hint at the local demo account.
    await expect(page.get_by_test_id("demo-hint")).to_have_count(0)
    assert await page.evaluate(STORED_API) == OTHER_API
    assert [r for r in to_other if r.headers.get("authorization")] == []

    # A link naming the API in use asks nothing.
    await page.goto(f"{app}?api={OTHER_API}#/")
    await expect(notice).to_be_visible()
    await expect(proposal).to_have_count(0)

    # The way back: the page's own origin (a click on the page), still signed in there.
    await page.get_by_test_id("api-notice-reset").click()
    await expect(page.get_by_test_id("nav-profile")).to_be_visible()
    assert await page.evaluate(STORED_API) == browser_server.base_url
    assert "api=" not in page.url

    # Other schemes are refused (not even proposed), and do not break the client.
    for bad in ("javascript:alert(1)", "data:text/html,x", "null", "//evil.test"):
        await page.goto(f"{app}?api={bad}#/")
        await expect(page.get_by_test_id("nav-profile")).to_be_visible()
        await expect(proposal).to_have_count(0)
        assert await page.evaluate(STORED_API) == browser_server.base_url, bad
    assert [r for r in to_other if r.headers.get("authorization")] == []


async def test_a_first_visit_from_a_link_logs_in_to_the_pages_own_api_until_switched(
    page: Page, to_other: list[Request], factory: Factory, browser_server: Server
) -> None:
    """No API chosen yet, on the API's own /app/: a link naming another API is only a
    proposal, and the login form under it signs in to the page's own API."""
    user = await factory.user("firstvisit")
    await page.goto(f"{browser_server.base_url}/app/?api={OTHER_API}#/login")
    await expect(page.get_by_test_id("api-proposal")).to_contain_text(OTHER_API)
    await expect(page.get_by_test_id("api-notice")).to_have_count(0)  # the page's own API
    # An API on this machine (127.0.0.1): the demo account is worth a hint.
    await expect(page.get_by_test_id("demo-hint")).to_contain_text("demo-password")

    to_own: list[Request] = []
    page.on(
        "request",
        lambda r: to_own.append(r) if r.url == f"{browser_server.base_url}/graphql" else None,
    )
    await page.get_by_test_id("login-username").fill(user.username)
    await page.get_by_test_id("login-password").fill(PASSWORD)
    await page.get_by_test_id("login-submit").click()
    await expect(page.get_by_test_id("nav-profile")).to_be_visible()
    # The password went to the page's own API, and nothing at all to the other one.
    assert any(PASSWORD in (r.post_data or "") for r in to_own)
    assert to_other == []
    assert await page.evaluate(STORED_API) is None  # not answered: asked again next time
