"""The reference web client in a real Chromium, from another origin than the API: what a
person does in it (log in, scroll, post a photo, follow, like, comment) and what others
see live (the new-posts banner, the notification badge). Elements are found by the
client's data-testid contract (web/README.md); data not under test is made through
the API. Every page must finish without a console error: a request blocked by CORS,
a failed image or an uncaught exception shows up there.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from infra.feedstore import user_channel
from tests.browser.helpers import (
    OpenTab,
    artifact,
    notifications_of,
    photo,
    photo_file,
    post_photo,
    skip_without_browser,
    token_key_for,
    wait_for_listener,
)
from tests.conftest import GraphQLClient, Server
from tests.factories import PASSWORD, Factory
from tests.posting import publish, wait_for_post

skip_without_browser()

from playwright.async_api import Request, Route, expect  # noqa: E402

PAGE_SIZE = 10  # the client's `first:` on the feed
PROCESSING_TIMEOUT_MS = 60_000  # the worker's turn; generous for a loaded machine

POST = """
query ($id: ID!) {
  post(id: $id) { status caption likeCount commentCount viewerHasLiked author { username } }
}
"""
USER = "query ($name: String!) { user(username: $name) { followerCount viewerIsFollowing } }"
LATEST_POST = """
query ($name: String!) {
  user(username: $name) { postCount posts(first: 1) { edges { node { id status caption } } } }
}
"""

POST_IDS = "articles => articles.map(article => article.dataset.postId)"
# Every value the first file's progress bar takes, in order, into window.__progress.
RECORD_PROGRESS = """
() => {
  window.__progress = [];
  new MutationObserver((changes) => {
    for (const change of changes) {
      const bar = change.target;
      if (bar.dataset.testid === 'upload-progress' && bar.dataset.fileIndex === '0') {
        window.__progress.push(Number(bar.value));
      }
    }
  }).observe(document.body, { subtree: true, attributes: true, attributeFilter: ['value'] });
}
"""
# Upload bandwidth while the photo goes up (bytes per second): a few seconds for it,
# so the browser reports progress part of the way (its events come every ~50 ms).
UPLOAD_BYTES_PER_SECOND = 16 * 1024
UPLOAD_PHOTO_SIZE = (1200, 1200)
IMAGE_LOADED = "img => img.complete && img.naturalWidth > 0"
# The BlurHash was painted: most of the canvas is opaque and not one flat colour.
PLACEHOLDER_PAINTED = """
canvas => {
  const context = canvas.getContext('2d');
  if (!context || canvas.width === 0 || canvas.height === 0) return false;
  const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let opaque = 0;
  const colours = new Set();
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] > 0) opaque++;
    colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
  }
  return opaque * 4 > data.length / 2 && colours.size > 1;
}
"""


async def test_log_in_then_scroll_two_feed_pages(
    open_tab: OpenTab, gql: GraphQLClient, factory: Factory, browser_server: Server, request
) -> None:
    # Given a reader following two authors with 16 READY photo posts between them.
    reader = await factory.user("reader")
    authors = [await factory.user("ana"), await factory.user("ben")]
    for author in authors:
        await factory.follow(reader, author)
    # Published one after another (the feed's order is the order of createPost), the
    # worker processing them meanwhile; then waited for all together.
    created = [
        await publish(
            gql, authors[n % 2].token, [("image/jpeg", photo(f"{n + 1:02}"))], f"post {n + 1:02}"
        )
        for n in range(PAGE_SIZE + 6)
    ]
    ready = await asyncio.gather(
        *(wait_for_post(gql, authors[n % 2].token, post) for n, post in enumerate(created))
    )
    assert [post["status"] for post in ready] == ["READY"] * len(created), ready
    newest_first = list(reversed(created))
    # Image responses wait until the placeholders have been seen.
    images_released = asyncio.Event()

    async def hold_image(route: Route) -> None:
        await images_released.wait()
        await route.continue_()

    # When they open the client, signed out, and log in through the form (a wrong
    # password first).
    tab = await open_tab()
    graphql_requests: list[Request] = []
    graphql_url = f"{browser_server.base_url}/graphql"
    tab.page.on(
        "request",
        lambda r: (
            graphql_requests.append(r) if r.method == "POST" and r.url == graphql_url else None
        ),
    )
    await tab.context.route(f"{browser_server.base_url}/media/**", hold_image)
    try:
        await expect(tab.by("login-form")).to_be_visible()
        await tab.by("login-username").fill(reader.username)
        await tab.by("login-password").fill("not the password")
        await tab.by("login-submit").click()
        await expect(tab.by("login-error")).to_be_visible()
        await expect(tab.by("login-error")).not_to_have_text("")
        await tab.by("login-password").fill(PASSWORD)
        await tab.by("login-submit").click()

        # Then the feed shows the first page, newest first, each photo as its
        # placeholder until the image arrives, then as a rendition from the API's origin.
        posts = tab.feed_posts()
        await expect(posts.nth(PAGE_SIZE - 1)).to_be_attached()
        assert await posts.evaluate_all(POST_IDS) == newest_first[:PAGE_SIZE]
        first = posts.first
        await expect(first.get_by_test_id("post-author")).to_have_text(authors[1].username)
        await expect(first.get_by_test_id("post-author")).to_have_attribute(
            "href", re.compile(rf"#/u/{authors[1].username}$")
        )
        await expect(first.get_by_test_id("post-caption")).to_have_text("post 16")
        placeholder = first.get_by_test_id("post-placeholder")
        await expect(placeholder).to_be_visible()
        assert await placeholder.evaluate("el => el.tagName") == "CANVAS"
        await tab.page.wait_for_function(
            PLACEHOLDER_PAINTED, arg=await placeholder.element_handle()
        )
    finally:
        images_released.set()  # a held image must not outlive a failed test
    image = first.get_by_test_id("post-image")
    await tab.page.wait_for_function(IMAGE_LOADED, arg=await image.element_handle())
    widths = re.findall(r"\s(\d+)w", await image.get_attribute("srcset") or "")
    assert len(set(widths)) == 3, widths  # THUMB, FEED and FULL
    assert (await image.get_attribute("src") or "").startswith(f"{browser_server.base_url}/media/")
    webp = first.locator('picture source[type="image/webp"]')
    await expect(webp).to_have_count(1)
    assert len(set(re.findall(r"\s(\d+)w", await webp.get_attribute("srcset") or ""))) == 3
    # The second page is not read before the reader scrolls to it.
    assert await posts.count() == PAGE_SIZE
    await tab.page.screenshot(path=artifact(request.node.name, "feed"))
    # The session is kept where the client keeps it: under the API's origin.
    stored = await tab.page.evaluate(
        "key => [localStorage.getItem(key), localStorage.getItem('instagraph.api')]",
        token_key_for(browser_server),
    )
    assert stored[0] and stored[1] == browser_server.base_url

    # When they scroll to the bottom, the sentinel brings the second (last) page.
    await tab.by("feed-sentinel").scroll_into_view_if_needed()
    await expect(posts).to_have_count(len(created))
    ids = await posts.evaluate_all(POST_IDS)
    assert len(set(ids)) == len(ids) == len(created)
    assert ids == newest_first
    await tab.by("feed-end").scroll_into_view_if_needed()
    await expect(tab.by("feed-end")).to_be_visible()

    # The pages the client read: the first with no cursor, the second after the first
    # page's endCursor, and no more.
    pages = await feed_pages(graphql_requests)
    assert [variables for variables, _ in pages] == [
        {"first": PAGE_SIZE, "after": None},
        {"first": PAGE_SIZE, "after": pages[0][1]["pageInfo"]["endCursor"]},
    ], pages
    assert pages[0][1]["pageInfo"]["hasNextPage"] is True
    assert pages[1][1]["pageInfo"]["hasNextPage"] is False
    tab.assert_no_console_errors()


async def feed_pages(requests: list[Request]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The HomeFeed requests that were answered with a page (a hash-only request the
    server did not know is retried with the text: the retry is the one answered), as
    (variables sent, the `feed` answered); `after` is None when not sent."""
    pages = []
    for sent in requests:
        body = json.loads(sent.post_data or "{}")
        if body.get("operationName") != "HomeFeed":
            continue
        response = await sent.response()
        assert response is not None
        feed = ((await response.json()).get("data") or {}).get("feed")
        if feed is not None:
            variables = body.get("variables") or {}
            pages.append(({"after": None, **variables}, feed))
    return pages


