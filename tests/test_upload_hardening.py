"""Upload hardening (issue 10): hostile bodies on the local upload and media routes, and
upload targets good for one upload of a PENDING post only (docs/uploads-hardening.md).

The hostile bodies go over raw sockets (a declared length with a shorter body, a body
that never comes or dribbles, chunked encoding), against the store's routes alone with
a one-second body timeout. The one-upload rule runs against the real app and worker on
both backends (`media_server`); moto enforces no expiry or signature (tests/s3_server.py),
so on S3 the tests show what our side does: the late clean-up of a deleted post's
objects, and multipart part URLs that die with their upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
import uvicorn
from arq import Retry
from arq.jobs import Job
from sqlalchemy import text
from starlette.applications import Starlette

from infra.ids import from_global_id
from infra.storage import LocalStorage, MiB, S3Storage, local_storage_routes
from settings import Settings
from tests.conftest import Server, uvicorn_serving
from tests.media_samples import jpeg_bytes
from tests.posting import COMPLETE, create_post, upload, wait_for_post
from tests.s3_server import s3_settings
from workers.media import (
    LATE_UPLOAD_MARGIN_SECONDS,
    delete_late_uploads,
    process_post,
    sweep_posts,
)
from workers.outbox import post_deleted
from workers.stories import cleanup_stories, delete_late_story_uploads, late_upload_delay

SECRET = "upload-hardening-secret-key-0123456789abcdef"
CREATE_STORY = """
mutation ($media: MediaInput!) {
  createStory(media: $media) {
    story { id }
    uploads { mediaId method url headers { name value } fields { name value } partSize partUrls }
    errors { field code }
  }
}
"""
DELETE = """
mutation ($id: ID!) { deletePost(id: $id) { deletedId errors { field code } } }
"""


def two_versions(width: int, height: int) -> tuple[bytes, bytes]:
    """Two valid JPEGs of the same size that differ (in the JFIF header's density)."""
    first = jpeg_bytes(width, height)
    assert first[6:11] == b"JFIF\0"
    second = bytearray(first)
    second[15] ^= 1
    return first, bytes(second)


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- raw HTTP


@dataclass
class RawAnswer:
    """What a raw HTTP/1.1 exchange got back: the status (None when the server closed
    without answering) and whether the server closed the connection afterwards."""

    status: int | None
    closed: bool


async def read_answer(reader: asyncio.StreamReader) -> RawAnswer:
    """The status of the server's answer, then everything until it closes."""
    try:
        status_line = await reader.readline()
    except ConnectionError:
        return RawAnswer(status=None, closed=True)
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            pass  # until EOF: the server closed the connection
    return RawAnswer(status=int(status_line.split()[1]) if status_line else None, closed=True)


async def raw_put(
    url: str,
    headers: dict[str, str],
    parts: list[bytes] = [],  # noqa: B006 - never mutated
    *,
    pause: float = 0.0,
    close_after_sending: bool = False,
) -> RawAnswer:
    """PUT `url` over a raw socket: the headers as given (no Content-Length added), then
    each of `parts` (`pause` seconds apart), stopping once the server answers. With
    `close_after_sending`, hang up after the last part (a client that went away
    mid-body) and answer nothing; otherwise wait (30 s at most) for the answer and for
    the server to close the connection."""
    split = urlsplit(url)
    reader, writer = await asyncio.open_connection(split.hostname, split.port)
    answer = asyncio.create_task(read_answer(reader))
    try:
        head = [f"PUT {split.path}?{split.query} HTTP/1.1", f"Host: {split.netloc}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        await writer.drain()
        for part in parts:
            if pause:
                await asyncio.wait([answer], timeout=pause)
            if answer.done():
                break  # answered (and cut off) before the body was all sent
            try:
                writer.write(part)
                await writer.drain()
            except ConnectionError:
                break
        if close_after_sending:
            return RawAnswer(status=None, closed=True)
        async with asyncio.timeout(30):
            return await answer
    finally:
        answer.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def wait_until_empty(directory: Path) -> list[Path]:
    """The files left under `directory` once the server has finished with a request it
    learns about asynchronously (a client that hung up), polling for up to 10 s."""
    for _ in range(500):  # the server's clean-up has no event a client can wait on
        if not files_under(directory):
            break
        await asyncio.sleep(0.02)
    return files_under(directory)


# --------------------------------------------------------------------------- the bare store


@dataclass
class Store:
    storage: LocalStorage
    base_url: str
    http: httpx.AsyncClient

    async def target(self, key: str, size: int, content_type: str = "image/jpeg") -> str:
        target = await self.storage.upload_target(
            key, content_type=content_type, max_bytes=size, declared_bytes=size, expires_in=60
        )
        return target.url

    def leftovers(self) -> list[Path]:
        """Every file in the store: objects, their metadata and temporary files."""
        return files_under(self.storage.root)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """The local store's routes alone, with a body timeout of one second and a minimum
    rate so high that a body's deadline is that one second too."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    base_url = f"http://127.0.0.1:{port}"
    settings = Settings(
        secret_key=SECRET,
        media_root=tmp_path / "media",
        public_base_url=base_url,
        upload_body_timeout_seconds=1,
        upload_min_bytes_per_second=10**9,
    )
    storage = LocalStorage(settings)
    app = Starlette(routes=local_storage_routes(storage))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    async with uvicorn_serving(config), httpx.AsyncClient(timeout=30) as http:
        yield Store(storage=storage, base_url=base_url, http=http)


async def test_bad_and_expired_signatures_are_refused_before_the_body(store: Store) -> None:
    url = await store.target("originals/1/1", 10)
    forged = url.replace("sig=", "sig=0")
    # Validly signed, with an expiry a second in the past (no waiting for one to pass).
    past = int(time.time()) - 1
    signature = store.storage._sign("originals/1/1", "image/jpeg", 10, past)
    query = urlencode({"ct": "image/jpeg", "max": "10", "exp": str(past), "sig": signature})
    expired = url.split("?", 1)[0] + "?" + query
    headers = {"Content-Type": "image/jpeg", "Content-Length": "10"}
    assert (await raw_put(forged, headers, [b"x" * 10])).status == 403
    assert (await raw_put(expired, headers, [b"x" * 10])).status == 403
    assert store.leftovers() == []


async def test_a_body_without_a_valid_content_length_is_refused(store: Store) -> None:
    url = await store.target("originals/1/2", 10)
    chunked = {"Content-Type": "image/jpeg", "Transfer-Encoding": "chunked"}
    answer = await raw_put(url, chunked, [b"a\r\n" + b"x" * 10 + b"\r\n0\r\n\r\n"])
    assert answer == RawAnswer(status=411, closed=True)
    assert (await raw_put(url, {"Content-Type": "image/jpeg"})).status == 411
    for bad in ("1_0", "+10", "ten", "1" * 25):
        headers = {"Content-Type": "image/jpeg", "Content-Length": bad}
        answer = await raw_put(url, headers, [b"x" * 10])
        assert answer.status is not None and 400 <= answer.status < 500, bad
    # Larger than the signed maximum: refused before a byte is read.
    headers = {"Content-Type": "image/jpeg", "Content-Length": "11"}
    assert (await raw_put(url, headers, [b"x" * 11])).status == 413
    assert store.leftovers() == []


async def test_a_truncated_body_leaves_nothing(store: Store) -> None:
    url = await store.target("originals/1/3", 139)
    headers = {"Content-Type": "image/jpeg", "Content-Length": "139"}
    await raw_put(url, headers, [b"x" * 50], close_after_sending=True)
    assert await wait_until_empty(store.storage.root) == []
    assert await store.storage.head("originals/1/3") is None


async def test_a_body_that_never_comes_is_cut_off(store: Store) -> None:
    """The issue's case: 139 bytes declared, none sent. Before, held open forever."""
    url = await store.target("originals/1/4", 139)
    headers = {"Content-Type": "image/jpeg", "Content-Length": "139"}
    assert await raw_put(url, headers) == RawAnswer(status=408, closed=True)
    assert await wait_until_empty(store.storage.root) == []


async def test_a_dribbled_body_is_cut_off_at_its_deadline(store: Store) -> None:
    """One byte every 0.2 s keeps within the one-second idle timeout, never within the
    body's deadline (the timeout plus its length at the minimum rate)."""
    url = await store.target("originals/1/5", 139)
    headers = {"Content-Type": "image/jpeg", "Content-Length": "139"}
    answer = await raw_put(url, headers, [b"x"] * 139, pause=0.2)
    assert answer == RawAnswer(status=408, closed=True)
    assert await wait_until_empty(store.storage.root) == []


async def test_bytes_past_the_content_length_are_never_stored(store: Store) -> None:
    """The server frames the body by its Content-Length: what follows is parsed as another
    request (and refused, closing the connection), never appended to the object, which is
    then the declared bytes or nothing (the server may refuse before the app runs)."""
    url = await store.target("originals/1/6", 10)
    headers = {"Content-Type": "image/jpeg", "Content-Length": "10"}
    answer = await raw_put(url, headers, [b"y" * 10 + b"z" * 30])
    assert answer.status in (200, 400) and answer.closed
    assert await wait_until_empty(store.storage.root / ".tmp") == []
    info = await store.storage.head("originals/1/6")
    if info is not None:
        assert await store.storage.read_head("originals/1/6", 100) == b"y" * 10
    # Declared larger than the signed size: 413 before a byte is read.
    headers["Content-Length"] = "40"
    assert (await raw_put(url, headers, [b"y" * 40])).status == 413


async def test_the_media_route_answers_hostile_requests_with_4xx(store: Store) -> None:
    await store.storage.put("renditions/1/1/feed.jpg", b"\xff\xd8" + bytes(500), "image/jpeg")
    await store.storage.put("originals/1/1", b"secret", "image/jpeg")
    path = "/media/renditions/1/1/feed.jpg"
    requests = [
        ("GET", path, {"Range": "bytes=9999-"}),
        ("GET", path, {"Range": "bytes=oops"}),
        ("GET", path, {"If-None-Match": "\x7f" * 300}),
        ("GET", "/media/originals/1/1", {}),
        ("HEAD", "/media/renditions/1/1/feed.jpg%00.html", {}),
        ("GET", "/media/renditions/" + "a" * 5000, {}),
        ("PUT", path, {}),
    ]
    for method, url, headers in requests:
        response = await store.http.request(method, store.base_url + url, headers=headers)
        assert response.status_code < 500, (method, url, headers, response.status_code)
        assert b"secret" not in response.content
    ok = await store.http.get(store.base_url + path, headers={"Range": "bytes=0-1"})
    assert ok.status_code == 206 and ok.content == b"\xff\xd8"


async def test_a_store_that_cannot_write_answers_5xx_and_changes_nothing(store: Store) -> None:
    """The disk failing (here: no temporary directory, then an object path that cannot
    be replaced) is the store's failure, told apart from a closed target: a 5xx saying
    so, no temporary file left, and the old object's metadata as it was."""
    key = "originals/1/7"
    await store.storage.put(key, b"old", "image/jpeg", cache_immutable=False)
    before = store.storage._read_meta(key)
    url = await store.target(key, 10)
    headers = {"Content-Type": "image/jpeg", "Content-Length": "10"}

    # No room for a temporary file: refused before the body is stored anywhere.
    tmp_root = store.storage.root / ".tmp"
    tmp_root.rmdir()
    try:
        answer = await raw_put(url, headers, [b"x" * 10])
    finally:
        tmp_root.mkdir()
    assert answer.status == 503
    # The body is in, but the object cannot be moved into place (a directory is there).
    object_path = store.storage.root / key
    object_path.unlink()
    object_path.mkdir()
    (object_path / "in-the-way").write_bytes(b"")
    assert (await raw_put(url, headers, [b"x" * 10])).status == 503
    assert store.storage._read_meta(key) == before  # rolled back, not the new body's
    assert list(tmp_root.iterdir()) == []


# --------------------------------------------------------------------------- the real app


def local_only(server: Server) -> None:
    if server.settings.storage_backend != "local":
        pytest.skip("the local upload route's rules (S3: see the S3 tests)")


async def put_target(target: dict[str, object], data: bytes) -> int:
    """PUT `data` to a local upload target with its headers (and a Content-Length)."""
    headers = {h["name"]: h["value"] for h in target["headers"]}  # type: ignore[attr-defined]
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.put(str(target["url"]), content=data, headers=headers)
    return response.status_code


async def media_keys(server: Server, post_id: str) -> list[str]:
    pk = from_global_id(post_id)[1]
    async with server.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT original_key FROM media WHERE post_id = :p ORDER BY position"), {"p": pk}
        )
        return [row.original_key for row in rows]


async def test_a_target_refuses_uploads_after_its_post_is_deleted(media_server, gql, factory):
    """Local: refused at once (409), nothing stored. S3: a presigned POST cannot be
    revoked, so the object it writes is deleted by the late pass, scheduled for when the
    post's last upload URL has expired."""
    author = await factory.user("author")
    data = jpeg_bytes(200, 200)
    created = await create_post(gql, author.token, [("image/jpeg", data)])
    post_id = created["post"]["id"]
    pk = from_global_id(post_id)[1]
    [key] = await media_keys(media_server, post_id)
    deleted = (await gql(DELETE, token=author.token, id=post_id))["deletePost"]
    assert deleted["errors"] == []
    jobs = media_server.resources.jobs
    await Job(f"post_deleted:{pk}", jobs).result(timeout=30)

    response = await upload(created["uploads"][0], data)
    if media_server.settings.storage_backend == "local":
        assert response.status_code == 409
        assert await media_server.storage.head(key) is None
        # The gate refuses such uploads: no late pass is needed, none is scheduled.
        assert await Job(f"late_uploads:{pk}", jobs).info() is None
        return
    assert response.status_code in (200, 204)  # S3: the store took it...
    assert await media_server.storage.head(key) is not None
    # ...and the late pass waits for the last URL to expire, then deletes it.
    async with media_server.engine.connect() as conn:
        deleted_at = await conn.scalar(
            text("SELECT deleted_at FROM posts WHERE id = :p"), {"p": pk}
        )
    late = await Job(f"late_uploads:{pk}", jobs).info()
    assert late is not None and late.score is not None
    expiry = deleted_at + timedelta(seconds=media_server.settings.upload_ttl_seconds)
    assert late.score >= int(expiry.timestamp() * 1000)
    due = expiry + timedelta(seconds=LATE_UPLOAD_MARGIN_SECONDS)
    assert late.score <= int(due.timestamp() * 1000) + 1000
    assert await delete_late_uploads(media_server.worker.ctx, pk) == "deleted"
    assert await media_server.storage.head(key) is None


async def test_a_second_upload_after_ready_never_overwrites_the_original(
    media_server, gql, factory
):
    local_only(media_server)
    author = await factory.user("author")
    first, second = two_versions(300, 200)
    created = await create_post(gql, author.token, [("image/jpeg", first)])
    target, post_id = created["uploads"][0], created["post"]["id"]
    assert await put_target(target, first) == 200
    assert (await gql(COMPLETE, token=author.token, id=post_id))["completeUpload"]["errors"] == []
    # PROCESSING, then READY: closed either way.
    assert await put_target(target, second) == 409
    assert (await wait_for_post(gql, author.token, post_id))["status"] == "READY"
    assert await put_target(target, second) == 409
    [key] = await media_keys(media_server, post_id)
    assert await media_server.storage.read_head(key, len(first) + 1) == first


async def test_a_pending_target_takes_retries_of_its_declared_size_only(media_server, gql, factory):
    """Before completeUpload, a client may send its body again (it lost the answer): the
    last complete body wins. A Content-Length other than the declared byteSize is 400."""
    local_only(media_server)
    author = await factory.user("author")
    first, second = two_versions(300, 200)
    created = await create_post(gql, author.token, [("image/jpeg", first)])
    target, post_id = created["uploads"][0], created["post"]["id"]
    [key] = await media_keys(media_server, post_id)
    assert await put_target(target, first[:-1]) == 400
    assert await media_server.storage.head(key) is None
    assert await put_target(target, first) == 200
    assert await put_target(target, second) == 200
    assert await media_server.storage.read_head(key, len(second) + 1) == second
    assert (await gql(COMPLETE, token=author.token, id=post_id))["completeUpload"]["errors"] == []
    assert (await wait_for_post(gql, author.token, post_id))["status"] == "READY"


def staged_files(server: Server) -> list[Path]:
    """The local store's temporary files (`LocalStorage.stage` writes a body into one)."""
    return sorted((server.storage.root / ".tmp").glob("w-*.tmp"))  # type: ignore[attr-defined]


async def test_an_upload_in_flight_when_the_post_moves_on_is_discarded(media_server, gql, factory):
    """The body of a second PUT is still arriving when completeUpload moves the post to
    PROCESSING: that body is never moved into place (the gate is asked again, under the
    post's row lock, at the rename), and the worker renders the first."""
    local_only(media_server)
    author = await factory.user("author")
    first, second = two_versions(300, 200)
    created = await create_post(gql, author.token, [("image/jpeg", first)])
    target, post_id = created["uploads"][0], created["post"]["id"]
    assert await put_target(target, first) == 200
    headers = {h["name"]: h["value"] for h in target["headers"]}
    headers["Content-Length"] = str(len(second))
    half = len(second) // 2
    split = urlsplit(target["url"])
    reader, writer = await asyncio.open_connection(split.hostname, split.port)
    try:
        head = [f"PUT {split.path}?{split.query} HTTP/1.1", f"Host: {split.netloc}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        assert staged_files(media_server) == []
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + second[:half])
        await writer.drain()
        # The PUT passed the gate's first check (the target was open) and is streaming
        # into its temporary file: only the check at the rename can refuse it now.
        for _ in range(1500):  # the route has no event a client can wait on
            if staged_files(media_server):
                break
            await asyncio.sleep(0.02)
        assert staged_files(media_server) != []
        done = (await gql(COMPLETE, token=author.token, id=post_id))["completeUpload"]
        assert done["errors"] == [] and done["post"]["status"] == "PROCESSING"
        writer.write(second[half:])
        await writer.drain()
        async with asyncio.timeout(30):
            status_line = await reader.readline()
        assert int(status_line.split()[1]) == 409
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    [key] = await media_keys(media_server, post_id)
    assert await media_server.storage.read_head(key, len(first) + 1) == first
    assert (await wait_for_post(gql, author.token, post_id))["status"] == "READY"
    assert files_under(media_server.storage.root / ".tmp") == []


# --------------------------------------------------------------------------- S3 multipart


@pytest.fixture
async def s3(moto_server: str, settings: Settings) -> AsyncIterator[S3Storage]:
    storage = S3Storage(s3_settings(settings, moto_server))
    await storage.ensure_bucket()
    try:
        yield storage
    finally:
        await storage.close()


async def test_s3_multipart_part_urls_die_with_their_upload(s3: S3Storage) -> None:
    """A multipart target is single-use on S3 itself: completeUpload completes the upload
    server-side (and deletePost aborts it), after which its part URLs answer NoSuchUpload."""
    body = bytes(range(256)) * (24 * 1024)  # 6 MiB: two parts of 5 MiB
    for finish in ("complete", "abort"):
        key = f"originals/5/{finish}"
        target = await s3.upload_target(
            key,
            content_type="video/mp4",
            max_bytes=len(body),
            declared_bytes=len(body),
            expires_in=600,
            multipart=True,
            part_size=5 * MiB,
        )
        assert target.part_urls is not None and target.upload_id is not None
        async with httpx.AsyncClient(timeout=30) as http:
            for number, url in enumerate(target.part_urls):
                part = body[number * 5 * MiB : (number + 1) * 5 * MiB]
                assert (await http.put(url, content=part)).status_code == 200
            if finish == "complete":
                await s3.complete_multipart(key, target.upload_id, max_bytes=len(body), exact=True)
            else:
                await s3.abort_multipart(key, target.upload_id)
            again = await http.put(target.part_urls[0], content=b"overwrite")
        # S3 answers 404 NoSuchUpload; moto 5.2 fails with a 500 (KeyError) instead: either
        # way the part is refused and the object is what was completed (or nothing).
        assert again.status_code >= 400
        info = await s3.head(key)
        assert (info.size if info else None) == (len(body) if finish == "complete" else None)


# --------------------------------------------------------------------------- read once


class SwappingStore:
    """The app's real store, with the object at the key the worker downloads replaced
    just before (`before`) or just after (`after`) the download: a presigned POST used
    again at that moment. Every other call goes to the store as it is."""

    def __init__(
        self, store: Any, *, before: bytes | None = None, after: bytes | None = None
    ) -> None:
        self._store = store
        self.before = before
        self.after = after
        self.downloads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def download_to(self, key: str, path: Path) -> str | None:
        if self.before is not None:
            await self._store.put(key, self.before, "image/jpeg", cache_immutable=False)
        etag: str | None = await self._store.download_to(key, path)
        self.downloads += 1
        if self.after is not None:
            await self._store.put(key, self.after, "image/jpeg", cache_immutable=False)
        return etag


def worker_ctx(server: Server, **resources: Any) -> dict[str, Any]:
    """The test worker's context, with some of its resources swapped."""
    assert server.worker is not None
    ctx = dict(server.worker.ctx)
    ctx["resources"] = dataclasses.replace(ctx["resources"], **resources)
    return ctx


def padded(data: bytes, size: int) -> bytes:
    """`data`, a JPEG, grown to `size` bytes by a comment segment after its SOI marker."""
    extra = size - len(data)
    assert data[:2] == b"\xff\xd8" and 4 <= extra < 65535
    return data[:2] + b"\xff\xfe" + (extra - 2).to_bytes(2, "big") + bytes(extra - 4) + data[2:]


async def uploaded_post(server: Server, gql, factory, data: bytes) -> tuple[int, str]:
    """A post with `data` uploaded and moved to PROCESSING as completeUpload does, but
    with no job sent: the test runs the worker's job itself. (post pk, original key)."""
    author = await factory.user("author")
    created = await create_post(gql, author.token, [("image/jpeg", data)])
    assert created["errors"] == []
    response = await upload(created["uploads"][0], data)
    assert response.status_code in (200, 201, 204), response.text
    pk = from_global_id(created["post"]["id"])[1]
    async with server.engine.begin() as conn:
        await conn.execute(
            text("UPDATE posts SET status = 'PROCESSING', status_changed_at = now() WHERE id = :p"),
            {"p": pk},
        )
    [key] = await media_keys(server, created["post"]["id"])
    return pk, key


async def test_the_worker_renders_the_bytes_it_verified_not_a_later_body(
    media_server, gql, factory
):
    """A valid body of the same size written to the upload key right after the worker's
    download (an S3 POST cannot be revoked) is never rendered: the renditions come from
    the copy that was checked, and the store is not read again. On S3 the original kept
    is that checked copy too: the server-side copy of the upload key (which now holds
    the later body; moto ignores CopySourceIfMatch) is not the verified bytes, so the
    worker uploads its own copy instead."""
    first, later = jpeg_bytes(300, 200), jpeg_bytes(200, 300)
    size = max(len(first), len(later)) + 8
    first, later = padded(first, size), padded(later, size)
    pk, key = await uploaded_post(media_server, gql, factory, first)
    swapping = SwappingStore(media_server.storage, after=later)
    assert await process_post(worker_ctx(media_server, storage=swapping), pk) == "ready"
    assert swapping.downloads == 1
    async with media_server.engine.connect() as conn:
        kept = await conn.scalar(
            text("SELECT original_key FROM media WHERE post_id = :p"), {"p": pk}
        )
    if media_server.settings.storage_backend == "s3":
        assert kept.startswith(f"verified/{pk}/")
        assert await media_server.storage.read_head(kept, size + 1) == first
        assert await media_server.storage.head(key) is None  # the upload key is retired
    else:
        assert kept == key
        assert await media_server.storage.read_head(key, size + 1) == later  # replaced
    async with media_server.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT width, height FROM media WHERE post_id = :p"), {"p": pk}
            )
        ).one()
        status = await conn.scalar(text("SELECT status FROM posts WHERE id = :p"), {"p": pk})
    assert (row.width, row.height, status) == (300, 200, "READY")


