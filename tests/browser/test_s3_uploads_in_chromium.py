"""The reference web client uploading straight to an S3-compatible store, in a real
Chromium, from a page on another origin: moto's server (the project's S3 test server)
with the bucket's own CORS rules (`infra.storage.bucket_cors_rules`, applied by
`S3Storage.ensure_bucket`) and nothing else answering for it.

A photo goes up as the presigned POST form (its fields, then the file), a video larger
than the multipart threshold as one PUT per presigned part URL; each reaches READY
through the real worker, which reads the bytes back from the bucket, and shows in the
author's feed with its rendition read from the bucket, cross-origin. No byte goes
through the API.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.browser.conftest import S3_MULTIPART_BYTES
from tests.browser.helpers import (
    OpenTab,
    Tab,
    artifact,
    noise_video,
    photo_file,
    skip_without_browser,
    video_file,
)
from tests.conftest import GraphQLClient, Server
from tests.factories import Factory

skip_without_browser()

from playwright.async_api import FilePayload, Request, expect  # noqa: E402

PROCESSING_TIMEOUT_MS = 90_000  # the worker's turn (a video too); generous for a loaded CI
IMAGE_LOADED = "img => img.complete && img.naturalWidth > 0"
# The feed's <video> has read the clip's metadata (its size) from its URL.
VIDEO_METADATA_LOADED = "video => video.readyState >= 1 && video.videoWidth > 0"
# Each XHR's method and URL, and its body: a form's entries in order (a file as its
# size and type), a Blob's size. Only looks: the request goes out as the page made it.
RECORD_XHR_SENDS = """
() => {
  window.__sent = [];
  const { open, send } = XMLHttpRequest.prototype;
  XMLHttpRequest.prototype.open = function (method, url, ...rest) {
    this.__sent = { method, url: String(url) };
    return open.call(this, method, url, ...rest);
  };
  XMLHttpRequest.prototype.send = function (body) {
    const entry = { ...this.__sent };
    const describe = (value) =>
      value instanceof Blob ? { size: value.size, type: value.type } : value;
    if (body instanceof FormData) {
      entry.form = [...body.entries()].map(([k, v]) => [k, describe(v)]);
    } else if (body instanceof Blob) entry.size = body.size;
    window.__sent.push(entry);
    return send.call(this, body);
  };
}
"""
SETTLED = '[data-status="READY"], [data-status="FAILED"], [data-interrupted]'
LATEST_POST = """
query ($name: String!) {
  user(username: $name) {
    postCount
    posts(first: 1) {
      edges { node { id status caption media { kind width height videoUrl url } } }
    }
  }
}
"""


@pytest.fixture
def browser_server(s3_browser_server: Server) -> Server:
    """This module's API is the S3-backed one: `app_url`, `open_tab`, `gql` and `factory`
    (which all take `browser_server`) point at it."""
    return s3_browser_server


def bucket_url(server: Server) -> str:
    """Where the bucket's objects are (moto is path-style: endpoint/bucket/key)."""
    return f"{server.settings.s3_endpoint_url.rstrip('/')}/{server.settings.s3_bucket}"


async def record_requests(tab: Tab) -> list[Request]:
    """Every request the page makes from now on, in order (Chromium's view); and what
    the page hands to XMLHttpRequest's send, into window.__sent (Chromium does not show
    a request's body when it holds a file)."""
    requests: list[Request] = []
    tab.page.on("request", lambda request: requests.append(request))
    await tab.page.evaluate(RECORD_XHR_SENDS)
    return requests


async def share(tab: Tab, files: list[FilePayload], caption: str, screenshot: Path) -> None:
    """Pick the files in the new-post dialog, write the caption, press Share; returns once
    every progress bar is at 100 and the status is READY."""
    await tab.by("nav-new-post").click()
    await expect(tab.by("new-post-dialog")).to_be_visible()
    await tab.by("file-input").set_input_files(files=files)
    await tab.by("caption-input").fill(caption)
    await tab.by("post-submit").click()
    # Settled: READY, FAILED, or interrupted (a refused upload; Share would retry it).
    status = tab.by("upload-status")
    await expect(status.and_(tab.page.locator(SETTLED))).to_be_visible(
        timeout=PROCESSING_TIMEOUT_MS
    )
    await tab.page.screenshot(path=screenshot)
    assert await status.get_attribute("data-interrupted") is None, await status.text_content()
    await expect(status).to_have_attribute("data-status", "READY")
    bars = tab.by("upload-progress")
    await expect(bars).to_have_count(len(files))
    for index in range(len(files)):
        bar = bars.and_(tab.page.locator(f'[data-file-index="{index}"]'))
        await expect(bar).to_have_attribute("max", "100")
        await expect(bar).to_have_js_property("value", 100)