async def test_upload_a_photo_until_ready_and_see_it_in_the_own_feed(
    open_tab: OpenTab, gql: GraphQLClient, factory: Factory, browser_server: Server, request
) -> None:
    author = await factory.user("author")
    tab = await open_tab(author, "#/")
    uploads: list[Request] = []
    tab.page.on("request", lambda r: uploads.append(r) if r.method == "PUT" else None)

    # When the author opens the new-post dialog, picks a photo and writes a caption.
    await tab.by("nav-new-post").click()
    dialog = tab.by("new-post-dialog")
    await expect(dialog).to_be_visible()
    file_input = tab.by("file-input")
    assert await file_input.get_attribute("type") == "file"
    await file_input.set_input_files(files=[photo_file("sunset", UPLOAD_PHOTO_SIZE)])
    await tab.by("caption-input").fill("Sunset over the bay #sunset")
    await tab.page.screenshot(path=artifact(request.node.name, "upload-dialog"))
    # A slow uplink (Chromium's own network emulation), so the bytes take a while...
    devtools = await tab.context.new_cdp_session(tab.page)
    await devtools.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": UPLOAD_BYTES_PER_SECOND,
        },
    )
    await tab.page.evaluate(RECORD_PROGRESS)
    await tab.by("post-submit").click()

    # Then the file's progress bar moves through values part of the way as its bytes
    # go up, and reaches 100%; the post reaches READY.
    progress = tab.page.locator('[data-testid="upload-progress"][data-file-index="0"]')
    await expect(progress).to_have_attribute("max", "100")
    await expect(progress).to_have_js_property("value", 100)
    await devtools.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )
    seen = await tab.page.evaluate("() => window.__progress")
    assert any(0 < value < 100 for value in seen), seen
    assert seen[-1] == 100, seen
    status = tab.by("upload-status")
    await expect(status).to_have_attribute("data-status", "READY", timeout=PROCESSING_TIMEOUT_MS)
    await expect(status).to_have_text(re.compile(r"\w"))  # readable, whatever the words
    await tab.page.screenshot(path=artifact(request.node.name, "upload-dialog-ready"))

    # The bytes went straight to the upload target (the API's /uploads route here),
    # cross-origin, in one PUT.
    [put] = uploads
    assert put.url.startswith(f"{browser_server.base_url}/uploads/"), put.url
    # And the API agrees: one READY post with that caption.
    user = (await gql(LATEST_POST, token=author.token, name=author.username))["user"]
    [edge] = user["posts"]["edges"]
    post = edge["node"]
    assert (user["postCount"], post["status"], post["caption"]) == (
        1,
        "READY",
        "Sunset over the bay #sunset",
    )

    # And it is in the author's own home feed, its image loaded.
    await tab.by("nav-feed").click()
    article = tab.post(post["id"])
    await expect(article).to_be_visible()
    await expect(article.get_by_test_id("post-caption")).to_contain_text("Sunset over the bay")
    image = article.get_by_test_id("post-image")
    await tab.page.wait_for_function(IMAGE_LOADED, arg=await image.element_handle())
    tab.assert_no_console_errors()


