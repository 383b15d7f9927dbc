"""The client's `?api=` parameter in a real Chromium: a link may point the page at
another API, but never carries the session of the page's own API there.

Unlike the package's other modules, the page is served by the API itself (/app/, as
`make run` serves it), so its own origin is the default API the way back leads to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from tests.browser.conftest import EXPECT_TIMEOUT_MS
from tests.browser.helpers import skip_without_browser, token_key_for
from tests.conftest import Server
from tests.factories import Factory

skip_without_browser()

from playwright.async_api import Page, Request, Route, expect  # noqa: E402

if TYPE_CHECKING:
    from playwright.async_api import Browser

OTHER_API = "http://other-api.test"  # never resolved: the page's requests to it are routed


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


async def test_a_link_naming_another_api_never_gets_the_token(
    page: Page, factory: Factory, browser_server: Server
) -> None:
    """`?api=` from a link: only http(s) origins are taken, the address bar drops it,
    the token of the page's API is never sent to the other one, and the login page
    says plainly where the password would go, with a way back."""
    user = await factory.user("linked")
    app = f"{browser_server.base_url}/app/"
    to_other: list[Request] = []

    async def other_api(route: Route) -> None:
        to_other.append(route.request)
        await route.fulfill(status=200, json={"data": {"viewer": None}})

    await page.route(f"{OTHER_API}/**", other_api)
    # Signed in to the page's own API (as the client stores a session)...
    await page.goto(app)
    await page.evaluate(
        "([key, t]) => localStorage.setItem(key, t)", [token_key_for(browser_server), user.token]
    )
    await page.reload()
    await expect(page.get_by_test_id("nav-profile")).to_be_visible()

    # ...a link names another server: no token goes there, the login page says where a
    # password would go, and the address bar no longer carries it.
    await page.goto(f"{app}?api={OTHER_API}/anything#/")
    notice = page.get_by_test_id("api-notice")
    await expect(notice).to_contain_text(f"Signing in to API at {OTHER_API}")
    assert "api=" not in page.url
    assert await page.evaluate("localStorage.getItem('instagraph.api')") == OTHER_API
    assert [r for r in to_other if r.headers.get("authorization")] == []

    # The way back: the page's own origin, still signed in there.
    await notice.get_by_role("link").click()
    await expect(page.get_by_test_id("nav-profile")).to_be_visible()
    assert "api=" not in page.url

    # Other schemes are refused, and do not break the client.
    for bad in ("javascript:alert(1)", "data:text/html,x", "null", "//evil.test"):
        await page.goto(f"{app}?api={bad}#/")
        await expect(page.get_by_test_id("nav-profile")).to_be_visible()
        stored = await page.evaluate("localStorage.getItem('instagraph.api')")
        assert stored == browser_server.base_url, bad
    assert [r for r in to_other if r.headers.get("authorization")] == []