def sent_to(requests: list[Request], prefix: str) -> list[Request]:
    return [r for r in requests if r.url.startswith(prefix)]


async def assert_cors_allowed(request: Request, origin: str) -> dict[str, str]:
    """The store answered the request with success and CORS headers for the page's
    origin (else the browser would have blocked the XHR); returns its headers."""
    response = await request.response()
    assert response is not None, request.url
    assert 200 <= response.status < 300, (response.status, await response.text())
    headers = await response.all_headers()
    assert headers.get("access-control-allow-origin") == origin, headers
    return headers


async def latest_post(gql: GraphQLClient, token: str, username: str) -> dict[str, Any]:
    user = (await gql(LATEST_POST, token=token, name=username))["user"]
    assert user["postCount"] == 1, user
    [edge] = user["posts"]["edges"]
    post: dict[str, Any] = edge["node"]
    return post


async def test_a_photo_goes_straight_to_the_bucket_as_a_presigned_post(
    open_tab: OpenTab,
    gql: GraphQLClient,
    factory: Factory,
    browser_server: Server,
    page_origin: str,
    request: pytest.FixtureRequest,
) -> None:
    author = await factory.user("author")
    tab = await open_tab(author, "#/")
    requests = await record_requests(tab)
    bucket = bucket_url(browser_server)

    # When the author shares a photo through the dialog.
    picture = photo_file("harbour", (1200, 900))
    await share(
        tab,
        [picture],
        "Harbour lights #night",
        artifact(request.node.name, "upload-dialog"),
    )

    # Then its bytes went to the bucket in one presigned POST form, its fields first
    # and the file last, answered with CORS headers for the page's origin; none went to
    # the API's own upload route.
    [upload] = [r for r in sent_to(requests, bucket) if r.method != "GET"]
    assert (upload.method, upload.url) == ("POST", bucket)
    assert upload.resource_type == "xhr"
    assert (await upload.all_headers())["content-type"].startswith("multipart/form-data;")
    await assert_cors_allowed(upload, page_origin)
    [sent] = await tab.page.evaluate("() => window.__sent")
    assert (sent["method"], sent["url"]) == ("POST", bucket)
    names = [name for name, _ in sent["form"]]
    assert names[-1] == "file" and names.count("file") == 1, names
    assert {"key", "Content-Type", "policy", "x-amz-signature"} <= set(names), names
    fields = dict(sent["form"][:-1])
    assert fields["key"].startswith("originals/") and fields["Content-Type"] == "image/jpeg"
    assert sent["form"][-1][1] == {"size": len(picture["buffer"]), "type": "image/jpeg"}
    assert sent_to(requests, f"{browser_server.base_url}/uploads/") == []

    # And the API agrees: READY, its renditions in the bucket.
    post = await latest_post(gql, author.token, author.username)
    assert (post["status"], post["caption"]) == ("READY", "Harbour lights #night")
    [media] = post["media"]
    assert media["kind"] == "PHOTO" and media["url"].startswith(f"{bucket}/renditions/")

    # And the feed shows it, the image read from the bucket by a cross-origin <img>.
    await tab.by("nav-feed").click()
    article = tab.post(post["id"])
    await expect(article.get_by_test_id("post-caption")).to_contain_text("Harbour lights")
    image = article.get_by_test_id("post-image")
    await tab.page.wait_for_function(IMAGE_LOADED, arg=await image.element_handle())
    shown = await image.evaluate("img => img.currentSrc")
    assert shown.startswith(f"{bucket}/renditions/"), shown
    [fetched] = [r for r in requests if r.url == shown]
    response = await fetched.response()
    assert response is not None and response.status == 200
    tab.assert_no_console_errors()


