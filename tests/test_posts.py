"""Posts end to end on both storage backends: direct uploads, server-side checks,
renditions, visibility, deletion. Through the GraphQL API and real HTTP uploads."""

from __future__ import annotations

import io

import httpx
from arq.jobs import Job
from PIL import Image
from sqlalchemy import text

from infra.ids import from_global_id, to_global_id
from tests.media_samples import (
    bomb_png_bytes,
    heic_bytes,
    jpeg_bytes,
    png_with_alpha_bytes,
    video_bytes,
)
from tests.posting import (
    COMPLETE,
    CREATE_POST,
    POST,
    create_post,
    publish,
    read_public,
    upload,
    wait_for_post,
)
from workers.media import abandon_post, sweep_posts

USER_POSTS = """
query ($name: String!, $first: Int, $after: String) {
  user(username: $name) {
    postCount
    posts(first: $first, after: $after) {
      edges { cursor node { id status } }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""
DELETE = "mutation ($id: ID!) { deletePost(id: $id) { deletedId errors { field code } } }"


def image(data: bytes) -> Image.Image:
    opened = Image.open(io.BytesIO(data))
    opened.load()
    return opened


async def test_photo_post_becomes_ready_with_renditions(media_server, gql, factory, tmp_path):
    author = await factory.user("author")
    photo = jpeg_bytes(4000, 3000, orientation=6, gps=True)
    # When the author posts a 12 MP phone photo, turned by EXIF and carrying GPS tags
    post_id = await publish(gql, author.token, [("image/jpeg", photo)], caption="Hi #Sun #sea #sun")
    post = await wait_for_post(gql, author.token, post_id)
    # Then it is READY, upright (orientation applied) and its renditions are served
    assert post["status"] == "READY", post["failureReason"]
    assert post["hashtags"] == ["sun", "sea"]
    assert post["author"] == {"username": "author", "postCount": 1}
    [media] = post["media"]
    assert (media["kind"], media["width"], media["height"]) == ("PHOTO", 3000, 4000)
    assert media["placeholder"] and media["videoUrl"] is None
    expected = {"thumb": (150, 150), "feed": (640, 853), "full": (1080, 1440)}
    for name, size in expected.items():
        for suffix, fmt in (("", "JPEG"), ("Webp", "WEBP")):
            rendition = image(await read_public(media[name + suffix]))
            assert rendition.format == fmt
            assert rendition.size == size
            # No EXIF at all, so no GPS position survives in any rendition.
            assert 34853 not in rendition.getexif() and len(rendition.getexif()) == 0


async def test_png_sent_as_jpeg_is_handled_as_png_and_flattened_on_white(
    media_server, gql, factory, tmp_path
):
    author = await factory.user("author")
    post_id = await publish(gql, author.token, [("image/jpeg", png_with_alpha_bytes(800, 600))])
    post = await wait_for_post(gql, author.token, post_id)
    assert post["status"] == "READY", post["failureReason"]
    feed = image(await read_public(post["media"][0]["feed"]))
    assert feed.size == (640, 480)
    pixel = feed.convert("RGB").getpixel((10, 240))  # the transparent half
    assert isinstance(pixel, tuple) and min(pixel) > 230


async def test_bad_files_fail_the_post_with_a_reason(media_server, gql, factory, tmp_path):
    author, other = await factory.user("author"), await factory.user("other")
    truncated = jpeg_bytes(1200, 900)[:4000]
    cases = [
        ("image/jpeg", truncated, "truncated or corrupt"),
        ("image/png", bomb_png_bytes(tmp_path), "too large"),
        (
            "image/jpeg",
            b"this is a text file, not a photo\n" * 40,
            "is not a JPEG, PNG, WebP or HEIC",
        ),
        ("video/mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(3000), "could not be read"),
    ]
    for content_type, data, reason in cases:
        post_id = await publish(gql, author.token, [(content_type, data)])
        post = await wait_for_post(gql, author.token, post_id)
        assert post["status"] == "FAILED", content_type
        assert reason in post["failureReason"], post["failureReason"]
        assert all(m["feed"] is None for m in post["media"])
        # Nobody else sees a post that never became READY.
        assert (await gql(POST, token=other.token, id=post_id))["post"] is None
    assert (await gql(USER_POSTS, name="author"))["user"]["postCount"] == 0


async def test_an_iphone_heic_photo_becomes_jpeg_and_webp_renditions(
    media_server, gql, factory, tmp_path
):
    author = await factory.user("author")
    post_id = await publish(gql, author.token, [("image/heic", heic_bytes(1200, 900))])
    post = await wait_for_post(gql, author.token, post_id)
    assert post["status"] == "READY", post["failureReason"]
    assert (post["media"][0]["width"], post["media"][0]["height"]) == (1200, 900)
    assert image(await read_public(post["media"][0]["full"])).format == "JPEG"


async def test_a_short_video_gets_a_poster_and_an_mp4(media_server, gql, factory, tmp_path):
    author = await factory.user("author")
    clip = video_bytes(tmp_path, size=(320, 240), seconds=1.0)
    post_id = await publish(
        gql, author.token, [("video/mp4", clip), ("image/jpeg", jpeg_bytes(640, 480))]
    )
    post = await wait_for_post(gql, author.token, post_id)
    assert post["status"] == "READY", post["failureReason"]
    video, photo = post["media"]
    assert video["kind"] == "VIDEO" and photo["kind"] == "PHOTO"
    assert 0.9 <= video["durationSeconds"] <= 1.2
    assert (video["width"], video["height"]) == (320, 240)
    assert video["placeholder"] and video["thumb"]
    mp4 = await read_public(video["videoUrl"])
    assert mp4[4:8] == b"ftyp"
    assert image(await read_public(video["feed"])).size == (320, 240)


async def test_size_other_than_declared_fails_and_the_object_is_deleted(media_server, gql, factory):
    author = await factory.user("author")
    declared = jpeg_bytes(800, 600)
    created = await create_post(gql, author.token, [("image/jpeg", declared)])
    target = created["uploads"][0]
    async with media_server.engine.connect() as conn:
        key = await conn.scalar(text("SELECT original_key FROM media"))
    short = declared[:-100]
    if media_server.settings.storage_backend == "local":
        # The local route refuses a Content-Length other than the declared size (issue
        # 10), so the short body goes in directly, as into a store that checks nothing...
        assert (await upload(target, short)).status_code == 400
        await media_server.storage.put(key, short, "image/jpeg", cache_immutable=False)
    else:
        # ...as S3 takes it (the POST policy bounds the size from above only)...
        assert (await upload(target, short)).status_code in (200, 201, 204)
    post_id = created["post"]["id"]
    assert (await gql(COMPLETE, token=author.token, id=post_id))["completeUpload"]["errors"] == []
    # ...but the worker checks the bytes itself.
    post = await wait_for_post(gql, author.token, post_id)
    assert post["status"] == "FAILED"
    assert "declared" in post["failureReason"]
    assert await media_server.storage.head(key) is None


async def test_oversized_upload(media_server, gql, factory):
    author = await factory.user("author")
    declared = jpeg_bytes(800, 600)
    created = await create_post(gql, author.token, [("image/jpeg", declared)])
    post_id = created["post"]["id"]
    oversized = declared + bytes(5000)
    response = await upload(created["uploads"][0], oversized)
    if media_server.settings.storage_backend == "local":
        # The local store enforces the signed maximum itself.
        assert response.status_code == 413
        payload = (await gql(COMPLETE, token=author.token, id=post_id))["completeUpload"]
        assert payload["errors"][0]["code"] == "INVALID_INPUT"
        assert "not been uploaded" in payload["errors"][0]["message"]
    else:
        # moto does not enforce POST policies, so the worker's own check must catch it.
        assert (await gql(COMPLETE, token=author.token, id=post_id))["completeUpload"][
            "errors"
        ] == []
        post = await wait_for_post(gql, author.token, post_id)
        assert post["status"] == "FAILED" and "declared" in post["failureReason"]


async def test_local_targets_refuse_expired_and_tampered_signatures(server, gql, factory):
    author = await factory.user("author")
    data = jpeg_bytes(200, 200)
    created = await create_post(gql, author.token, [("image/jpeg", data)])
    target = created["uploads"][0]
    tampered = dict(target, url=target["url"].replace("max=", "max=9"))
    assert (await upload(tampered, data)).status_code == 403
    other_type = dict(target, headers=[{"name": "Content-Type", "value": "image/png"}])
    assert (await upload(other_type, data)).status_code == 403
    url = httpx.URL(target["url"])
    expired = dict(target, url=str(url.copy_set_param("exp", "1000")))
    assert (await upload(expired, data)).status_code == 403
    assert (await upload(target, data)).status_code in (200, 201)


async def test_create_post_validates_input_and_issues_no_targets(server, gql, factory):
    author = await factory.user("author")
    cases = [
        ([], None, "media", "INVALID_INPUT"),
        ([("image/jpeg", 10)] * 11, None, "media", "INVALID_INPUT"),
        ([("image/gif", 10)], None, "media.0.contentType", "UNSUPPORTED_MEDIA_TYPE"),
        ([("image/jpeg", 8 * 1024 * 1024 + 1)], None, "media.0.byteSize", "TOO_LARGE"),
        ([("video/mp4", 4 * 1024**3 + 1)], None, "media.0.byteSize", "TOO_LARGE"),
        ([("image/jpeg", 0)], None, "media.0.byteSize", "INVALID_INPUT"),
        ([("image/jpeg", 10)], "x" * 2201, "caption", "INVALID_INPUT"),
    ]
    for media, caption, field, code in cases:
        variables = {
            "caption": caption,
            "media": [{"contentType": ct, "byteSize": str(size)} for ct, size in media],
        }
        from tests.posting import CREATE_POST

        payload = (await gql(CREATE_POST, token=author.token, input=variables))["createPost"]
        assert payload["post"] is None and payload["uploads"] == []
        assert {"field": field, "code": code} in [
            {"field": e["field"], "code": e["code"]} for e in payload["errors"]
        ], payload["errors"]
    # A negative size is refused by the scalar itself, before any resolver runs.
    bad = await gql.raw(
        CREATE_POST,
        token=author.token,
        input={"media": [{"contentType": "image/jpeg", "byteSize": "-1"}]},
    )
    assert bad["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
    async with server.engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM posts")) == 0


async def test_idempotency_key_returns_the_same_post_with_fresh_targets(media_server, gql, factory):
    author = await factory.user("author")
    data = jpeg_bytes(300, 300)
    first = await create_post(gql, author.token, [("image/jpeg", data)], idempotency_key="k-1")
    again = await create_post(gql, author.token, [("image/jpeg", data)], idempotency_key="k-1")
    assert first["post"]["id"] == again["post"]["id"]
    assert len(again["uploads"]) == 1
    assert again["uploads"][0]["mediaId"] == first["uploads"][0]["mediaId"]
    # The fresh target works.
    assert (await upload(again["uploads"][0], data)).status_code in (200, 201, 204)
    other = await create_post(gql, author.token, [("image/jpeg", data)], idempotency_key="k-2")
    assert other["post"]["id"] != first["post"]["id"]


async def test_complete_upload_is_author_only_checks_the_store_and_is_idempotent(
    media_server, gql, factory
):
    author, other = await factory.user("author"), await factory.user("other")
    data = jpeg_bytes(300, 300)
    created = await create_post(gql, author.token, [("image/jpeg", data)])
    post_id = created["post"]["id"]
    # Not uploaded yet: the server looks in the store and says so; the post stays PENDING.
    early = (await gql(COMPLETE, token=author.token, id=post_id))["completeUpload"]
    assert early["errors"][0]["code"] == "INVALID_INPUT"
    await upload(created["uploads"][0], data)
    forbidden = (await gql(COMPLETE, token=other.token, id=post_id))["completeUpload"]
    assert forbidden["errors"] == [
        {"field": "postId", "message": "Only the author can do this.", "code": "FORBIDDEN"}
    ]
    bad_id = (await gql(COMPLETE, token=author.token, id="nope"))["completeUpload"]
    assert bad_id["errors"][0]["code"] == "INVALID_INPUT"
    done = (await gql(COMPLETE, token=author.token, id=post_id))["completeUpload"]
    assert done["errors"] == []
    await wait_for_post(gql, author.token, post_id)
    repeat = (await gql(COMPLETE, token=author.token, id=post_id))["completeUpload"]
    assert repeat == {"post": {"id": post_id, "status": "READY"}, "errors": []}


async def test_visibility_profile_grid_and_post_count(media_server, gql, factory):
    author, other = await factory.user("author"), await factory.user("other")
    ready = []
    for _ in range(3):
        post_id = await publish(gql, author.token, [("image/jpeg", jpeg_bytes(200, 200))])
        await wait_for_post(gql, author.token, post_id)
        ready.append(post_id)
    pending = (await create_post(gql, author.token, [("image/jpeg", jpeg_bytes(20, 20))]))["post"][
        "id"
    ]

    mine = (await gql(USER_POSTS, token=author.token, name="author", first=10))["user"]
    assert [e["node"]["id"] for e in mine["posts"]["edges"]] == [pending, *reversed(ready)]
    theirs = (await gql(USER_POSTS, token=other.token, name="author", first=2))["user"]
    assert theirs["postCount"] == 3
    assert [e["node"]["id"] for e in theirs["posts"]["edges"]] == [ready[2], ready[1]]
    assert theirs["posts"]["pageInfo"]["hasNextPage"] is True
    rest = (
        await gql(
            USER_POSTS,
            token=other.token,
            name="author",
            first=2,
            after=theirs["posts"]["pageInfo"]["endCursor"],
        )
    )["user"]["posts"]
    assert [e["node"]["id"] for e in rest["edges"]] == [ready[0]]
    assert rest["pageInfo"]["hasNextPage"] is False
    assert (await gql(POST, token=other.token, id=pending))["post"] is None
    assert (await gql(POST, token=author.token, id=pending))["post"]["status"] == "PENDING"
    node = await gql("query ($id: ID!) { node(id: $id) { ... on Post { status } } }", id=ready[0])
    assert node["node"] == {"status": "READY"}


async def test_delete_post_is_author_only_and_removes_it_everywhere(media_server, gql, factory):
    author, other = await factory.user("author"), await factory.user("other")
    post_id = await publish(gql, author.token, [("image/jpeg", jpeg_bytes(300, 200))])
    await wait_for_post(gql, author.token, post_id)
    refused = (await gql(DELETE, token=other.token, id=post_id))["deletePost"]
    assert refused == {"deletedId": None, "errors": [{"field": "id", "code": "FORBIDDEN"}]}
    deleted = (await gql(DELETE, token=author.token, id=post_id))["deletePost"]
    assert deleted == {"deletedId": post_id, "errors": []}
    # Gone from every view at once...
    assert (await gql(POST, token=author.token, id=post_id))["post"] is None
    grid = (await gql(USER_POSTS, token=author.token, name="author"))["user"]
    assert grid["postCount"] == 0 and grid["posts"]["edges"] == []
    assert (await gql(DELETE, token=author.token, id=post_id))["deletePost"]["errors"][0][
        "code"
    ] == "NOT_FOUND"
    # ...and its objects are deleted by a job shortly after.
    async with media_server.engine.connect() as conn:
        keys = (await conn.execute(text("SELECT original_key, rendition_keys FROM media"))).one()
    pk = from_global_id(post_id)[1]
    await Job(f"post_deleted:{pk}", media_server.resources.jobs).result(timeout=30)
    assert await media_server.storage.head(keys[0]) is None
    for key in keys[1].values():
        assert await media_server.storage.head(key) is None


async def test_rendition_job_is_idempotent(media_server, gql, factory):
    author = await factory.user("author")
    post_id = await publish(gql, author.token, [("image/jpeg", jpeg_bytes(900, 600))])
    await wait_for_post(gql, author.token, post_id)
    query = "SELECT id, width, height, placeholder, rendition_keys, detected_type FROM media"
    async with media_server.engine.connect() as conn:
        before = (await conn.execute(text(query))).all()
        pk = await conn.scalar(text("SELECT id FROM posts"))
    # A duplicate delivery of the job (as at-least-once queues do) that started before
    # the first finished: same keys, same rows, no second post count.
    async with media_server.engine.begin() as conn:
        await conn.execute(text("UPDATE posts SET status = 'PROCESSING'"))
        await conn.execute(text("UPDATE users SET post_count = 0"))
    job = await media_server.resources.jobs.enqueue_job("process_post", pk, _job_id="dup")
    assert await job.result(timeout=30) == "ready"
    async with media_server.engine.connect() as conn:
        after = (await conn.execute(text(query))).all()
    assert after == before
    again = await media_server.resources.jobs.enqueue_job("process_post", pk, _job_id="dup-2")
    assert await again.result(timeout=30) == "skipped"


async def test_sweeper_cleans_abandoned_uploads_and_retries_stuck_posts(media_server, gql, factory):
    author = await factory.user("author")
    data = jpeg_bytes(300, 300)
    abandoned = await create_post(gql, author.token, [("image/jpeg", data)])
    await upload(abandoned["uploads"][0], data)
    stuck = await create_post(gql, author.token, [("image/jpeg", data)])
    await upload(stuck["uploads"][0], data)
    async with media_server.engine.begin() as conn:
        key = await conn.scalar(text("SELECT original_key FROM media ORDER BY id LIMIT 1"))
        # One upload was never completed a day ago; one post was left PROCESSING by a
        # worker that died (its job is gone from the queue).
        await conn.execute(
            text(
                "UPDATE posts SET status_changed_at = now() - interval '2 days' WHERE status = 'PENDING' AND id = (SELECT min(id) FROM posts)"
            )
        )
        await conn.execute(
            text(
                "UPDATE posts SET status = 'PROCESSING', processing_attempts = 1, status_changed_at = now() - interval '1 hour' WHERE id = (SELECT max(id) FROM posts)"
            )
        )
    counts = await sweep_posts(media_server.worker.ctx)
    assert counts == {"retried": 1, "failed": 0, "abandoned": 1}
    assert await media_server.storage.head(key) is None
    assert (await gql(POST, token=author.token, id=abandoned["post"]["id"]))["post"] is None
    post = await wait_for_post(gql, author.token, stuck["post"]["id"])
    assert post["status"] == "READY"


async def test_the_sweeper_never_deletes_a_post_completed_as_it_runs(media_server, gql, factory):
    """The sweeper saw the post PENDING and past its time; its author completes the
    upload before the sweeper abandons it: nothing is abandoned, nothing deleted."""
    author = await factory.user("author")
    data = jpeg_bytes(300, 300)
    created = await create_post(gql, author.token, [("image/jpeg", data)])
    await upload(created["uploads"][0], data)
    completed = await gql(COMPLETE, token=author.token, id=created["post"]["id"])
    assert completed["completeUpload"]["errors"] == []
    pk = from_global_id(created["post"]["id"])[1]
    async with media_server.engine.connect() as conn:
        key = await conn.scalar(
            text("SELECT original_key FROM media WHERE post_id = :p"), {"p": pk}
        )
    assert await abandon_post(media_server.worker.ctx, pk) is False
    assert await media_server.storage.head(key) is not None
    post = await wait_for_post(gql, author.token, created["post"]["id"])
    assert post["status"] == "READY"


async def test_posts_that_keep_failing_are_failed_not_retried_forever(media_server, gql, factory):
    author = await factory.user("author")
    created = await create_post(gql, author.token, [("image/jpeg", jpeg_bytes(50, 50))])
    limit = media_server.settings.max_processing_attempts
    async with media_server.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE posts SET status = 'PROCESSING', processing_attempts = :n, status_changed_at = now() - interval '1 hour'"
            ),
            {"n": limit},
        )
    assert await sweep_posts(media_server.worker.ctx) == {"retried": 0, "failed": 1, "abandoned": 0}
    post = (await gql(POST, token=author.token, id=created["post"]["id"]))["post"]
    assert post["status"] == "FAILED" and "kept failing" in post["failureReason"]


async def test_a_private_accounts_posts_are_for_its_followers(server, gql, factory):
    owner = await factory.user("owner", is_private=True)
    follower, stranger = await factory.user("follower"), await factory.user("stranger")
    await factory.follow(follower, owner)
    post_id = to_global_id("Post", await factory.ready_post(owner))
    for viewer, visible in ((owner, True), (follower, True), (stranger, False)):
        post = (await gql(POST, token=viewer.token, id=post_id))["post"]
        assert (post is not None) is visible, viewer.username
        grid = (await gql(USER_POSTS, token=viewer.token, name="owner"))["user"]["posts"]
        assert len(grid["edges"]) == (1 if visible else 0), viewer.username
    assert (await gql(POST, id=post_id))["post"] is None  # nor anonymous readers


async def test_a_large_video_goes_up_in_parts_and_the_server_assembles_them(
    media_server, gql, factory, tmp_path
):
    author = await factory.user("author")
    clip = video_bytes(tmp_path, size=(160, 120), seconds=1.0)
    data = clip + bytes(11 * 1024 * 1024 - len(clip))  # past the multipart threshold
    created = await create_post(gql, author.token, [("video/mp4", data)])
    post_id = created["post"]["id"]
    target = created["uploads"][0]
    if media_server.settings.storage_backend == "s3":
        assert int(target["partSize"]) == 5 * 1024 * 1024 and len(target["partUrls"]) == 3
        # No parts yet: the server, which lists the parts itself, refuses to complete.
        early = (await gql(COMPLETE, token=author.token, id=post_id))["completeUpload"]
        assert early["errors"][0]["code"] == "INVALID_INPUT"
    else:
        assert target["partUrls"] is None  # the local store takes one streamed PUT
    assert (await upload(target, data)).status_code in (200, 201, 204)
    done = (await gql(COMPLETE, token=author.token, id=post_id))["completeUpload"]
    assert done["errors"] == [] and done["post"]["status"] == "PROCESSING"
    post = await wait_for_post(gql, author.token, post_id)
    assert post["status"] == "READY", post["failureReason"]
    assert post["media"][0]["videoUrl"]


async def test_an_idempotency_key_is_free_again_after_its_post_is_deleted(server, gql, factory):
    author = await factory.user("author")
    data = jpeg_bytes(50, 50)
    first = await create_post(gql, author.token, [("image/jpeg", data)], idempotency_key="k")
    assert (await gql(DELETE, token=author.token, id=first["post"]["id"]))["deletePost"][
        "errors"
    ] == []
    again = await create_post(gql, author.token, [("image/jpeg", data)], idempotency_key="k")
    assert again["errors"] == [] and again["post"]["id"] != first["post"]["id"]


async def test_a_byte_size_must_be_canonical_digits(server, gql, factory):
    """`byteSize` (UnsignedInt64) is an integer or a string of plain ASCII digits: a float
    is not truncated, and what Python's int() would also read (`1_000`, Arabic-Indic
    digits, signs, spaces, leading zeros) is refused as INVALID_INPUT."""
    author = await factory.user("author")
    for size in (1.9, "1.9", "1_000", "١٢٣", "+12", " 12", "012", "-1", True, 2**64):
        media = {"contentType": "image/jpeg", "byteSize": size}
        answer = await gql.raw(CREATE_POST, token=author.token, input={"media": [media]})
        assert answer.get("data") is None, size
        assert [e["extensions"]["code"] for e in answer["errors"]] == ["INVALID_INPUT"], size
    for size in (1000, "1000", "0"):
        media = {"contentType": "image/jpeg", "byteSize": size}
        answer = await gql.raw(CREATE_POST, token=author.token, input={"media": [media]})
        assert "errors" not in answer, (size, answer)
    async with server.engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM posts")) == 2  # 1000 twice; 0 refused
