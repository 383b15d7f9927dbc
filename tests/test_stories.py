"""Stories end to end: the posts' upload pipeline with a 1080x1920 full-screen rendition
(on both storage backends), 24 hours of visibility from READY enforced on read, the
cleanup cron, the tray's order and seen state, and who may see what."""

from __future__ import annotations

import asyncio
import io
from datetime import timedelta
from typing import Any

import httpx
from PIL import Image
from sqlalchemy import text

from domain import stories as story_domain
from domain.posts import MediaSpec
from infra.ids import from_global_id, to_global_id
from infra.images import STORY_FRAME, render_photo
from tests.conftest import GraphQLClient, Server, count_statements
from tests.factories import MadeUser
from tests.media_samples import jpeg_bytes, video_bytes
from tests.posting import upload
from tests.social_factories import ready_story
from workers.stories import cleanup_stories, process_story, sweep_stories

# A story's media may be cached no longer than the story is shown (24 hours).
STORY_CACHE_CONTROL = "public, max-age=86400"

CREATE = """
mutation ($media: MediaInput!) {
  createStory(media: $media) {
    story { id status expiresAt author { username } media { id kind } }
    uploads { mediaId method url headers { name value } fields { name value } expiresAt partSize partUrls }
    errors { field message code }
  }
}
"""
COMPLETE = """
mutation ($id: ID!) {
  completeStoryUpload(storyId: $id) { story { id status } errors { field message code } }
}
"""
SEEN = """
mutation ($id: ID!) {
  markStorySeen(storyId: $id) { story { id viewerHasSeen } errors { field code } }
}
"""
STORY = """
query ($id: ID!) {
  node(id: $id) {
    ... on Story {
      id status failureReason createdAt expiresAt viewerHasSeen author { username }
      media {
        id kind width height placeholder videoUrl
        thumb: url(size: THUMB) feed: url full: url(size: FULL)
        fullWebp: url(size: FULL, format: WEBP)
      }
    }
  }
}
"""
TRAY = """
query {
  storiesTray {
    author { username }
    hasUnseen
    stories { id viewerHasSeen expiresAt media { url(size: FULL) } }
  }
}
"""
MEDIA_NODE = "query ($id: ID!) { node(id: $id) { id ... on Media { kind } } }"
BLOCK = "mutation ($id: ID!) { block(userId: $id) { errors { code } } }"
FOLLOW = "mutation ($id: ID!) { follow(userId: $id) { errors { code } } }"


def image(data: bytes) -> Image.Image:
    opened = Image.open(io.BytesIO(data))
    opened.load()
    return opened


async def create_story(gql: GraphQLClient, token: str, content_type: str, size: int) -> Any:
    media = {"contentType": content_type, "byteSize": str(size)}
    return (await gql(CREATE, token=token, media=media))["createStory"]


async def post_story(gql: GraphQLClient, token: str, content_type: str, data: bytes) -> str:
    """createStory, upload the bytes to the target, completeStoryUpload; the story's ID."""
    created = await create_story(gql, token, content_type, len(data))
    assert created["errors"] == [], created["errors"]
    [target] = created["uploads"]
    assert target["mediaId"] == created["story"]["media"]["id"]
    response = await upload(target, data)
    assert response.status_code in (200, 201, 204), response.text
    story_id: str = created["story"]["id"]
    completed = (await gql(COMPLETE, token=token, id=story_id))["completeStoryUpload"]
    assert completed == {"story": {"id": story_id, "status": "PROCESSING"}, "errors": []}
    return story_id


async def wait_for_story(gql: GraphQLClient, token: str, story_id: str) -> dict[str, Any]:
    """Poll until the worker has finished with the story (READY or FAILED)."""
    async with asyncio.timeout(60):
        while True:
            story: dict[str, Any] = (await gql(STORY, token=token, id=story_id))["node"]
            if story["status"] in ("READY", "FAILED"):
                return story
            await asyncio.sleep(0.1)


