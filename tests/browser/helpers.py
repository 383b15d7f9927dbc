"""What the browser tests share: a tab that records console errors, photos, posts made
through the API and the waits that go with them."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import os
import random
import re
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image, ImageDraw, ImageFont

from infra.feedstore import live_key
from infra.pubsub import notification_channel
from settings import ROOT
from tests.conftest import GraphQLClient, Server
from tests.factories import MadeUser
from tests.media_samples import gradient, make_video
from tests.posting import publish, wait_for_post

if TYPE_CHECKING:  # imported for types only: this module loads without Playwright
    from playwright.async_api import (
        BrowserContext,
        ConsoleMessage,
        Error,
        FilePayload,
        Locator,
        Page,
    )

CHROMIUM = shutil.which("chromium") or ""
PLAYWRIGHT_MISSING = importlib.util.find_spec("playwright") is None
# What a test module checks first, skipping itself (and saying why) when it is true.
BROWSER_MISSING = not CHROMIUM or PLAYWRIGHT_MISSING
SKIP_REASON = (
    "the playwright package is missing (pip install -e '.[dev]'): browser tests skipped"
    if PLAYWRIGHT_MISSING
    else "Chromium not installed (apt-get install chromium): browser tests skipped"
)
# Set (CI sets it) when a missing browser must fail the run rather than skip the tests.
REQUIRE_BROWSER = os.environ.get("REQUIRE_BROWSER", "") not in ("", "0")


def skip_without_browser() -> None:
    """At a test module's top: skip it without Chromium or Playwright (saying which is
    missing), or fail, with the same reason, when REQUIRE_BROWSER is set."""
    if not BROWSER_MISSING:
        return
    if REQUIRE_BROWSER:
        pytest.fail(f"{SKIP_REASON} (REQUIRE_BROWSER is set)", pytrace=False)
    pytest.skip(SKIP_REASON, allow_module_level=True)


# Where the client keeps the API the person chose (web/app/config.js).
API_KEY = "instagraph.api"


def token_key_for(server: Server) -> str:
    """The localStorage key the client keeps its token for this API under (one key per
    API origin, see web/app/config.js)."""
    return f"instagraph.token@{server.base_url}"


# Screenshots (the feed, the upload dialog, every page of a failed test); gitignored.
ARTIFACTS = ROOT / "test-artifacts" / "browser"
DEADLINE = 30  # seconds; generous, only keeps a broken test from hanging


def artifact(test_name: str, label: str) -> Path:
    """Where a screenshot of this test goes."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / (re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{test_name}-{label}") + ".png")


@dataclass
class Tab:
    """One person's browser context and page, with what the page logged as errors
    (a blocked cross-origin request shows up here, as does an uncaught exception)."""

    name: str
    context: BrowserContext
    page: Page
    errors: list[str] = field(default_factory=list)

    def watch_console(self) -> None:
        self.page.on("console", self._on_console)
        self.page.on("pageerror", self._on_page_error)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            where = message.location.get("url", "")
            self.errors.append(f"console error: {message.text} [{where}]")

    def _on_page_error(self, error: Error) -> None:
        self.errors.append(f"uncaught: {error.name}: {error.message}")

    def by(self, test_id: str) -> Locator:
        return self.page.get_by_test_id(test_id)

    def post(self, post_id: str) -> Locator:
        """The feed's article for this post."""
        return self.page.locator(f'article[data-testid="post"][data-post-id="{post_id}"]')

    def feed_posts(self) -> Locator:
        """The feed's articles, in page order."""
        return self.page.locator('[data-testid="feed"] article[data-testid="post"]')

    def assert_no_console_errors(self) -> None:
        assert self.errors == [], f"{self.name}'s page logged errors:\n" + "\n".join(self.errors)


def photo(label: str, size: tuple[int, int] = (720, 720)) -> bytes:
    """A real JPEG with the label drawn large (so screenshots show which post is which)."""
    image = gradient(*size)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=size[1] // 5)
    draw.text((size[0] // 10, size[1] // 3), label, fill=(255, 255, 255), font=font)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def photo_file(label: str, size: tuple[int, int] = (720, 720)) -> FilePayload:
    """A photo as the file chooser hands it to the page."""
    return {"name": f"{label}.jpg", "mimeType": "image/jpeg", "buffer": photo(label, size)}


def noise_video(
    *, size: tuple[int, int] = (640, 480), seconds: float = 2.0, fps: int = 25
) -> bytes:
    """A real MP4 (H.264 and AAC, `tests.media_samples.make_video`) of random noise: noise
    does not compress, so a short low-resolution clip is several MiB (about 7.8 at the
    defaults, more than one multipart part), cheap to make and to transcode. Seeded: the
    same bytes every time."""
    width, height = size
    noise = random.Random(f"{size}-{seconds}-{fps}")
    frames = [
        Image.frombytes("RGB", size, noise.randbytes(width * height * 3))
        for _ in range(round(seconds * fps))
    ]
    with tempfile.TemporaryDirectory(prefix="instagraph-video-") as work:
        path = Path(work) / "noise.mp4"
        make_video(path, frames, seconds=seconds, fps=fps)
        return path.read_bytes()


def video_file(name: str, data: bytes) -> FilePayload:
    """An MP4 as the file chooser hands it to the page."""
    return {"name": name, "mimeType": "video/mp4", "buffer": data}


async def post_photo(gql: GraphQLClient, author: MadeUser, caption: str) -> str:
    """Post a photo through the API (createPost, upload, completeUpload) as another
    client would, and wait until the worker made it READY; returns its global ID."""
    post_id = await publish(
        gql, author.token, [("image/jpeg", photo(caption.split()[-1]))], caption=caption
    )
    post = await wait_for_post(gql, author.token, post_id)
    assert post["status"] == "READY", post
    return post_id


async def wait_for_listener(server: Server, channel: str) -> None:
    """Until a subscription listens on the channel: Redis has the subscriber (PUBSUB
    NUMSUB), the server's hub has registered the listener (it subscribes and marks
    presence first, registers last: infra/pubsub.py's `_join`) and the listening
    user's presence key is set, so a message published now reaches the page."""
    hub = server.resources.pubsub
    async with asyncio.timeout(DEADLINE):
        while True:
            counts = dict(await server.redis.pubsub_numsub(channel))
            listeners = [
                listener for listener in hub._listeners.get(channel, ()) if listener.active
            ]
            if int(counts.get(channel.encode(), 0)) > 0 and listeners:
                keys = [live_key(listener.user_id) for listener in listeners]
                if await server.redis.exists(*keys) == len(keys):
                    return
            await asyncio.sleep(0.05)


def notifications_of(user: MadeUser) -> str:
    return notification_channel(user.pk)


OpenTab = Callable[..., Awaitable[Tab]]