async def test_a_body_of_another_size_swapped_in_before_the_download_fails_the_post(
    media_server, gql, factory
):
    """The HEAD saw the declared size, but the body downloaded is another (replaced in
    between): the downloaded copy's size decides, the post FAILS saying so, and the
    object is deleted."""
    data = jpeg_bytes(300, 200)
    pk, key = await uploaded_post(media_server, gql, factory, data)
    swapped = padded(data, len(data) + 100)
    swapping = SwappingStore(media_server.storage, before=swapped)
    assert await process_post(worker_ctx(media_server, storage=swapping), pk) == "failed"
    async with media_server.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT status, failure_reason FROM posts WHERE id = :p"), {"p": pk}
            )
        ).one()
    limit = media_server.settings.photo_max_bytes
    assert row.status == "FAILED"
    assert row.failure_reason == (
        f"Media 1 is {len(swapped)} bytes, but {len(data)} were declared (limit {limit})."
    )
    assert await media_server.storage.head(key) is None


# --------------------------------------------------------------------------- late passes


async def media_row(server: Server, pk: int) -> Any:
    async with server.engine.connect() as conn:
        return (
            await conn.execute(
                text("SELECT id, original_key FROM media WHERE post_id = :p"), {"p": pk}
            )
        ).one()


async def test_s3_a_post_after_ready_never_reaches_the_original_and_is_swept(
    media_server, gql, factory
):
    """S3: a presigned POST cannot be revoked, so once it has verified the upload the
    worker keeps those bytes under `verified/<post>/` (a key no URL names), points the
    media row at them as the post turns READY, and deletes the upload key. A POST with
    the still-valid URL after READY writes a stray at the upload key: the original the
    row points to is unchanged, and the stray goes with the pass scheduled for when the
    URL has expired. deletePost removes both prefixes."""
    s3_only(media_server)
    author = await factory.user("author")
    first, second = two_versions(300, 200)
    created = await create_post(gql, author.token, [("image/jpeg", first)])
    target, post_id = created["uploads"][0], created["post"]["id"]
    pk = from_global_id(post_id)[1]
    [upload_key] = await media_keys(media_server, post_id)
    assert (await upload(target, first)).status_code in (200, 204)
    assert (await gql(COMPLETE, token=author.token, id=post_id))["completeUpload"]["errors"] == []
    assert (await wait_for_post(gql, author.token, post_id))["status"] == "READY"
    storage = media_server.storage
    row = await media_row(media_server, pk)
    assert row.original_key.startswith(f"verified/{pk}/{row.id}-")
    assert await storage.read_head(row.original_key, len(first) + 1) == first
    assert await storage.head(upload_key) is None
    due = await late_job_due(media_server, f"stray_uploads:{pk}")
    ttl = media_server.settings.upload_ttl_seconds
    assert time.time() + ttl < due <= time.time() + ttl + LATE_UPLOAD_MARGIN_SECONDS

    # The URL used again after READY: a stray object, never the original.
    assert (await upload(target, second)).status_code in (200, 204)
    assert await storage.read_head(upload_key, len(second) + 1) == second
    assert (await media_row(media_server, pk)).original_key == row.original_key
    assert await storage.read_head(row.original_key, len(first) + 1) == first
    # The pass, run now: the stray goes, the verified original stays.
    assert await delete_late_uploads(media_server.worker.ctx, pk) == "strays"
    assert await storage.head(upload_key) is None
    assert await storage.read_head(row.original_key, len(first) + 1) == first

    # deletePost: the verified original, the renditions and any stray all go.
    assert (await upload(target, second)).status_code in (200, 204)
    renditions = await renditions_of(media_server, pk)
    assert renditions and all([await storage.head(key) is not None for key in renditions])
    assert (await gql(DELETE, token=author.token, id=post_id))["deletePost"]["errors"] == []
    await Job(f"post_deleted:{pk}", media_server.resources.jobs).result(timeout=30)
    for key in [upload_key, row.original_key, *renditions]:
        assert await storage.head(key) is None, key
    # The READY post's pass, should it run now, does what a deleted post's pass does.
    assert await delete_late_uploads(media_server.worker.ctx, pk) == "deleted"