async def read_story_media(url: str) -> bytes:
    """Fetch a story rendition by its public URL with no credentials (the API's media
    route, or the bucket under its public-read policy), checking it may be cached for no
    longer than the story lives."""
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["cache-control"] == STORY_CACHE_CONTROL
    return response.content


async def processing_story(srv: Server, author: MadeUser, data: bytes) -> tuple[int, int]:
    """A story whose bytes are uploaded and which is PROCESSING, with no job enqueued
    (as when Redis was down at completeStoryUpload); its (story, media) ids."""
    async with srv.engine.begin() as conn:
        created = await story_domain.create_story(
            conn=conn, author_id=author.pk, spec=MediaSpec("image/jpeg", len(data))
        )
    await srv.storage.put(created.media.original_key, data, "image/jpeg", cache_immutable=False)
    async with srv.engine.begin() as conn:
        assert await story_domain.start_processing(
            conn=conn, story_id=created.story.id, ttl=timedelta(hours=24)
        )
    return created.story.id, created.media.id


async def story_object_keys(srv: Server, story_id: int, media_id: int) -> list[str]:
    """Every key of the story's objects that exists in the store."""
    keys = [story_domain.original_key(story_id, media_id)]
    keys += [
        story_domain.rendition_key(story_id, media_id, size, fmt)
        for size in ("THUMB", "FEED", "FULL")
        for fmt in ("JPEG", "WEBP")
    ]
    return [key for key in keys if await srv.storage.head(key) is not None]


async def sql(srv: Server, statement: str, **values: Any) -> list[Any]:
    """Run one statement in its own transaction; its rows, if it returns any."""
    async with srv.engine.begin() as conn:
        result = await conn.execute(text(statement), values)
        return list(result.all()) if result.returns_rows else []


def tray_shape(tray: list[dict[str, Any]]) -> list[tuple[str, bool, list[str]]]:
    return [
        (reel["author"]["username"], reel["hasUnseen"], [s["id"] for s in reel["stories"]])
        for reel in tray
    ]


# --- The pipeline (both storage backends)


def test_the_story_frame_is_a_centred_cover_crop_of_any_photo(tmp_path):
    cases = [
        # A 12 MP phone photo turned by EXIF (the JPEG draft path), a small one (enlarged).
        (jpeg_bytes(4000, 3000, orientation=6), (3000, 4000)),
        (jpeg_bytes(50, 40), (50, 40)),
    ]
    for data, original in cases:
        path = tmp_path / "photo.jpg"
        path.write_bytes(data)
        result = render_photo(path, frame=STORY_FRAME)
        assert (result.width, result.height) == original
        sizes = {(r.size, r.format): (r.width, r.height) for r in result.renditions}
        assert sizes[("FULL", "JPEG")] == sizes[("FULL", "WEBP")] == (1080, 1920)
        assert sizes[("THUMB", "JPEG")] == (min(150, *original),) * 2
        full = next(r for r in result.renditions if r.size == "FULL" and r.format == "JPEG")
        assert image(full.data).size == (1080, 1920)


async def test_a_photo_story_becomes_ready_with_a_full_screen_rendition(
    media_server, gql, factory, tmp_path
):
    author = await factory.user("author")
    # When the author posts a landscape photo as a story
    story_id = await post_story(gql, author.token, "image/jpeg", jpeg_bytes(800, 600))
    story = await wait_for_story(gql, author.token, story_id)
    # Then it is READY, and FULL is the 1080x1920 full-screen frame in both formats
    assert story["status"] == "READY", story["failureReason"]
    media = story["media"]
    assert (media["kind"], media["width"], media["height"]) == ("PHOTO", 800, 600)
    assert media["placeholder"] and media["videoUrl"] is None
    # ...each rendition cached for no longer than the story lives (not a year, as posts')
    full = image(await read_story_media(media["full"]))
    assert (full.format, full.size) == ("JPEG", (1080, 1920))
    full_webp = image(await read_story_media(media["fullWebp"]))
    assert (full_webp.format, full_webp.size) == ("WEBP", (1080, 1920))
    thumb = image(await read_story_media(media["thumb"]))
    assert thumb.size == (150, 150)
    feed = image(await read_story_media(media["feed"]))
    assert feed.size == (640, 480)
    # ...live for exactly 24 hours from READY
    async with media_server.engine.connect() as conn:
        lifetime = await conn.scalar(text("SELECT expires_at - ready_at FROM stories"))
    assert lifetime == timedelta(hours=24)
    # A repeated completeStoryUpload changes nothing.
    repeat = (await gql(COMPLETE, token=author.token, id=story_id))["completeStoryUpload"]
    assert repeat == {"story": {"id": story_id, "status": "READY"}, "errors": []}


