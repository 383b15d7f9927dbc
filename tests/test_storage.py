"""Blob storage against real backends: LocalStorage behind a real uvicorn server on a
loopback port, S3Storage against a moto server.

House rule: moto enforces no POST policy condition, signature or expiry, so no S3
test below claims that the store refused anything; refusals are tested on the
local backend, whose routes are ours.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from infra.storage import (
    IMMUTABLE_CACHE_CONTROL,
    IncompleteUpload,
    InvalidKeyError,
    LocalStorage,
    MiB,
    ObjectInfo,
    ObjectNotFound,
    ObjectTooLarge,
    S3Storage,
    UploadNotFound,
    bucket_public_read_policy,
    choose_part_size,
    create_storage,
    local_storage_routes,
    print_policy,
    validate_key,
)
from settings import ROOT, Settings
from tests.s3_server import s3_settings

# The session fixture, for this module; harmless once conftest imports it too.

SECRET = "storage-test-secret-key-0123456789abcdef"
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4


def md5_etag(data: bytes) -> str:
    return f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'


def with_query(url: str, **changes: str) -> str:
    """``url`` with some query parameters replaced (to tamper with a signed URL)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- local


@dataclass
class LocalServer:
    storage: LocalStorage
    settings: Settings
    base_url: str
    http: httpx.AsyncClient


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalServer]:
    """LocalStorage and its routes in a Starlette app, served by uvicorn on 127.0.0.1.

    The socket is bound first so the storage can sign URLs for the real port.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = Settings(secret_key=SECRET, media_root=tmp_path / "media", public_base_url=base_url)
    storage = LocalStorage(settings)
    app = Starlette(routes=local_storage_routes(storage))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            yield LocalServer(storage=storage, settings=settings, base_url=base_url, http=http)
    finally:
        server.should_exit = True
        await task
        await storage.close()
        sock.close()


async def test_local_put_upload_then_head_download_and_read_head(
    local: LocalServer, tmp_path: Path
) -> None:
    key = "originals/123/456"
    target = await local.storage.upload_target(
        key, content_type="image/jpeg", max_bytes=10_000, declared_bytes=len(JPEG), expires_in=60
    )
    assert target.method == "PUT"
    assert target.url.startswith(f"{local.base_url}/uploads/{key}?")
    assert target.headers == {"Content-Type": "image/jpeg"}
    assert target.fields == {}
    assert target.upload_id is None and target.part_urls is None
    assert target.expires_at.tzinfo is not None
    assert 55 <= target.expires_at.timestamp() - time.time() <= 60

    response = await local.http.put(target.url, headers=target.headers, content=JPEG)
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == md5_etag(JPEG)

    assert await local.storage.head(key) == ObjectInfo(size=len(JPEG), content_type="image/jpeg")
    destination = tmp_path / "download.bin"
    await local.storage.download_to(key, destination)
    assert destination.read_bytes() == JPEG
    assert await local.storage.read_head(key, 4) == JPEG[:4]
    assert await local.storage.read_head(key, 10**6) == JPEG
    # Nothing left behind in the temporary directory.
    assert files_under(local.storage.root / ".tmp") == []


async def test_local_chunked_upload_without_content_length_is_refused(local: LocalServer) -> None:
    """A body of unknown length is refused (411, issue 10): it could be sent forever, and
    its size is not known until its end (tests/test_upload_hardening.py has the rest)."""
    key = "originals/1/streamed"
    body = os.urandom(64 * 1024)
    target = await local.storage.upload_target(
        key, content_type="video/mp4", max_bytes=len(body), declared_bytes=len(body), expires_in=60
    )

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked encoding
        for start in range(0, len(body), 16 * 1024):
            yield body[start : start + 16 * 1024]

    try:
        response = await local.http.put(target.url, headers=target.headers, content=chunks())
    except httpx.TransportError:
        pass  # the server may close before the client finishes sending
    else:
        assert response.status_code == 411, response.text
    assert await local.storage.head(key) is None
    assert files_under(local.storage.root / ".tmp") == []


async def test_local_upload_replaces_object_atomically(local: LocalServer) -> None:
    key = "originals/1/again"
    for body in (b"first version", b"second"):
        target = await local.storage.upload_target(
            key, content_type="image/png", max_bytes=100, declared_bytes=len(body), expires_in=60
        )
        response = await local.http.put(target.url, headers=target.headers, content=body)
        assert response.status_code == 200
    assert await local.storage.read_head(key, 100) == b"second"


@pytest.mark.parametrize(
    "tamper",
    [
        {"sig": "0" * 64},
        {"max": "999999999"},
        {"ct": "text/html"},
        {"exp": str(int(time.time()) + 10**6)},
    ],
    ids=["signature", "max", "content-type", "expiry"],
)
async def test_local_tampered_url_is_refused(local: LocalServer, tamper: dict[str, str]) -> None:
    key = "originals/5/6"
    target = await local.storage.upload_target(
        key, content_type="image/jpeg", max_bytes=100, declared_bytes=10, expires_in=60
    )
    headers = {"Content-Type": tamper.get("ct", "image/jpeg")}
    response = await local.http.put(with_query(target.url, **tamper), headers=headers, content=b"x")
    assert response.status_code == 403
    assert await local.storage.head(key) is None


async def test_local_url_signed_for_another_key_is_refused(local: LocalServer) -> None:
    target = await local.storage.upload_target(
        "originals/5/6", content_type="image/jpeg", max_bytes=100, declared_bytes=1, expires_in=60
    )
    other = target.url.replace("/uploads/originals/5/6?", "/uploads/originals/5/7?")
    response = await local.http.put(other, headers=target.headers, content=b"x")
    assert response.status_code == 403
    assert await local.storage.head("originals/5/7") is None


async def test_local_unsigned_or_malformed_url_is_refused(local: LocalServer) -> None:
    base = f"{local.base_url}/uploads/originals/5/6"
    headers = {"Content-Type": "image/jpeg"}
    for url in (base, f"{base}?ct=image/jpeg&max=abc&exp=1&sig=00", f"{base}?ct=image/jpeg"):
        response = await local.http.put(url, headers=headers, content=b"x")
        assert response.status_code == 403, url
    assert await local.storage.head("originals/5/6") is None


async def test_local_expired_url_is_refused(local: LocalServer) -> None:
    key = "originals/7/8"
    target = await local.storage.upload_target(
        key, content_type="image/jpeg", max_bytes=100, declared_bytes=1, expires_in=1
    )
    await asyncio.sleep(max(0.0, target.expires_at.timestamp() - time.time()) + 0.05)
    response = await local.http.put(target.url, headers=target.headers, content=b"x")
    assert response.status_code == 403
    assert "expired" in response.text
    assert await local.storage.head(key) is None


async def test_local_oversized_body_is_refused_and_nothing_stored(local: LocalServer) -> None:
    key = "originals/9/9"
    target = await local.storage.upload_target(
        key, content_type="image/jpeg", max_bytes=1000, declared_bytes=1000, expires_in=60
    )
    # Declared too large: refused before reading.
    response = await local.http.put(target.url, headers=target.headers, content=b"x" * 1001)
    assert response.status_code == 413

    # Chunked (no Content-Length): refused before reading (411, issue 10).
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(11):
            yield b"y" * 100

    try:
        response = await local.http.put(target.url, headers=target.headers, content=chunks())
    except httpx.TransportError:
        pass  # the server may close before the client finishes sending
    else:
        assert response.status_code == 411
    assert await local.storage.head(key) is None
    assert files_under(local.storage.root) == []  # no partial temp file, no metadata

    # Exactly the limit is fine.
    response = await local.http.put(target.url, headers=target.headers, content=b"z" * 1000)
    assert response.status_code == 200
    assert await local.storage.head(key) == ObjectInfo(size=1000, content_type="image/jpeg")


async def test_local_wrong_content_type_is_refused(local: LocalServer) -> None:
    key = "originals/3/3"
    target = await local.storage.upload_target(
        key, content_type="image/jpeg", max_bytes=100, declared_bytes=1, expires_in=60
    )
    for content_type in ("text/html", "image/jpeg; charset=utf-8", ""):
        headers = {"Content-Type": content_type} if content_type else {}
        response = await local.http.put(target.url, headers=headers, content=b"<script>")
        assert response.status_code in (403, 415), content_type
    assert await local.storage.head(key) is None


async def test_local_media_serves_renditions_immutably(local: LocalServer) -> None:
    key = "renditions/123/456/feed.webp"
    data = b"RIFF\x00\x00\x00\x00WEBPVP8 " + os.urandom(2000)
    await local.storage.put(key, data, "image/webp")
    url = local.storage.public_url(key)
    assert url == f"{local.base_url}/media/{key}"

    response = await local.http.get(url)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/webp"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["x-content-type-options"] == "nosniff"
    etag = response.headers["etag"]
    assert etag == md5_etag(data)

    for if_none_match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        cached = await local.http.get(url, headers={"If-None-Match": if_none_match})
        assert cached.status_code == 304, if_none_match
        assert cached.content == b""
        assert cached.headers["etag"] == etag
    stale = await local.http.get(url, headers={"If-None-Match": '"something-else"'})
    assert stale.status_code == 200

    head = await local.http.head(url)
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(data))
    ranged = await local.http.get(url, headers={"Range": "bytes=0-3"})
    assert ranged.status_code == 206
    assert ranged.content == data[:4]


async def test_local_media_cache_control_follows_put(local: LocalServer, tmp_path: Path) -> None:
    source = tmp_path / "poster.jpg"
    source.write_bytes(JPEG)
    key = "renditions/1/2/poster.jpg"
    await local.storage.put(key, source, "image/jpeg", cache_immutable=False)
    response = await local.http.get(local.storage.public_url(key))
    assert response.status_code == 200
    assert response.content == JPEG
    assert response.headers["cache-control"] == "public, no-cache"
    assert await local.storage.head(key) == ObjectInfo(size=len(JPEG), content_type="image/jpeg")


async def test_local_media_never_serves_originals_or_missing_keys(local: LocalServer) -> None:
    await local.storage.put("originals/1/2", JPEG, "image/jpeg")
    for path in (
        "/media/originals/1/2",
        "/media/renditions/1/2/missing.webp",
        "/media/renditions/1",  # a directory, not an object
        "/media/.meta/originals/1/2.json",
        "/media/renditions/../originals/1/2",
        "/media/renditions/%2e%2e/originals/1/2",
    ):
        response = await local.http.get(f"{local.base_url}{path}")
        assert response.status_code == 404, path


async def test_key_validation_rejects_traversal_and_odd_keys(local: LocalServer) -> None:
    for bad in (
        "../x",
        "a/../b",
        "a/..",
        "/abs",
        "a//b",
        "a/",
        "",
        ".hidden",
        "a/.meta",
        "UPPER/case",
        "a\\b",
        "a b",
        "a/b?c",
        "x" * 513,
    ):
        with pytest.raises(InvalidKeyError):
            validate_key(bad)
        with pytest.raises(InvalidKeyError):
            await local.storage.upload_target(
                bad, content_type="image/jpeg", max_bytes=10, declared_bytes=1, expires_in=60
            )
        with pytest.raises(InvalidKeyError):
            await local.storage.put(bad, b"x", "image/jpeg")
    assert validate_key("renditions/123/456/feed.webp") == "renditions/123/456/feed.webp"

    # Over HTTP, a traversal attempt never writes anything anywhere.
    outside = local.storage.root.parent
    before = files_under(outside)
    for path in ("/uploads/..%2Fescaped", "/uploads/originals/%2e%2e/%2e%2e/escaped"):
        response = await local.http.put(
            f"{local.base_url}{path}?ct=image/jpeg&max=10&exp=9999999999&sig=00",
            headers={"Content-Type": "image/jpeg"},
            content=b"x",
        )
        assert response.status_code in (403, 404), path
    assert files_under(outside) == before


async def test_upload_argument_validation(local: LocalServer) -> None:
    storage = local.storage
    for content_type, max_bytes, declared_bytes, expires_in in (
        ("image/jpeg\r\nX-Evil: 1", 100, 10, 60),
        ("jpeg", 100, 10, 60),
        ("image/jpeg", 0, 0, 60),
        ("image/jpeg", 100, 101, 60),
        ("image/jpeg", 100, -1, 60),
        ("image/jpeg", 100, 10, 0),
        ("image/jpeg", 100, 10, 8 * 24 * 3600),
    ):
        with pytest.raises(ValueError):
            await storage.upload_target(
                "originals/1/1",
                content_type=content_type,
                max_bytes=max_bytes,
                declared_bytes=declared_bytes,
                expires_in=expires_in,
            )
    # The local backend answers a multipart request with one streamed PUT, but checks
    # the part arguments the way S3 would.
    target = await storage.upload_target(
        "originals/1/1",
        content_type="video/mp4",
        max_bytes=100 * MiB,
        declared_bytes=20 * MiB,
        expires_in=60,
        multipart=True,
    )
    assert target.method == "PUT" and target.upload_id is None and target.part_urls is None
    with pytest.raises(ValueError):
        await storage.upload_target(
            "originals/1/1",
            content_type="video/mp4",
            max_bytes=100 * MiB,
            declared_bytes=20 * MiB,
            expires_in=60,
            multipart=True,
            part_size=MiB,
        )


def test_choose_part_size() -> None:
    assert choose_part_size(1) == 8 * MiB
    assert choose_part_size(100 * MiB, 5 * MiB) == 5 * MiB
    # Grown (in whole MiB) to fit 10,000 parts.
    big = 200 * 1024 * MiB
    size = choose_part_size(big)
    assert size % MiB == 0 and -(-big // size) <= 10_000
    with pytest.raises(ValueError):
        choose_part_size(10 * MiB, 5 * MiB - 1)
    with pytest.raises(ValueError):
        choose_part_size(10_001 * 5 * MiB, 5 * MiB)
    with pytest.raises(ValueError):
        choose_part_size(0)


async def test_local_delete_many_is_idempotent(local: LocalServer) -> None:
    keys = ["renditions/4/5/a.webp", "renditions/4/5/b.webp", "originals/4/5"]
    for key in keys:
        await local.storage.put(key, b"data", "image/webp")
    await local.storage.delete_many([*keys, "renditions/4/5/missing.webp", keys[0]])
    await local.storage.delete_many(keys)
    await local.storage.delete_many([])
    for key in keys:
        assert await local.storage.head(key) is None
    # Empty directories are pruned; the storage's own directories stay.
    assert sorted(p.name for p in local.storage.root.iterdir()) == [".meta", ".tmp"]
    with pytest.raises(InvalidKeyError):
        await local.storage.delete_many(["../etc/passwd"])


async def test_local_delete_prefix(local: LocalServer) -> None:
    for key in ("renditions/1/2/a.webp", "renditions/1/2/b.webp", "renditions/1/20/a.webp"):
        await local.storage.put(key, b"data", "image/webp")
    await local.storage.delete_prefix("renditions/1/2")
    await local.storage.delete_prefix("renditions/1/2/")  # idempotent
    assert await local.storage.head("renditions/1/2/a.webp") is None
    assert await local.storage.head("renditions/1/2/b.webp") is None
    assert await local.storage.head("renditions/1/20/a.webp") is not None
    for bad in ("", "/", "../x"):
        with pytest.raises(InvalidKeyError):
            await local.storage.delete_prefix(bad)


async def test_local_missing_objects(local: LocalServer, tmp_path: Path) -> None:
    assert await local.storage.head("originals/404/404") is None
    with pytest.raises(ObjectNotFound):
        await local.storage.download_to("originals/404/404", tmp_path / "x")
    with pytest.raises(ObjectNotFound):
        await local.storage.read_head("originals/404/404", 10)
    with pytest.raises(FileNotFoundError):  # ObjectNotFound is a FileNotFoundError
        await local.storage.read_head("originals/404/404", 0)
    assert not (tmp_path / "x").exists()


def test_local_public_url_uses_media_public_base_url(tmp_path: Path) -> None:
    settings = Settings(secret_key=SECRET, media_root=tmp_path, public_base_url="https://api.x")
    assert LocalStorage(settings).public_url("renditions/1/a.webp") == (
        "https://api.x/media/renditions/1/a.webp"
    )
    cdn = replace(settings, media_public_base_url="https://cdn.example.com/m")
    assert LocalStorage(cdn).public_url("renditions/1/a.webp") == (
        "https://cdn.example.com/m/renditions/1/a.webp"
    )
    with pytest.raises(ValueError):
        LocalStorage(replace(settings, secret_key=""))


def test_create_storage_picks_the_backend(tmp_path: Path) -> None:
    settings = Settings(secret_key=SECRET, media_root=tmp_path)
    assert isinstance(create_storage(settings), LocalStorage)
    assert isinstance(create_storage(replace(settings, storage_backend="s3")), S3Storage)
    with pytest.raises(ValueError):
        create_storage(replace(settings, storage_backend="ftp"))


# --------------------------------------------------------------------------- S3


@pytest.fixture
async def s3(moto_server: str, tmp_path: Path) -> AsyncIterator[S3Storage]:
    """S3Storage on a fresh bucket of the moto server."""
    settings = s3_settings(Settings(secret_key=SECRET, media_root=tmp_path), moto_server)
    storage = S3Storage(settings)
    await storage.ensure_bucket()
    await storage.ensure_bucket()  # idempotent
    try:
        yield storage
    finally:
        await storage.close()


@pytest.fixture
async def plain_http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


def decode_policy(fields: dict[str, str]) -> dict[str, object]:
    policy: dict[str, object] = json.loads(base64.b64decode(fields["policy"]))
    return policy


async def test_s3_presigned_post_upload_then_head(
    s3: S3Storage, plain_http: httpx.AsyncClient, tmp_path: Path
) -> None:
    key = "originals/77/1"
    target = await s3.upload_target(
        key, content_type="image/jpeg", max_bytes=50_000, declared_bytes=len(JPEG), expires_in=300
    )
    assert target.method == "POST"
    assert target.upload_id is None
    assert target.fields["key"] == key
    assert target.fields["Content-Type"] == "image/jpeg"
    # The policy we ask S3 to enforce (moto does not enforce it; real S3 does).
    conditions = decode_policy(target.fields)["conditions"]
    assert isinstance(conditions, list)
    assert ["content-length-range", 0, 50_000] in conditions
    assert {"Content-Type": "image/jpeg"} in conditions
    assert {"key": key} in conditions
    assert {"bucket": s3.bucket} in conditions

    # Form fields first, the file last (httpx sends `data` before `files`), from a page
    # on an allowed origin (the development default): the answer lets it read the
    # result, as S3's does (tests/s3_server.py makes moto add them).
    response = await plain_http.post(
        target.url,
        data=target.fields,
        files={"file": ("photo.jpg", JPEG, "image/jpeg")},
        headers={"Origin": "http://localhost:5173"},
    )
    assert response.status_code in (200, 201, 204), response.text
    assert response.headers["access-control-allow-origin"] == "http://localhost:5173"

    assert await s3.head(key) == ObjectInfo(size=len(JPEG), content_type="image/jpeg")
    destination = tmp_path / "photo.jpg"
    await s3.download_to(key, destination)
    assert destination.read_bytes() == JPEG
    assert await s3.read_head(key, 4) == JPEG[:4]
    assert await s3.read_head(key, 10**6) == JPEG


async def test_s3_multipart_upload_with_presigned_parts(
    s3: S3Storage, plain_http: httpx.AsyncClient, tmp_path: Path
) -> None:
    key = "originals/88/video"
    body = os.urandom(11 * MiB + 123)
    target = await s3.upload_target(
        key,
        content_type="video/mp4",
        max_bytes=50 * MiB,
        declared_bytes=len(body),
        expires_in=600,
        multipart=True,
        part_size=6 * MiB,
    )
    assert target.method == "PUT"
    assert target.upload_id
    assert target.part_size == 6 * MiB
    assert target.part_urls is not None and len(target.part_urls) == 2
    assert target.url == target.part_urls[0]

    # Upload the parts in reverse order: the server orders them itself.
    size = target.part_size
    for number in (2, 1):
        chunk = body[(number - 1) * size : number * size]
        response = await plain_http.put(target.part_urls[number - 1], content=chunk)
        assert response.status_code == 200, response.text
        assert response.headers["etag"]

    assert await s3.head(key) is None  # nothing visible before completion
    await s3.complete_multipart(key, target.upload_id, max_bytes=50 * MiB)
    assert await s3.head(key) == ObjectInfo(size=len(body), content_type="video/mp4")
    destination = tmp_path / "video.mp4"
    await s3.download_to(key, destination)
    assert hashlib.sha256(destination.read_bytes()).digest() == hashlib.sha256(body).digest()
    # A retried completion (at-least-once jobs) is a no-op.
    await s3.complete_multipart(key, target.upload_id)


async def test_s3_multipart_without_all_parts_stays_open(
    s3: S3Storage, plain_http: httpx.AsyncClient
) -> None:
    key = "originals/88/empty"
    target = await s3.upload_target(
        key,
        content_type="video/mp4",
        max_bytes=12 * MiB,
        declared_bytes=12 * MiB,
        expires_in=600,
        multipart=True,
    )
    assert target.upload_id is not None
    assert target.part_size == 8 * MiB and target.part_urls is not None
    assert len(target.part_urls) == 2
    # Completing too early (no parts, then one of two) leaves the upload open...
    with pytest.raises(IncompleteUpload):
        await s3.complete_multipart(key, target.upload_id, max_bytes=12 * MiB, exact=True)
    first = await plain_http.put(target.part_urls[0], content=bytes(8 * MiB))
    assert first.status_code == 200
    with pytest.raises(IncompleteUpload):
        await s3.complete_multipart(key, target.upload_id, max_bytes=12 * MiB, exact=True)
    assert await s3.head(key) is None
    # ...so the client can finish, and then it completes.
    second = await plain_http.put(target.part_urls[1], content=bytes(4 * MiB))
    assert second.status_code == 200
    await s3.complete_multipart(key, target.upload_id, max_bytes=12 * MiB, exact=True)
    info = await s3.head(key)
    assert info is not None and info.size == 12 * MiB
    await s3.abort_multipart(key, target.upload_id)  # aborting a finished upload is fine


async def test_s3_multipart_larger_than_allowed_is_aborted(
    s3: S3Storage, plain_http: httpx.AsyncClient
) -> None:
    key = "originals/88/huge"
    target = await s3.upload_target(
        key,
        content_type="video/mp4",
        max_bytes=6 * MiB,
        declared_bytes=6 * MiB,
        expires_in=600,
        multipart=True,
        part_size=5 * MiB,
    )
    assert target.part_urls is not None and target.upload_id is not None
    # The client sends more than it declared: a presigned part URL cannot stop it.
    for url in target.part_urls:
        response = await plain_http.put(url, content=b"v" * (5 * MiB))
        assert response.status_code == 200
    with pytest.raises(ObjectTooLarge):
        await s3.complete_multipart(key, target.upload_id, max_bytes=6 * MiB)
    assert await s3.head(key) is None
    with pytest.raises(UploadNotFound):
        await s3.complete_multipart(key, target.upload_id)


async def test_s3_multipart_argument_validation(s3: S3Storage) -> None:
    async def target(max_bytes: int, declared_bytes: int, part_size: int | None) -> None:
        await s3.upload_target(
            "originals/1/v",
            content_type="video/mp4",
            max_bytes=max_bytes,
            declared_bytes=declared_bytes,
            expires_in=600,
            multipart=part_size is not None,
            part_size=part_size,
        )

    with pytest.raises(ValueError):  # parts under 5 MiB
        await target(100 * MiB, 20 * MiB, MiB)
    with pytest.raises(ValueError):  # more than 10,000 parts
        await target(60 * 1024 * MiB, 60 * 1024 * MiB, 5 * MiB)
    with pytest.raises(ValueError):  # a single POST is at most 5 GiB
        await target(6 * 1024 * MiB, 1, None)


async def test_s3_put_sets_content_type_and_cache_control(s3: S3Storage, tmp_path: Path) -> None:
    await s3.put("renditions/1/2/feed.webp", b"webp-bytes", "image/webp")
    source = tmp_path / "poster.jpg"
    source.write_bytes(JPEG)
    await s3.put("renditions/1/2/poster.jpg", source, "image/jpeg")
    await s3.put("originals/1/2", b"raw", "image/jpeg", cache_immutable=False)

    client = await s3._s3()
    webp = await client.head_object(Bucket=s3.bucket, Key="renditions/1/2/feed.webp")
    assert webp["ContentType"] == "image/webp"
    assert webp["CacheControl"] == IMMUTABLE_CACHE_CONTROL
    poster = await client.head_object(Bucket=s3.bucket, Key="renditions/1/2/poster.jpg")
    assert poster["ContentType"] == "image/jpeg"
    assert poster["CacheControl"] == IMMUTABLE_CACHE_CONTROL
    assert poster["ContentLength"] == len(JPEG)
    original = await client.head_object(Bucket=s3.bucket, Key="originals/1/2")
    assert "CacheControl" not in original


async def test_s3_missing_and_empty_objects(s3: S3Storage, tmp_path: Path) -> None:
    assert await s3.head("originals/404/1") is None
    with pytest.raises(ObjectNotFound):
        await s3.read_head("originals/404/1", 16)
    with pytest.raises(ObjectNotFound):
        await s3.download_to("originals/404/1", tmp_path / "missing")
    assert not (tmp_path / "missing").exists()
    await s3.put("originals/1/empty", b"", "image/jpeg")
    assert await s3.head("originals/1/empty") == ObjectInfo(size=0, content_type="image/jpeg")
    assert await s3.read_head("originals/1/empty", 16) == b""


async def test_s3_delete_many_is_idempotent(s3: S3Storage) -> None:
    keys = [f"renditions/9/{n}/feed.webp" for n in range(3)]
    for key in keys:
        await s3.put(key, b"x", "image/webp")
    await s3.delete_many([*keys, "renditions/9/404/feed.webp", keys[0]])
    await s3.delete_many(keys)
    await s3.delete_many([])
    for key in keys:
        assert await s3.head(key) is None


async def test_s3_delete_many_in_batches(s3: S3Storage) -> None:
    keys = [f"renditions/batch/{n}" for n in range(1005)]
    await asyncio.gather(*(s3.put(key, b"", "image/webp") for key in keys[:5]))
    await s3.delete_many(keys)  # more than one DeleteObjects call
    for key in keys[:5]:
        assert await s3.head(key) is None


async def test_s3_delete_prefix(s3: S3Storage) -> None:
    for key in ("renditions/1/2/a.webp", "renditions/1/2/b.webp", "renditions/1/20/a.webp"):
        await s3.put(key, b"data", "image/webp")
    pending = await s3.upload_target(
        "renditions/1/2/clip.mp4",
        content_type="video/mp4",
        max_bytes=20 * MiB,
        declared_bytes=10 * MiB,
        expires_in=600,
        multipart=True,
    )
    assert pending.upload_id is not None
    await s3.delete_prefix("renditions/1/2")
    await s3.delete_prefix("renditions/1/2/")  # idempotent
    assert await s3.head("renditions/1/2/a.webp") is None
    assert await s3.head("renditions/1/2/b.webp") is None
    assert await s3.head("renditions/1/20/a.webp") is not None
    # The pending multipart upload under the prefix was aborted too.
    with pytest.raises(UploadNotFound):
        await s3.complete_multipart("renditions/1/2/clip.mp4", pending.upload_id)
    with pytest.raises(InvalidKeyError):
        await s3.delete_prefix("")


async def test_s3_close_and_reopen(s3: S3Storage) -> None:
    await s3.put("originals/1/3", b"abc", "image/jpeg")
    await s3.close()
    await s3.close()  # idempotent
    # The client is reopened lazily on next use.
    assert await s3.head("originals/1/3") == ObjectInfo(size=3, content_type="image/jpeg")


def test_s3_public_url(tmp_path: Path) -> None:
    base = Settings(
        secret_key=SECRET, media_root=tmp_path, s3_bucket="media", s3_region="eu-west-1"
    )
    key = "renditions/1/a.webp"
    cdn = replace(base, media_public_base_url="https://cdn.example.com")
    assert S3Storage(cdn).public_url(key) == f"https://cdn.example.com/{key}"
    endpoint = replace(base, s3_endpoint_url="http://127.0.0.1:9000/")
    assert S3Storage(endpoint).public_url(key) == f"http://127.0.0.1:9000/media/{key}"
    assert S3Storage(base).public_url(key) == f"https://media.s3.eu-west-1.amazonaws.com/{key}"
    with pytest.raises(InvalidKeyError):
        S3Storage(base).public_url("../x")


def test_bucket_public_read_policy(tmp_path: Path) -> None:
    settings = Settings(secret_key=SECRET, media_root=tmp_path, s3_bucket="media")
    # Anyone may GET what is under renditions/, nothing else (no originals, no listing).
    assert bucket_public_read_policy(settings) == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PublicReadRenditions",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": "arn:aws:s3:::media/renditions/*",
            }
        ],
    }
    # Behind a CDN, the CDN's origin access reads the bucket: no public policy.
    cdn = replace(settings, media_public_base_url="https://cdn.example.com")
    assert bucket_public_read_policy(cdn) is None


async def test_s3_bucket_lets_anyone_read_renditions_and_no_one_originals(
    s3: S3Storage, plain_http: httpx.AsyncClient
) -> None:
    client = await s3._s3()
    applied = await client.get_bucket_policy(Bucket=s3.bucket)
    assert json.loads(applied["Policy"]) == bucket_public_read_policy(Settings(s3_bucket=s3.bucket))
    await s3.put("renditions/5/6/feed.webp", b"webp-bytes", "image/webp")
    await s3.put("originals/5/6", JPEG, "image/jpeg", cache_immutable=False)

    # Unsigned, as an <img> reads it: the rendition by its public URL...
    rendition = await plain_http.get(s3.public_url("renditions/5/6/feed.webp"))
    assert rendition.status_code == 200, rendition.text
    assert rendition.content == b"webp-bytes"
    assert rendition.headers["cache-control"] == IMMUTABLE_CACHE_CONTROL
    # ...but never the original. (moto checks anonymous object reads only, so the policy's
    # refusing a listing, which S3 does, is not shown here.)
    original = await plain_http.get(f"{s3._endpoint}/{s3.bucket}/originals/5/6")
    assert original.status_code == 403, original.text


def test_print_policy_needs_s3_bucket_and_no_cdn(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("ENV", "S3_BUCKET", "MEDIA_PUBLIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    # Unset: the default bucket name is never assumed to be the operator's.
    with pytest.raises(SystemExit, match="set S3_BUCKET") as unset:
        print_policy()
    assert unset.value.code != 0
    monkeypatch.setenv("S3_BUCKET", "Not_A_Bucket")
    with pytest.raises(SystemExit, match="not an S3 bucket name"):
        print_policy()
    monkeypatch.setenv("S3_BUCKET", "instagraph-media")
    monkeypatch.setenv("ENV", "prod")  # a typo
    with pytest.raises(SystemExit, match="ENV must be"):
        print_policy()
    monkeypatch.setenv("ENV", "production")
    monkeypatch.setenv("MEDIA_PUBLIC_BASE_URL", "https://cdn.example.com")
    with pytest.raises(SystemExit, match="origin access"):
        print_policy()
    assert capsys.readouterr().out == ""
    monkeypatch.delenv("MEDIA_PUBLIC_BASE_URL")
    print_policy()
    printed = json.loads(capsys.readouterr().out)
    assert printed == bucket_public_read_policy(Settings(s3_bucket="instagraph-media"))


def print_policy_command(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra.storage", "--print-policy"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_print_policy_from_the_command_line() -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("ENV", "S3_BUCKET", "MEDIA_PUBLIC_BASE_URL")
    }
    unset = print_policy_command(env)
    assert unset.returncode != 0
    assert "set S3_BUCKET" in unset.stderr
    assert not unset.stdout
    configured = print_policy_command({**env, "ENV": "production", "S3_BUCKET": "media"})
    assert configured.returncode == 0, configured.stderr
    [statement] = json.loads(configured.stdout)["Statement"]
    assert statement["Resource"] == "arn:aws:s3:::media/renditions/*"