async def test_a_follower_sees_the_new_posts_banner_when_a_post_is_published(
    open_tab: OpenTab, gql: GraphQLClient, factory: Factory, browser_server: Server
) -> None:
    author = await factory.user("author")
    follower = await factory.user("follower")
    await factory.follow(follower, author)
    older = [await post_photo(gql, author, f"older {n}") for n in (1, 2, 3)]

    # Given the follower's feed open (its subscription live), scrolled down to the
    # oldest post, and the author's client.
    fan = await open_tab(follower, "#/")
    await expect(fan.post(older[0])).to_be_visible()
    await wait_for_listener(browser_server, user_channel(follower.pk))
    await expect(fan.by("new-posts-banner")).to_be_hidden()
    await fan.by("feed-end").scroll_into_view_if_needed()
    await fan.page.wait_for_function("() => window.scrollY > 0")
    await fan.page.evaluate("() => { window.stillTheSamePage = true; }")
    me = await open_tab(author, "#/new")

    # When the author posts a photo through the dialog and it becomes READY.
    await expect(me.by("new-post-dialog")).to_be_visible()
    await me.by("file-input").set_input_files(files=[photo_file("fresh")])
    await me.by("caption-input").fill("fresh off the camera")
    await me.by("post-submit").click()
    await expect(me.by("upload-status")).to_have_attribute(
        "data-status", "READY", timeout=PROCESSING_TIMEOUT_MS
    )
    latest = (await gql(LATEST_POST, token=author.token, name=author.username))["user"]
    fresh = latest["posts"]["edges"][0]["node"]["id"]
    assert fresh not in older

    # Then the follower's page, never reloaded, offers it in the banner...
    banner = fan.by("new-posts-banner")
    await expect(banner).to_be_visible(timeout=PROCESSING_TIMEOUT_MS)
    await expect(banner).to_have_text(re.compile(r"\b1 new post\b", re.IGNORECASE))
    await expect(fan.post(fresh)).to_have_count(0)
    # ...and a click scrolls to the top, where it now heads the feed.
    await banner.click()
    posts = fan.feed_posts()
    await expect(posts.first).to_have_attribute("data-post-id", fresh)
    assert await posts.evaluate_all(POST_IDS) == [fresh, *reversed(older)]
    await expect(posts.first.get_by_test_id("post-caption")).to_have_text("fresh off the camera")
    await expect(banner).to_be_hidden()
    await fan.page.wait_for_function("() => window.scrollY === 0")  # a smooth scroll ends
    assert await fan.page.evaluate("() => window.stillTheSamePage") is True
    fan.assert_no_console_errors()
    me.assert_no_console_errors()