async def test_a_video_story_gets_a_full_screen_poster_and_an_mp4(
    media_server, gql, factory, tmp_path
):
    author = await factory.user("author")
    clip = video_bytes(tmp_path, size=(160, 120), seconds=0.6)
    story_id = await post_story(gql, author.token, "video/mp4", clip)
    story = await wait_for_story(gql, author.token, story_id)
    assert story["status"] == "READY", story["failureReason"]
    media = story["media"]
    assert (media["kind"], media["width"], media["height"]) == ("VIDEO", 160, 120)
    poster = await read_story_media(media["full"])
    assert image(poster).size == (1080, 1920)
    assert (await read_story_media(media["videoUrl"]))[4:8] == b"ftyp"


async def test_a_wrong_type_or_an_oversized_upload_fails_like_a_post(media_server, gql, factory):
    author = await factory.user("author")
    # Text sent as a JPEG: the worker sniffs the bytes and fails the story with a reason.
    text_id = await post_story(gql, author.token, "image/jpeg", b"not a photo at all\n" * 40)
    failed = await wait_for_story(gql, author.token, text_id)
    assert failed["status"] == "FAILED"
    assert "is not a JPEG, PNG, WebP or HEIC" in failed["failureReason"]
    assert failed["media"]["full"] is None
    # More bytes than declared.
    declared = jpeg_bytes(300, 200)
    created = await create_story(gql, author.token, "image/jpeg", len(declared))
    story_id = created["story"]["id"]
    response = await upload(created["uploads"][0], declared + bytes(5000))
    completed = (await gql(COMPLETE, token=author.token, id=story_id))["completeStoryUpload"]
    if media_server.settings.storage_backend == "local":
        # The local store enforces the signed maximum itself.
        assert response.status_code == 413
        assert completed["errors"] == [
            {
                "field": "storyId",
                "message": "The media has not been uploaded yet.",
                "code": "INVALID_INPUT",
            }
        ]
    else:
        # moto does not enforce POST policies: the worker's own check catches it.
        assert completed["errors"] == []
        story = await wait_for_story(gql, author.token, story_id)
        assert story["status"] == "FAILED" and "declared" in story["failureReason"]


async def test_create_story_checks_the_media_as_posts_do(server, gql, factory):
    author = await factory.user("author")
    cases = [
        ("image/gif", 10, "media.contentType", "UNSUPPORTED_MEDIA_TYPE"),
        ("image/jpeg", 8 * 1024 * 1024 + 1, "media.byteSize", "TOO_LARGE"),
        ("video/mp4", 4 * 1024**3 + 1, "media.byteSize", "TOO_LARGE"),
        ("image/jpeg", 0, "media.byteSize", "INVALID_INPUT"),
    ]
    for content_type, size, field, code in cases:
        payload = await create_story(gql, author.token, content_type, size)
        assert payload["story"] is None and payload["uploads"] == []
        assert [(e["field"], e["code"]) for e in payload["errors"]] == [(field, code)]
    anonymous = await gql.raw(CREATE, media={"contentType": "image/jpeg", "byteSize": "10"})
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    async with server.engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM stories")) == 0


