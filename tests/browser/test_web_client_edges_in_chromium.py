"""The reference web client in Chromium at its edges: a double tap on a video, a hashtag
nobody used, an upload the target refuses, a post that takes longer than the dialog
waits, live events lost while the WebSocket was down. Same setup as
test_web_client_in_chromium.py: the page on another origin than the API, elements found
by their data-testid.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from infra.feedstore import user_channel
from tests.browser.helpers import (
    DEADLINE,
    OpenTab,
    noise_video,
    photo_file,
    post_photo,
    skip_without_browser,
    wait_for_listener,
)
from tests.conftest import GraphQLClient, Server
from tests.factories import Factory
from tests.posting import publish, wait_for_post

skip_without_browser()

from playwright.async_api import BrowserContext, Request, Route, WebSocketRoute, expect  # noqa: E402

PROCESSING_TIMEOUT_MS = 60_000  # the worker's turn; generous for a loaded machine
POST = "query ($id: ID!) { post(id: $id) { likeCount viewerHasLiked } }"
# Every fullscreenchange the page sees, into window.__fullscreen.
RECORD_FULLSCREEN = """
() => {
  window.__fullscreen = [];
  document.addEventListener('fullscreenchange', () =>
    window.__fullscreen.push(document.fullscreenElement ? document.fullscreenElement.tagName : null));
}
"""


def operation_of(request: Request) -> str | None:
    """The operationName of a GraphQL POST, or None."""
    if request.method != "POST" or not request.post_data:
        return None
    try:
        name = json.loads(request.post_data).get("operationName")
    except ValueError:
        return None
    return name if isinstance(name, str) else None


async def test_a_double_tap_on_a_video_likes_it_without_going_fullscreen(
    open_tab: OpenTab, gql: GraphQLClient, factory: Factory
) -> None:
    author = await factory.user("filmer")
    viewer = await factory.user("watcher")
    await factory.follow(viewer, author)
    clip = noise_video(size=(320, 240), seconds=1.0)
    post_id = await publish(gql, author.token, [("video/mp4", clip)], caption="noise #video")
    assert (await wait_for_post(gql, author.token, post_id))["status"] == "READY"

    tab = await open_tab(viewer, "#/")
    article = tab.post(post_id)
    video = article.get_by_test_id("post-video")
    await expect(video).to_be_visible()
    await tab.page.evaluate(RECORD_FULLSCREEN)

    # When the viewer double-taps the video (its middle, not its control bar)...
    async with tab.page.expect_response(lambda r: operation_of(r.request) == "LikePost") as liked:
        await video.dblclick()
    assert (await liked.value).ok

    # ...the post is liked (shown at once, then settled), as the API confirms...
    await expect(article.get_by_test_id("like-button")).to_have_attribute("aria-pressed", "true")
    await expect(article.get_by_test_id("like-count")).to_have_text("1")
    post = (await gql(POST, token=viewer.token, id=post_id))["post"]
    assert (post["likeCount"], post["viewerHasLiked"]) == (1, True)
    # ...and the page never went fullscreen; the video keeps its controls.
    assert await tab.page.evaluate("() => document.fullscreenElement") is None
    assert await tab.page.evaluate("() => window.__fullscreen") == []
    await expect(video).to_have_attribute("controls", "")
    tab.assert_no_console_errors()


async def test_a_hashtag_without_posts_is_not_shown_as_a_hit(
    open_tab: OpenTab, gql: GraphQLClient, factory: Factory
) -> None:
    author = await factory.user("tagger")
    await post_photo(gql, author, "tagged #instagraph 1")
    tab = await open_tab(author, "#/search")
    search = tab.by("search-input")
    results = tab.by("search-results")

    # A prefix of a used tag is another tag (the API looks tags up exactly): no hit.
    await search.fill("#inst")
    await expect(tab.by("search-empty")).to_have_text("No posts tagged #inst yet.")
    await expect(results.get_by_test_id("search-result")).to_have_count(0)

    # The whole tag is one, with its posts counted.
    await search.fill("#instagraph")
    hit = results.get_by_test_id("search-result")
    await expect(hit).to_have_count(1)
    await expect(hit).to_have_attribute("data-kind", "hashtag")
    await expect(hit).to_contain_text("#instagraph")
    await expect(hit).to_contain_text("1 post")
    await expect(tab.by("search-empty")).to_have_count(0)
    tab.assert_no_console_errors()


async def test_a_refused_upload_resets_its_progress_bar_and_share_again_sends_it(
    open_tab: OpenTab, factory: Factory, browser_server: Server
) -> None:
    author = await factory.user("uploader")
    tab = await open_tab(author, "#/new")
    refused: list[Request] = []

    async def refuse(route: Route) -> None:
        refused.append(route.request)
        await route.fulfill(status=403, body="not today")

    await tab.page.route(f"{browser_server.base_url}/uploads/**", refuse)
    await tab.by("file-input").set_input_files(files=[photo_file("refused")])
    await tab.by("post-submit").click()

    # The target refuses the bytes: the bar does not claim they went, and says it failed.
    status = tab.by("upload-status")
    await expect(status).to_have_attribute("data-interrupted", "true")
    bar = tab.page.locator('[data-testid="upload-progress"][data-file-index="0"]')
    await expect(bar).to_have_attribute("data-state", "failed")
    await expect(bar).to_have_js_property("value", 0)
    assert len(refused) == 1  # a 403 is not tried again

    # Share again, the target takes them: the bar fills, and is no longer marked failed.
    await tab.page.unroute(f"{browser_server.base_url}/uploads/**")
    await tab.by("post-submit").click()
    await expect(bar).to_have_js_property("value", 100)
    await expect(status).to_have_attribute("data-status", "READY", timeout=PROCESSING_TIMEOUT_MS)
    await expect(bar).not_to_have_attribute("data-state", "failed")


async def test_a_post_still_processing_after_the_wait_lets_the_dialog_go(
    open_tab: OpenTab, factory: Factory, browser_server: Server
) -> None:
    """The dialog polls for 10 minutes (the page's clock, fast-forwarded here); a post
    still PROCESSING then (a worker backed up: the API's answers are held at that) is
    not an error nor a dialog stuck on "Processing…": it says so, and lets go."""
    author = await factory.user("patient")
    tab = await open_tab(author, "#/new")
    await tab.page.clock.install()
    polled = asyncio.Event()

    async def still_processing(route: Route) -> None:
        if operation_of(route.request) != "PostStatus":
            await route.fallback()
            return
        response = await route.fetch()
        body: dict[str, Any] = await response.json()
        if body.get("data") and body["data"].get("post"):
            body["data"]["post"]["status"] = "PROCESSING"
        polled.set()
        await route.fulfill(response=response, json=body)

    await tab.page.route(f"{browser_server.base_url}/graphql", still_processing)
    await tab.by("file-input").set_input_files(files=[photo_file("slow")])
    await tab.by("post-submit").click()
    status = tab.by("upload-status")
    await expect(status).to_have_attribute("data-status", "PROCESSING")
    async with asyncio.timeout(DEADLINE):
        await polled.wait()  # the dialog is polling

    await tab.page.clock.fast_forward("10:01")  # past the dialog's wait

    await expect(status).to_have_text(re.compile(r"Still processing; it will appear in your feed"))
    await expect(status).to_have_attribute("data-status", "PROCESSING")
    await expect(tab.by("post-submit")).to_be_enabled()
    close = tab.by("new-post-close")
    await expect(close).to_be_visible()
    await close.click()
    await expect(tab.by("feed")).to_be_visible()
    tab.assert_no_console_errors()


async def test_the_feed_rereads_what_it_missed_while_the_websocket_was_down(
    open_tab: OpenTab, gql: GraphQLClient, factory: Factory, browser_server: Server
) -> None:
    author = await factory.user("author")
    follower = await factory.user("follower")
    await factory.follow(follower, author)
    older = await post_photo(gql, author, "older 1")

    dropping = False
    dropped = asyncio.Event()
    connections: list[tuple[WebSocketRoute, WebSocketRoute]] = []  # (page's, server's)

    def proxy(ws: WebSocketRoute) -> None:
        """Every connection passes through; while `dropping`, feedItemAdded is lost."""
        server = ws.connect_to_server()
        connections.append((ws, server))
        ws.on_message(server.send)

        def to_page(message: str | bytes) -> None:
            if dropping and "feedItemAdded" in str(message):
                dropped.set()
                return
            ws.send(message)

        server.on_message(to_page)

    async def through_proxy(context: BrowserContext) -> None:
        await context.route_web_socket(re.compile(r"/graphql$"), proxy)

    fan = await open_tab(follower, "#/", prepare=through_proxy)
    await expect(fan.post(older)).to_be_visible()
    await wait_for_listener(browser_server, user_channel(follower.pk))
    assert len(connections) == 1

    # A post published while its live event is lost (as over a connection going down).
    dropping = True
    fresh = await post_photo(gql, author, "fresh 2")
    async with asyncio.timeout(DEADLINE):
        await dropped.wait()
    banner = fan.by("new-posts-banner")
    await expect(banner).to_be_hidden()

    # The connection drops; the client reconnects by itself and re-reads the feed.
    dropping = False
    page_side, server_side = connections[0]
    await server_side.close(code=1012, reason="service restart")
    await page_side.close(code=1012, reason="service restart")
    await expect(banner).to_be_visible()
    await expect(banner).to_have_text(re.compile(r"\b1 new post\b", re.IGNORECASE))
    assert len(connections) >= 2
    await banner.click()
    await expect(fan.feed_posts().first).to_have_attribute("data-post-id", fresh)
    fan.assert_no_console_errors()