async def test_follow_a_user_from_their_profile(
    open_tab: OpenTab, gql: GraphQLClient, factory: Factory
) -> None:
    target = await factory.user("target")
    await factory.follow(await factory.user("early"), target)
    await post_photo(gql, target, "grid 1")
    viewer = await factory.user("viewer")

    tab = await open_tab(viewer, f"#/u/{target.username}")
    profile = tab.by("profile")
    await expect(profile).to_have_attribute("data-username", target.username)
    await expect(tab.by("profile-username")).to_have_text(target.username)
    await expect(tab.by("follower-count")).to_have_text("1")
    await expect(tab.by("post-count")).to_have_text("1")
    await expect(tab.by("profile-grid").get_by_test_id("grid-item")).to_have_count(1)
    button = tab.by("follow-button")
    await expect(button).to_have_text("Follow")
    await expect(button).to_have_attribute("aria-pressed", "false")

    await button.click()

    await expect(button).to_have_text("Following")
    await expect(button).to_have_attribute("aria-pressed", "true")
    await expect(tab.by("follower-count")).to_have_text("2")
    user = (await gql(USER, token=viewer.token, name=target.username))["user"]
    assert user == {"followerCount": 2, "viewerIsFollowing": True}
    # A reload reads it back from the API.
    await tab.page.reload()
    await expect(tab.by("profile")).to_have_attribute("data-username", target.username)
    await expect(tab.by("follow-button")).to_have_text("Following")
    await expect(tab.by("follow-button")).to_have_attribute("aria-pressed", "true")
    await expect(tab.by("follower-count")).to_have_text("2")
    tab.assert_no_console_errors()


async def test_like_and_comment_change_the_authors_badge_live(
    open_tab: OpenTab, gql: GraphQLClient, factory: Factory, browser_server: Server
) -> None:
    author = await factory.user("author")
    friend = await factory.user("friend")
    await factory.follow(friend, author)
    post_id = await post_photo(gql, author, "beach 1")

    # Given the author's client open (its notification subscription live), no unread.
    mine = await open_tab(author, "#/")
    await expect(mine.post(post_id)).to_be_visible()
    await wait_for_listener(browser_server, notifications_of(author))
    badge = mine.by("notification-badge")
    await expect(badge).to_be_hidden()
    await mine.page.evaluate("() => { window.stillTheSamePage = true; }")

    # When a friend double-taps the photo in their feed...
    theirs = await open_tab(friend, "#/")
    article = theirs.post(post_id)
    await article.get_by_test_id("post-media").dblclick()
    await expect(article.get_by_test_id("like-button")).to_have_attribute("aria-pressed", "true")
    await expect(article.get_by_test_id("like-count")).to_have_text("1")
    # ...the author's badge shows it, live.
    await expect(badge).to_be_visible()
    await expect(badge).to_have_text("1")

    # When the friend comments...
    await article.get_by_test_id("comment-input").fill("what a view!")
    await article.get_by_test_id("comment-submit").click()
    comments = article.get_by_test_id("comments").get_by_test_id("comment")
    await expect(comments.filter(has_text="what a view!")).to_have_count(1)
    await expect(article.get_by_test_id("comment-count")).to_have_text("1")
    # ...the badge counts it too, on the same page (never reloaded).
    await expect(badge).to_have_text("2")
    assert await mine.page.evaluate("() => window.stillTheSamePage") is True

    post = (await gql(POST, token=friend.token, id=post_id))["post"]
    assert (post["likeCount"], post["commentCount"], post["viewerHasLiked"]) == (1, 1, True)
    # The notifications page lists both.
    await mine.by("nav-notifications").click()
    items = mine.by("notifications").get_by_test_id("notification")
    await expect(items).to_have_count(2)
    assert sorted(await items.evaluate_all("els => els.map(el => el.dataset.kind)")) == [
        "COMMENT",
        "LIKE",
    ]
    mine.assert_no_console_errors()
    theirs.assert_no_console_errors()