async def test_only_the_author_completes_or_sees_a_pending_story(server, gql, factory):
    author, other = await factory.user("author"), await factory.user("other")
    await factory.follow(other, author)
    data = jpeg_bytes(60, 60)
    created = await create_story(gql, author.token, "image/jpeg", len(data))
    story_id = created["story"]["id"]
    assert created["story"]["status"] == "PENDING"
    not_found = {"story": None, "errors": [{"field": "storyId", "message": "No such story.", "code": "NOT_FOUND"}]}  # fmt: skip
    # Someone else (a follower, even) cannot complete it, see it or mark it seen.
    assert (await gql(COMPLETE, token=other.token, id=story_id))["completeStoryUpload"] == not_found
    assert (await gql(STORY, token=other.token, id=story_id))["node"] is None
    assert (await gql(STORY, id=story_id))["node"] is None
    seen = (await gql(SEEN, token=other.token, id=story_id))["markStorySeen"]
    assert seen["errors"] == [{"field": "storyId", "code": "NOT_FOUND"}]
    assert (await gql(TRAY, token=other.token))["storiesTray"] == []
    media_id = created["story"]["media"]["id"]
    assert (await gql(MEDIA_NODE, token=other.token, id=media_id))["node"] is None
    # The author sees it, and is told the bytes are not there yet.
    mine = (await gql(STORY, token=author.token, id=story_id))["node"]
    assert (mine["status"], mine["media"]["full"]) == ("PENDING", None)
    media_node = (await gql(MEDIA_NODE, token=author.token, id=media_id))["node"]
    assert media_node == {"id": media_id, "kind": "PHOTO"}
    early = (await gql(COMPLETE, token=author.token, id=story_id))["completeStoryUpload"]
    assert early["errors"][0]["code"] == "INVALID_INPUT"
    bad_id = (await gql(COMPLETE, token=author.token, id="nope"))["completeStoryUpload"]
    assert bad_id["errors"][0]["code"] == "INVALID_INPUT"
    post_id = to_global_id("Post", 1)
    wrong_type = (await gql(COMPLETE, token=author.token, id=post_id))["completeStoryUpload"]
    assert wrong_type["errors"][0]["code"] == "INVALID_INPUT"


# --- Expiry and cleanup


async def test_expiry_hides_a_story_at_once_and_cleanup_deletes_its_objects(
    media_server, gql, factory
):
    author, follower = await factory.user("author"), await factory.user("follower")
    await factory.follow(follower, author)
    post_id = to_global_id("Post", await factory.ready_post(author))
    story_id = await post_story(gql, author.token, "image/jpeg", jpeg_bytes(120, 90))
    assert (await wait_for_story(gql, author.token, story_id))["status"] == "READY"
    abandoned = (await create_story(gql, author.token, "image/jpeg", 100))["story"]["id"]
    assert (await gql(STORY, token=follower.token, id=story_id))["node"]["id"] == story_id
    assert len((await gql(TRAY, token=follower.token))["storiesTray"]) == 1
    async with media_server.engine.begin() as conn:
        keys = (
            await conn.execute(
                text(
                    "SELECT original_key, rendition_keys FROM media WHERE story_id IS NOT NULL AND rendition_keys <> '{}'"
                )
            )
        ).one()
        # When the story's 24 hours are over, and a story never uploaded is a day old
        await conn.execute(
            text(
                "UPDATE stories SET expires_at = now() - interval '1 second' WHERE status = 'READY'"
            )
        )
        await conn.execute(
            text(
                "UPDATE stories SET created_at = now() - interval '25 hours' WHERE status = 'PENDING'"
            )
        )
    # Then nobody sees it any more, author included, before any cleanup ran
    for viewer in (follower, author):
        assert (await gql(STORY, token=viewer.token, id=story_id))["node"] is None
        assert (await gql(TRAY, token=viewer.token))["storiesTray"] == []
    assert (await gql(STORY, token=author.token, id=abandoned))["node"] is None
    seen = (await gql(SEEN, token=follower.token, id=story_id))["markStorySeen"]
    assert seen["errors"] == [{"field": "storyId", "code": "NOT_FOUND"}]
    assert await media_server.storage.head(keys.original_key) is not None
    # And the cleanup deletes both stories' objects and rows, once
    assert await cleanup_stories(media_server.worker.ctx) == 2
    assert await media_server.storage.head(keys.original_key) is None
    for key in keys.rendition_keys.values():
        assert await media_server.storage.head(key) is None
    async with media_server.engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM stories")) == 0
        assert await conn.scalar(text("SELECT count(*) FROM media WHERE story_id IS NOT NULL")) == 0
    assert await cleanup_stories(media_server.worker.ctx) == 0
    # Posts are untouched (and their media still resolve as nodes).
    post = "query ($id: ID!) { node(id: $id) { id ... on Post { media { id } } } }"
    node = (await gql(post, token=follower.token, id=post_id))["node"]
    assert node["id"] == post_id
    post_media = node["media"][0]["id"]
    media_node = (await gql(MEDIA_NODE, token=follower.token, id=post_media))["node"]
    assert media_node == {"id": post_media, "kind": "PHOTO"}