async def renditions_of(server: Server, pk: int) -> list[str]:
    async with server.engine.connect() as conn:
        keys = await conn.scalar(
            text("SELECT rendition_keys FROM media WHERE post_id = :p"), {"p": pk}
        )
    return sorted(keys.values())


def s3_only(server: Server) -> None:
    if server.settings.storage_backend != "s3":
        pytest.skip("late passes exist for S3 only (the local route asks the gate)")


def unreachable_s3(server: Server) -> S3Storage:
    """A real S3 client whose endpoint refuses connections (a store that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return S3Storage(
        dataclasses.replace(server.settings, s3_endpoint_url=f"http://127.0.0.1:{port}")
    )


async def late_job_due(server: Server, job_id: str) -> float:
    """When the deferred job `job_id` is due (epoch seconds); fails if none is queued."""
    info = await Job(job_id, server.resources.jobs).info()
    assert info is not None and info.score is not None, job_id
    return info.score / 1000


async def test_a_store_failure_during_clean_up_leaves_the_late_pass_scheduled(
    media_server, gql, factory
):
    """The store down while the sweeper abandons posts, or while a deleted post's clean-up
    runs: the late pass is scheduled first (so the originals go in the end), every post
    of the sweep is abandoned (one failure does not stop it), and the deletion job
    retries (arq Retry) instead of failing for good."""
    s3_only(media_server)
    author = await factory.user("author")
    data = jpeg_bytes(200, 200)
    keys: dict[int, str] = {}
    for _ in range(2):
        created = await create_post(gql, author.token, [("image/jpeg", data)])
        assert (await upload(created["uploads"][0], data)).status_code in (200, 204)
        pk = from_global_id(created["post"]["id"])[1]
        [keys[pk]] = await media_keys(media_server, created["post"]["id"])
    stale = media_server.settings.pending_ttl_seconds + 60
    async with media_server.engine.begin() as conn:
        await conn.execute(
            text("UPDATE posts SET status_changed_at = now() - make_interval(secs => :s)"),
            {"s": stale},
        )
    down = unreachable_s3(media_server)
    try:
        ctx = worker_ctx(media_server, storage=down)
        counts = await sweep_posts(ctx)
        assert counts["abandoned"] == 0  # neither clean-up finished...
        async with media_server.engine.connect() as conn:
            left = await conn.scalar(text("SELECT count(*) FROM posts WHERE deleted_at IS NULL"))
        assert left == 0  # ...but both posts were abandoned, not just the first
        for pk in keys:
            assert await late_job_due(media_server, f"late_uploads:{pk}") > time.time()
            assert await media_server.storage.head(keys[pk]) is not None
        # A deleted post's clean-up job with the store down: retried, late pass queued.
        [first, *_] = keys
        await media_server.resources.jobs.delete(f"arq:job:late_uploads:{first}")
        with pytest.raises(Retry):
            await post_deleted({**ctx, "job_try": 1, "max_tries": 5}, first, author.pk)
        assert await late_job_due(media_server, f"late_uploads:{first}") > time.time()
    finally:
        await down.close()
    # The late passes, run now, delete what the failed clean-ups left.
    for pk, key in keys.items():
        assert await delete_late_uploads(media_server.worker.ctx, pk) == "deleted"
        assert await media_server.storage.head(key) is None


async def test_a_story_cleaned_up_before_its_upload_url_expires_gets_a_late_pass(
    media_server, gql, factory
):
    """A story's one upload URL is signed as it is created; the story goes after its TTL
    at the earliest. When UPLOAD_TTL_SECONDS (plus the margin) is longer than that, the
    clean-up schedules a late pass for when the URL has expired, which deletes what a
    POST wrote after the clean-up. With the default TTLs (24 h > 1 h), none is needed."""
    s3_only(media_server)
    author = await factory.user("author")
    data = jpeg_bytes(200, 200)
    media = {"contentType": "image/jpeg", "byteSize": str(len(data))}
    created = (await gql(CREATE_STORY, token=author.token, media=media))["createStory"]
    assert created["errors"] == []
    story_pk = from_global_id(created["story"]["id"])[1]
    async with media_server.engine.connect() as conn:
        key = await conn.scalar(
            text("SELECT original_key FROM media WHERE story_id = :s"), {"s": story_pk}
        )
    async with media_server.engine.begin() as conn:  # past a one-hour TTL, never READY
        await conn.execute(
            text("UPDATE stories SET created_at = now() - interval '61 minutes' WHERE id = :s"),
            {"s": story_pk},
        )
    settings = dataclasses.replace(
        media_server.settings, story_ttl_hours=1, upload_ttl_seconds=2 * 3600
    )
    ctx = {**worker_ctx(media_server), "settings": settings}
    assert await cleanup_stories(ctx) == 1
    due = await late_job_due(media_server, f"late_story_uploads:{story_pk}")
    delay = 2 * 3600 + LATE_UPLOAD_MARGIN_SECONDS - 3600
    assert time.time() + delay - 60 < due <= time.time() + delay
    # A POST with the still-valid URL after the clean-up: the late pass deletes it.
    assert (await upload(created["uploads"][0], data)).status_code in (200, 204)
    assert await media_server.storage.head(key) is not None
    assert await delete_late_story_uploads(ctx, story_pk) == "deleted"
    assert await media_server.storage.head(key) is None
    # Default TTLs: the URL is dead before any clean-up, so no late pass.
    assert late_upload_delay(media_server.settings, timedelta(hours=24)) is None
    assert late_upload_delay(settings, timedelta(hours=1)) == timedelta(seconds=delay)