async def test_a_large_video_goes_straight_to_the_bucket_in_multipart_parts(
    open_tab: OpenTab,
    gql: GraphQLClient,
    factory: Factory,
    browser_server: Server,
    page_origin: str,
    request: pytest.FixtureRequest,
) -> None:
    clip = noise_video()
    # A real MP4 over the threshold, so more than one part (every part but the last is
    # S3's minimum of 5 MiB).
    assert browser_server.settings.multipart_threshold_bytes == S3_MULTIPART_BYTES
    parts = math.ceil(len(clip) / S3_MULTIPART_BYTES)
    assert len(clip) > S3_MULTIPART_BYTES and parts >= 2, len(clip)
    author = await factory.user("author")
    tab = await open_tab(author, "#/")
    requests = await record_requests(tab)
    bucket = bucket_url(browser_server)

    # When the author shares the video through the dialog.
    await share(
        tab,
        [video_file("noise.mp4", clip)],
        "Static #noise",
        artifact(request.node.name, "upload-dialog"),
    )

    # Then its bytes went to the bucket as one PUT per part URL (parts 1..n of one
    # multipart upload), each answered with CORS headers for the page's origin and the
    # part's ETag readable by the page; nothing went to the API's upload route.
    uploads = [r for r in sent_to(requests, bucket) if r.method != "GET"]
    assert [r.method for r in uploads] == ["PUT"] * parts, [(r.method, r.url) for r in uploads]
    queries = [parse_qs(urlsplit(r.url).query) for r in uploads]
    assert sorted(int(q["partNumber"][0]) for q in queries) == list(range(1, parts + 1))
    assert len({q["uploadId"][0] for q in queries}) == 1
    assert {urlsplit(r.url).path for r in uploads} == {urlsplit(uploads[0].url).path}
    assert urlsplit(uploads[0].url).path.startswith(urlsplit(bucket).path + "/")
    for upload in uploads:
        assert upload.resource_type == "xhr"
        headers = await assert_cors_allowed(upload, page_origin)
        assert headers.get("etag"), headers
        exposed = headers.get("access-control-expose-headers", "").lower()
        assert "etag" in [name.strip() for name in exposed.split(",")], headers
    # Part n holds bytes (n-1)*partSize .. n*partSize of the file, the last the rest.
    sent = await tab.page.evaluate("() => window.__sent")
    sizes = {int(parse_qs(urlsplit(x["url"]).query)["partNumber"][0]): x["size"] for x in sent}
    assert sizes == {
        n: min(S3_MULTIPART_BYTES, len(clip) - (n - 1) * S3_MULTIPART_BYTES)
        for n in range(1, parts + 1)
    }, sizes
    assert sent_to(requests, f"{browser_server.base_url}/uploads/") == []

    # And the API agrees: READY, the transcoded video and its poster in the bucket.
    post = await latest_post(gql, author.token, author.username)
    assert (post["status"], post["caption"]) == ("READY", "Static #noise")
    [media] = post["media"]
    assert media["kind"] == "VIDEO" and (media["width"], media["height"]) == (640, 480)
    assert media["videoUrl"].startswith(f"{bucket}/"), media
    assert media["url"].startswith(f"{bucket}/renditions/"), media

    # And the feed shows it: the <video> reads the clip from the bucket, its poster too.
    await tab.by("nav-feed").click()
    article = tab.post(post["id"])
    await expect(article.get_by_test_id("post-caption")).to_contain_text("Static")
    video = article.get_by_test_id("post-video")
    await expect(video).to_have_attribute("src", media["videoUrl"])
    await expect(video).to_have_attribute("poster", re.compile(rf"^{re.escape(bucket)}/"))
    await tab.page.wait_for_function(VIDEO_METADATA_LOADED, arg=await video.element_handle())
    # And the profile grid, its poster as a cross-origin <img> from the bucket.
    await tab.by("nav-profile").click()
    cell = tab.by("profile-grid").get_by_test_id("grid-item").locator("img")
    await expect(cell).to_have_count(1)
    await tab.page.wait_for_function(IMAGE_LOADED, arg=await cell.element_handle())
    shown = await cell.evaluate("img => img.currentSrc")
    assert shown.startswith(f"{bucket}/renditions/"), shown
    tab.assert_no_console_errors()