async def test_a_story_past_its_deadline_never_becomes_ready_and_leaves_no_objects(
    media_server, factory
):
    author = await factory.user("author")
    ctx = {**media_server.worker.ctx, "job_try": 1}
    # Given two stories PROCESSING with their bytes uploaded, both a day past creation:
    # the cleanup may delete a never-READY story's objects at any moment now
    late = await processing_story(media_server, author, jpeg_bytes(120, 90))
    gone = await processing_story(media_server, author, jpeg_bytes(120, 90))
    await sql(media_server, "UPDATE stories SET created_at = now() - interval '24 hours 1 second'")
    # When the first one's job renders it before the cleanup came
    assert await process_story(ctx, late[0]) == "discarded"
    # Then it did not become READY, and the job deleted what it wrote
    assert await sql(media_server, "SELECT status FROM stories WHERE id = :id", id=late[0]) == [
        ("PROCESSING",)
    ]
    assert await story_object_keys(media_server, *late) == []
    # When the cleanup comes first and the second one's job runs after it
    assert await cleanup_stories(media_server.worker.ctx) == 2
    assert await process_story(ctx, gone[0]) == "skipped"
    # Then both stay gone, rows and objects
    assert await sql(media_server, "SELECT id FROM stories") == []
    for story_id, media_id in (late, gone):
        assert await story_object_keys(media_server, story_id, media_id) == []


async def test_a_story_stuck_in_processing_is_retried_then_failed(media_server, factory):
    author = await factory.user("author")
    settings = media_server.settings
    stuck_since = timedelta(seconds=settings.job_timeout_seconds + 120)
    # Given a story PROCESSING for longer than a job may take, never enqueued (Redis was
    # down at completeStoryUpload), one that failed every attempt it is allowed, one
    # moving along normally, and one past its deadline (the cleanup's, not the sweep's)
    stuck, _ = await processing_story(media_server, author, jpeg_bytes(120, 90))
    hopeless, _ = await processing_story(media_server, author, jpeg_bytes(120, 90))
    fresh, _ = await processing_story(media_server, author, jpeg_bytes(120, 90))
    expired, _ = await processing_story(media_server, author, jpeg_bytes(120, 90))
    await sql(
        media_server,
        "UPDATE stories SET status_changed_at = now() - CAST(:since AS interval)"
        " WHERE id <> :fresh",
        since=stuck_since,
        fresh=fresh,
    )
    await sql(
        media_server,
        "UPDATE stories SET processing_attempts = :max WHERE id = :id",
        max=settings.max_processing_attempts,
        id=hopeless,
    )
    await sql(
        media_server,
        "UPDATE stories SET created_at = now() - interval '25 hours' WHERE id = :id",
        id=expired,
    )
    # When the sweeper runs (twice: a second run finds nothing more to do)
    assert await sweep_stories(media_server.worker.ctx) == {"retried": 1, "failed": 1}
    assert await sweep_stories(media_server.worker.ctx) == {"retried": 0, "failed": 0}
    # Then the stuck story's second attempt runs (its own job id) and it becomes READY
    async with asyncio.timeout(60):
        while True:
            [(status,)] = await sql(
                media_server, "SELECT status FROM stories WHERE id = :id", id=stuck
            )
            if status != "PROCESSING":
                break
            await asyncio.sleep(0.1)
    rows = await sql(
        media_server, "SELECT id, status, processing_attempts, failure_reason FROM stories"
    )
    by_id = {row.id: row for row in rows}
    assert (by_id[stuck].status, by_id[stuck].processing_attempts) == ("READY", 2)
    # ...the one out of attempts is FAILED with a reason its author can read
    assert by_id[hopeless].status == "FAILED"
    assert "kept failing" in by_id[hopeless].failure_reason
    # ...and the others are untouched
    assert (by_id[fresh].status, by_id[fresh].processing_attempts) == ("PROCESSING", 1)
    assert (by_id[expired].status, by_id[expired].processing_attempts) == ("PROCESSING", 1)


async def test_mark_seen_racing_the_cleanup_answers_not_found(server, gql, factory):
    author, viewer = await factory.user("author"), await factory.user("viewer")
    story_id = await ready_story(server, author)
    _, pk = from_global_id(story_id)
    # Given the cleanup deleting the story, not yet committed, when markStorySeen comes
    async with server.engine.connect() as cleanup:
        transaction = await cleanup.begin()
        await cleanup.execute(text("DELETE FROM stories WHERE id = :id"), {"id": pk})
        seen = asyncio.create_task(gql(SEEN, token=viewer.token, id=story_id))
        # (the request has read the story and waits for the row the cleanup holds)
        async with asyncio.timeout(30):
            while True:
                waiting = await sql(
                    server,
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()",
                )
                if waiting:
                    break
                await asyncio.sleep(0.02)
        await transaction.commit()
    # Then it answers NOT_FOUND, as for any story that does not exist, and writes nothing
    assert (await seen)["markStorySeen"] == {
        "story": None,
        "errors": [{"field": "storyId", "code": "NOT_FOUND"}],
    }
    assert await sql(server, "SELECT * FROM story_views") == []


# --- The tray


async def test_tray_puts_own_then_unseen_then_recent_and_seen_is_idempotent(server, gql, factory):
    viewer, a, b, c, stranger = await factory.users(5)
    for followee in (a, b, c):
        await factory.follow(viewer, followee)
    a1 = await ready_story(server, a)
    b1 = await ready_story(server, b)
    c1 = await ready_story(server, c)
    a2 = await ready_story(server, a)
    await ready_story(server, stranger)  # not followed: not in the tray
    own = await ready_story(server, viewer)

    tray = (await gql(TRAY, token=viewer.token))["storiesTray"]
    # The viewer's own reel first, then by most recent story; stories oldest first.
    assert tray_shape(tray) == [
        (viewer.username, True, [own]),
        (a.username, True, [a1, a2]),
        (c.username, True, [c1]),
        (b.username, True, [b1]),
    ]
    assert all(s["media"]["url"] for reel in tray for s in reel["stories"])

    # Seeing c's only story sends c after the reels with unseen stories; twice is once.
    for _ in range(2):
        seen = (await gql(SEEN, token=viewer.token, id=c1))["markStorySeen"]
        assert seen == {"story": {"id": c1, "viewerHasSeen": True}, "errors": []}
    # One of a's two stories seen: a still has unseen ones.
    await gql(SEEN, token=viewer.token, id=a1)
    tray = (await gql(TRAY, token=viewer.token))["storiesTray"]
    assert tray_shape(tray) == [
        (viewer.username, True, [own]),
        (a.username, True, [a1, a2]),
        (b.username, True, [b1]),
        (c.username, False, [c1]),
    ]
    assert [s["viewerHasSeen"] for s in tray[1]["stories"]] == [True, False]
    assert (await gql(STORY, token=viewer.token, id=c1))["node"]["viewerHasSeen"] is True
    # Seen is per viewer.
    assert (await gql(STORY, token=a.token, id=c1))["node"]["viewerHasSeen"] is False
    async with server.engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM story_views")) == 2
    anonymous = await gql.raw(TRAY)
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_tray_costs_the_same_few_statements_for_any_number_of_stories(server, gql, factory):
    viewer = await factory.user("viewer")

    async def tray_statements(authors: int) -> int:
        for author in await factory.users(authors):
            await factory.follow(viewer, author)
            first = await ready_story(server, author)
            await ready_story(server, author)
            await gql(SEEN, token=viewer.token, id=first)
        with count_statements(server.engine) as counted:
            tray = (await gql(TRAY, token=viewer.token))["storiesTray"]
        assert sum(len(reel["stories"]) for reel in tray) == len(tray) * 2
        assert all(reel["hasUnseen"] for reel in tray)
        return counted.count

    # The stories with seen flags in one statement, the authors in at most one more.
    assert await tray_statements(2) <= 2
    assert await tray_statements(8) <= 2


# --- Private accounts and blocks


async def test_private_and_blocked_authors_stories_are_invisible(server, gql, factory):
    owner = await factory.user("owner", is_private=True)
    follower, requester = await factory.user("follower"), await factory.user("requester")
    public, blocker, blocked = (
        await factory.user("public"),
        await factory.user("blocker"),
        await factory.user("blocked"),
    )
    await factory.follow(follower, owner)
    assert (await gql(FOLLOW, token=requester.token, id=owner.id))["follow"]["errors"] == []
    private_story = await ready_story(server, owner)
    # A private account's story: its approved followers only.
    assert tray_shape((await gql(TRAY, token=follower.token))["storiesTray"]) == [
        ("owner", True, [private_story])
    ]
    story = (await gql(STORY, token=follower.token, id=private_story))["node"]
    media_id = story["media"]["id"]
    assert (await gql(MEDIA_NODE, token=follower.token, id=media_id))["node"]["id"] == media_id
    assert (await gql(TRAY, token=requester.token))["storiesTray"] == []
    for viewer in (requester, public):
        assert (await gql(STORY, token=viewer.token, id=private_story))["node"] is None
        assert (await gql(MEDIA_NODE, token=viewer.token, id=media_id))["node"] is None
        seen = (await gql(SEEN, token=viewer.token, id=private_story))["markStorySeen"]
        assert seen["errors"] == [{"field": "storyId", "code": "NOT_FOUND"}]
    assert (await gql(STORY, id=private_story))["node"] is None

    # A public account's story is for anyone, until a block stands between, either way.
    public_story = await ready_story(server, public)
    assert (await gql(STORY, token=blocker.token, id=public_story))["node"] is not None
    assert (await gql(STORY, token=blocked.token, id=public_story))["node"] is not None
    for follower_of_public in (blocker, blocked):
        await factory.follow(follower_of_public, public)
    assert (await gql(BLOCK, token=blocker.token, id=public.id))["block"]["errors"] == []
    assert (await gql(BLOCK, token=public.token, id=blocked.id))["block"]["errors"] == []
    for viewer in (blocker, blocked):
        assert (await gql(STORY, token=viewer.token, id=public_story))["node"] is None
        assert (await gql(TRAY, token=viewer.token))["storiesTray"] == []
        seen = (await gql(SEEN, token=viewer.token, id=public_story))["markStorySeen"]
        assert seen["errors"] == [{"field": "storyId", "code": "NOT_FOUND"}]
    # ...and the other way round: the blocked account does not see the blocker's story.
    blocker_story = await ready_story(server, blocker)
    assert (await gql(STORY, token=public.token, id=blocker_story))["node"] is None
