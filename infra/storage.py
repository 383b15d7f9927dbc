"""Blob storage for media: the local filesystem or an S3-compatible store, one interface.

Keys are relative strings such as ``originals/123/456`` or
``renditions/123/456/feed.webp``; the database stores keys, never URLs, and
``public_url`` builds a URL from the configured base, so moving to a CDN changes
no row. Keys are validated against a strict alphabet (lower-case letters, digits,
``_ . -`` and ``/`` between segments that start with a letter or digit), which
makes path traversal impossible on the local backend.

Clients upload straight to storage, never through the API process's memory:

* ``LocalStorage`` (development, tests, single-box installs) hands out
  ``PUT {public_base_url}/uploads/{key}?ct=&max=&exp=&sig=`` URLs signed with
  HMAC-SHA256 over (key, content type, size limit, expiry). The routes from
  ``local_storage_routes`` receive them (streamed to a temporary file, moved into
  place atomically) and serve renditions under ``/media``; originals are never
  served.
* ``S3Storage`` (aioboto3; AWS, MinIO, R2, moto) hands out a presigned POST whose
  policy limits size, content type and key, or, for large videos, a multipart
  upload with one presigned ``UploadPart`` URL per part. ``complete_multipart``
  lists the parts itself: the client's word about its parts is never needed.
  A browser uploads there cross-origin: the bucket needs the CORS rules
  ``bucket_cors_rules`` builds from CORS_ALLOW_ORIGINS. Without a CDN in front
  (MEDIA_PUBLIC_BASE_URL), renditions are read from the bucket's own URLs, unsigned:
  the bucket needs the policy ``bucket_public_read_policy`` builds, which lets anyone
  read ``renditions/`` and nothing else. For a real bucket, ``python -m infra.storage
  --print-cors`` and ``--print-policy`` print them for ``aws s3api put-bucket-cors``
  and ``put-bucket-policy`` (docs/front-end.md); ``ensure_bucket``, which only the
  tests call, applies both to moto's buckets.

Neither an S3 POST policy nor a multipart upload is a substitute for the worker's
own checks (size, magic bytes): S3-compatible stores differ in what they
enforce, and a presigned ``UploadPart`` URL carries no size limit at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import hmac
import json
import logging
import math
import mimetypes
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterable, Awaitable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlencode

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

from infra.cors import PREFLIGHT_MAX_AGE_SECONDS, OriginList
from settings import Settings, cors_origins_from_environment, env_from_environment

log = logging.getLogger(__name__)

MiB = 1024 * 1024
GiB = 1024 * MiB

IMMUTABLE_CACHE_CONTROL = "public, max-age=31536000, immutable"
MUTABLE_CACHE_CONTROL = "public, no-cache"
# Only keys under this prefix are ever served publicly by the local media route.
PUBLIC_PREFIX = "renditions/"

MAX_KEY_LENGTH = 512
# S3 limits: presigned URLs live at most 7 days; a single PUT/POST object is at most
# 5 GiB; multipart parts are 5 MiB to 5 GiB (the last one may be smaller), at most
# 10,000 of them.
MAX_EXPIRES_IN = 7 * 24 * 3600
MAX_SINGLE_UPLOAD_BYTES = 5 * GiB
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
DEFAULT_PART_SIZE = 8 * MiB

_CHUNK = MiB
_DELETE_BATCH = 1000  # DeleteObjects takes at most 1,000 keys
_KEY_RE = re.compile(r"[a-z0-9][a-z0-9_.-]*(?:/[a-z0-9][a-z0-9_.-]*)*")
_CONTENT_TYPE_RE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)
_UPLOAD_SIGNING_PURPOSE = b"instagraph/storage/local-upload/v1"


# --------------------------------------------------------------------------- errors


class StorageError(Exception):
    """A storage operation failed for a reason the caller may want to handle."""


class InvalidKeyError(StorageError, ValueError):
    """A key outside the allowed alphabet (or one that tries to traverse paths)."""


class ObjectNotFound(StorageError, FileNotFoundError):
    """The object does not exist."""


class ObjectTooLarge(StorageError):
    """An upload exceeded the size it was allowed."""


class UploadNotFound(StorageError):
    """A multipart upload id the store does not know (aborted, expired or never made)."""


class IncompleteUpload(StorageError):
    """A multipart upload that cannot be completed (no parts, or parts S3 refuses)."""


# --------------------------------------------------------------------------- types


@dataclass(frozen=True)
class UploadTarget:
    """Where and how a client uploads one object.

    ``method == "PUT"``: send the body to ``url`` with ``headers``.
    ``method == "POST"``: send a multipart/form-data body to ``url`` with every entry
    of ``fields`` first and the file last (field name ``file``).
    Multipart (``upload_id`` set): PUT part *n* (1-based) of ``part_size`` bytes (the
    last one may be shorter) to ``part_urls[n - 1]``; ``url`` is the first part's URL.
    """

    method: str
    url: str
    headers: dict[str, str]
    fields: dict[str, str]
    expires_at: datetime
    part_size: int | None = None
    part_urls: list[str] | None = None
    upload_id: str | None = None


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    content_type: str | None


class Storage(Protocol):
    """What the API and the workers need from blob storage."""

    async def upload_target(
        self,
        key: str,
        *,
        content_type: str,
        max_bytes: int,
        declared_bytes: int,
        expires_in: int,
        multipart: bool = False,
        part_size: int | None = None,
    ) -> UploadTarget: ...

    async def complete_multipart(
        self, key: str, upload_id: str, *, max_bytes: int | None = None, exact: bool = False
    ) -> None: ...

    async def abort_multipart(self, key: str, upload_id: str) -> None: ...

    async def head(self, key: str) -> ObjectInfo | None: ...

    async def download_to(self, key: str, path: Path) -> str | None:
        """Stream the object to ``path``; return the ETag of the bytes read when the
        store gives one (S3), else None."""
        ...

    async def copy_if_match(self, source: str, dest: str, etag: str) -> str | None:
        """Copy ``source`` to ``dest`` in the store if ``source``'s ETag is still ``etag``;
        return the copy's ETag, or None when the condition failed or ``source`` is gone
        (S3 only: the local store never needs it, docs/uploads-hardening.md)."""
        ...

    async def read_head(self, key: str, n: int) -> bytes: ...

    async def put(
        self,
        key: str,
        data: bytes | Path,
        content_type: str,
        cache_immutable: bool = True,
        *,
        cache_control: str | None = None,
    ) -> None:
        """Store an object; public renditions are cached for a year (immutable) unless
        `cache_control` says otherwise (a story's, for no longer than it is shown)."""
        ...

    async def delete_many(self, keys: list[str]) -> None: ...

    async def delete_prefix(self, prefix: str) -> None: ...

    def public_url(self, key: str) -> str: ...

    async def close(self) -> None: ...


def create_storage(settings: Settings) -> Storage:
    """The backend ``settings.storage_backend`` names ('local' or 's3')."""
    if settings.storage_backend == "local":
        return LocalStorage(settings)
    if settings.storage_backend == "s3":
        return S3Storage(settings)
    raise ValueError(f"storage_backend must be 'local' or 's3', got {settings.storage_backend!r}")


# --------------------------------------------------------------------------- validation


def is_valid_key(key: object) -> bool:
    return (
        isinstance(key, str)
        and 0 < len(key) <= MAX_KEY_LENGTH
        and ".." not in key
        and _KEY_RE.fullmatch(key) is not None
    )


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid storage key, else raise InvalidKeyError."""
    if not is_valid_key(key):
        raise InvalidKeyError(f"invalid storage key: {key!r}")
    return key


def _normalize_prefix(prefix: str) -> str:
    """A prefix names a "directory": 'a/b' and 'a/b/' both mean everything under 'a/b/'.

    Never empty, so a bug cannot wipe the whole store.
    """
    return validate_key(prefix.rstrip("/")) + "/"


def _validate_content_type(content_type: str) -> str:
    if not isinstance(content_type, str) or not _CONTENT_TYPE_RE.fullmatch(content_type):
        raise ValueError(f"invalid content type: {content_type!r}")
    return content_type


def _validate_upload(
    *, content_type: str, max_bytes: int, declared_bytes: int, expires_in: int
) -> None:
    _validate_content_type(content_type)
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    if not 0 <= declared_bytes <= max_bytes:
        raise ValueError("declared_bytes must be between 0 and max_bytes")
    if not 0 < expires_in <= MAX_EXPIRES_IN:
        raise ValueError(f"expires_in must be between 1 and {MAX_EXPIRES_IN} seconds")


def choose_part_size(declared_bytes: int, part_size: int | None = None) -> int:
    """The part size of a multipart upload of ``declared_bytes`` bytes.

    An explicit ``part_size`` must be 5 MiB..5 GiB and need at most 10,000 parts
    (ValueError otherwise); with None, 8 MiB, grown (in whole MiB) to fit 10,000 parts.
    """
    if declared_bytes <= 0:
        raise ValueError("a multipart upload needs declared_bytes > 0")
    if part_size is None:
        needed = math.ceil(declared_bytes / MAX_PARTS)
        part_size = max(DEFAULT_PART_SIZE, math.ceil(needed / MiB) * MiB)
    if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
        raise ValueError(f"part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes")
    if math.ceil(declared_bytes / part_size) > MAX_PARTS:
        raise ValueError(f"{declared_bytes} bytes in parts of {part_size} exceed {MAX_PARTS} parts")
    return part_size


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison of an If-None-Match header against our ETag."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(
        candidate.strip().removeprefix("W/") == opaque for candidate in if_none_match.split(",")
    )


# --------------------------------------------------------------------------- local


@dataclass(frozen=True)
class StagedObject:
    """An upload written to a temporary file of the local store, under no key yet."""

    path: Path
    etag: str
    size: int


@dataclass(frozen=True)
class _LocalObject:
    path: Path
    stat: os.stat_result
    content_type: str
    etag: str
    cache_control: str


class LocalStorage:
    """Objects as files under ``settings.media_root``.

    Layout: the object for key ``k`` is ``{root}/k``; its metadata (content type,
    ETag, Cache-Control) is ``{root}/.meta/k.json``; in-flight writes live in
    ``{root}/.tmp``. Keys never have a segment starting with '.', so neither
    directory can collide with an object. Every write goes to a temporary file
    that is fsynced and then ``os.replace``d into place, so readers never see
    half an object.
    """

    def __init__(self, settings: Settings) -> None:
        if not settings.secret_key:
            raise ValueError("LocalStorage needs settings.secret_key to sign upload URLs")
        self.root = Path(settings.media_root).resolve()
        self._meta_root = self.root / ".meta"
        self._tmp_root = self.root / ".tmp"
        for directory in (self.root, self._meta_root, self._tmp_root):
            directory.mkdir(parents=True, exist_ok=True)
        base = settings.public_base_url.rstrip("/")
        self._upload_base = base + UPLOADS_PREFIX.rstrip("/")
        self._media_base = (settings.media_public_base_url or base + MEDIA_PREFIX).rstrip("/")
        self._signing_key = hmac.new(
            settings.secret_key.encode(), _UPLOAD_SIGNING_PURPOSE, hashlib.sha256
        ).digest()
        # How long the upload route waits for a body (docs/uploads-hardening.md).
        self.body_timeout_seconds = float(settings.upload_body_timeout_seconds)
        self.min_bytes_per_second = max(1, settings.upload_min_bytes_per_second)

    # ---- signing

    def _sign(self, key: str, content_type: str, max_bytes: int, expires: int) -> str:
        # Neither a key nor a content type can contain a newline: the message is unambiguous.
        message = f"PUT\n{key}\n{content_type}\n{max_bytes}\n{expires}".encode()
        return hmac.new(self._signing_key, message, hashlib.sha256).hexdigest()

    def verify_upload(
        self, key: str, content_type: str, max_bytes: int, expires: int, signature: str
    ) -> bool:
        """Whether ``signature`` is ours for these values (constant-time; expiry not checked)."""
        expected = self._sign(key, content_type, max_bytes, expires)
        return hmac.compare_digest(expected.encode(), signature.encode())

    async def upload_target(
        self,
        key: str,
        *,
        content_type: str,
        max_bytes: int,
        declared_bytes: int,
        expires_in: int,
        multipart: bool = False,
        part_size: int | None = None,
    ) -> UploadTarget:
        """A signed PUT URL. The local backend has no multipart uploads: with
        ``multipart=True`` it still answers one streamed PUT (the route never
        buffers a body in memory), so ``upload_id`` is always None."""
        validate_key(key)
        _validate_upload(
            content_type=content_type,
            max_bytes=max_bytes,
            declared_bytes=declared_bytes,
            expires_in=expires_in,
        )
        if multipart:
            choose_part_size(declared_bytes, part_size)  # same argument checks as S3
        # The URL stops working once the clock passes `expires` (whole seconds).
        expires = int(time.time() + expires_in)
        query = urlencode(
            {
                "ct": content_type,
                "max": str(max_bytes),
                "exp": str(expires),
                "sig": self._sign(key, content_type, max_bytes, expires),
            }
        )
        return UploadTarget(
            method="PUT",
            url=f"{self._upload_base}/{key}?{query}",
            headers={"Content-Type": content_type},
            fields={},
            expires_at=datetime.fromtimestamp(expires, UTC),
        )

    async def complete_multipart(
        self, key: str, upload_id: str, *, max_bytes: int | None = None, exact: bool = False
    ) -> None:
        raise StorageError("the local storage backend has no multipart uploads")

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Nothing to abort: local upload targets are single PUTs."""
        validate_key(key)

    # ---- paths and low-level file operations (blocking: run them in a thread)

    def _object_path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _meta_path(self, key: str) -> Path:
        return self._meta_root / f"{validate_key(key)}.json"

    def _new_temp(self) -> tuple[int, Path]:
        fd, name = tempfile.mkstemp(dir=self._tmp_root, prefix="w-", suffix=".tmp")
        os.fchmod(fd, 0o644)  # readable like any other file the process writes
        return fd, Path(name)

    @staticmethod
    def _install(tmp: Path, dest: Path) -> None:
        """Atomically move ``tmp`` to ``dest``, creating parents. A concurrent delete
        may prune an empty parent between mkdir and replace: retry then."""
        for attempt in range(3):
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(tmp, dest)
                return
            except FileNotFoundError:
                if attempt == 2 or not tmp.exists():
                    raise

    def _stage_meta(self, *, content_type: str, etag: str, cache_control: str) -> Path:
        """The metadata written to a temporary file (the step that needs disk space)."""
        fd, tmp = self._new_temp()
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(
                    {"content_type": content_type, "etag": etag, "cache_control": cache_control},
                    fh,
                )
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def _commit(
        self, key: str, tmp: Path, *, content_type: str, etag: str, cache_control: str
    ) -> None:
        """Metadata first, then the object: an object is never visible without it. If the
        object cannot be moved into place, the metadata goes back to what it was (the
        old object keeps its own), so a failed write changes nothing; ``tmp`` is then
        still the caller's to remove."""
        meta_tmp = self._stage_meta(
            content_type=content_type, etag=etag, cache_control=cache_control
        )
        meta_path = self._meta_path(key)
        # The old metadata, kept under a temporary name by a hard link (no data to copy).
        backup: Path | None = self._tmp_root / f"{meta_tmp.name}.old"
        try:
            os.link(meta_path, self._tmp_root / f"{meta_tmp.name}.old")
        except FileNotFoundError:
            backup = None
        except BaseException:
            meta_tmp.unlink(missing_ok=True)
            raise
        try:
            try:
                self._install(meta_tmp, meta_path)
            except BaseException:
                meta_tmp.unlink(missing_ok=True)
                raise
            try:
                self._install(tmp, self._object_path(key))
            except BaseException:
                if backup is not None:
                    os.replace(backup, meta_path)
                    backup = None
                else:
                    meta_path.unlink(missing_ok=True)
                raise
        finally:
            if backup is not None:
                backup.unlink(missing_ok=True)

    def _read_meta(self, key: str) -> dict[str, str]:
        try:
            raw = json.loads(self._meta_path(key).read_bytes())
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in raw.items() if isinstance(v, str)} if isinstance(raw, dict) else {}

    def _prune_empty_parents(self, path: Path, stop: Path) -> None:
        parent = path.parent
        while parent != stop and parent.is_relative_to(stop):
            try:
                parent.rmdir()
            except OSError:  # not empty (or already gone): stop climbing
                return
            parent = parent.parent

    def _stat_object(self, key: str) -> _LocalObject | None:
        path = self._object_path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        meta = self._read_meta(key)
        content_type = (
            meta.get("content_type") or mimetypes.guess_type(key)[0] or "application/octet-stream"
        )
        # Without metadata, the same ETag FileResponse would compute from the stat.
        fallback = hashlib.md5(f"{st.st_mtime}-{st.st_size}".encode(), usedforsecurity=False)
        return _LocalObject(
            path=path,
            stat=st,
            content_type=content_type,
            etag=meta.get("etag") or f'"{fallback.hexdigest()}"',
            cache_control=meta.get("cache_control") or MUTABLE_CACHE_CONTROL,
        )

    # ---- public API

    async def write_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str,
        max_bytes: int,
        cache_immutable: bool = False,
    ) -> str:
        """Stream ``chunks`` into the object ``key``; return its ETag (quoted MD5).

        Stops at the first byte past ``max_bytes`` with ObjectTooLarge, leaving
        nothing behind (the temporary file is removed; the old object, if any, stays).
        """
        validate_key(key)
        _validate_content_type(content_type)
        staged = await self.stage(chunks, max_bytes=max_bytes)
        try:
            await self.commit_staged(
                key, staged, content_type=content_type, cache_immutable=cache_immutable
            )
        except BaseException:
            await self.discard_staged(staged)
            raise
        return staged.etag

    async def stage(self, chunks: AsyncIterable[bytes], *, max_bytes: int) -> StagedObject:
        """Stream ``chunks`` into a new temporary file (fsynced), visible under no key.

        Raises ObjectTooLarge at the first byte past ``max_bytes``, and whatever the
        iterator raises (a client that went away, a body read that timed out); either
        way the temporary file is removed. The caller commits the result
        (``commit_staged``) or discards it (``discard_staged``, always safe to call).
        """
        fd, tmp = await asyncio.to_thread(self._new_temp)
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        try:
            with os.fdopen(fd, "wb") as fh:

                def flush(data: bytes) -> None:
                    fh.write(data)
                    digest.update(data)

                pending: list[bytes] = []
                pending_size = 0
                async for chunk in chunks:
                    if not chunk:
                        continue
                    size += len(chunk)
                    if size > max_bytes:
                        raise ObjectTooLarge(f"upload exceeds {max_bytes} bytes")
                    pending.append(chunk)
                    pending_size += len(chunk)
                    if pending_size >= _CHUNK:
                        await asyncio.to_thread(flush, b"".join(pending))
                        pending.clear()
                        pending_size = 0

                def finish() -> None:
                    if pending:
                        flush(b"".join(pending))
                    fh.flush()
                    os.fsync(fh.fileno())

                await asyncio.to_thread(finish)
        except BaseException:
            # Synchronous: must also run when the request task is cancelled.
            tmp.unlink(missing_ok=True)
            raise
        return StagedObject(path=tmp, etag=f'"{digest.hexdigest()}"', size=size)

    async def commit_staged(
        self,
        key: str,
        staged: StagedObject,
        *,
        content_type: str,
        cache_immutable: bool = False,
    ) -> None:
        """Move a staged file into place as the object ``key`` (atomically: a reader
        sees the old object or the new one, never part of one)."""
        validate_key(key)
        _validate_content_type(content_type)
        cache_control = IMMUTABLE_CACHE_CONTROL if cache_immutable else MUTABLE_CACHE_CONTROL
        await asyncio.to_thread(
            self._commit,
            key,
            staged.path,
            content_type=content_type,
            etag=staged.etag,
            cache_control=cache_control,
        )

    async def discard_staged(self, staged: StagedObject) -> None:
        """Remove a staged file that was not committed. Never call it after a commit:
        the temporary name is free again then, and may be another upload's."""
        await asyncio.to_thread(staged.path.unlink, missing_ok=True)

    async def put(
        self,
        key: str,
        data: bytes | Path,
        content_type: str,
        cache_immutable: bool = True,
        *,
        cache_control: str | None = None,
    ) -> None:
        validate_key(key)
        _validate_content_type(content_type)
        if cache_control is None:
            cache_control = IMMUTABLE_CACHE_CONTROL if cache_immutable else MUTABLE_CACHE_CONTROL

        def write() -> None:
            fd, tmp = self._new_temp()
            try:
                digest = hashlib.md5(usedforsecurity=False)
                with os.fdopen(fd, "wb") as out:
                    if isinstance(data, Path):
                        with data.open("rb") as src:
                            while block := src.read(_CHUNK):
                                out.write(block)
                                digest.update(block)
                    else:
                        out.write(data)
                        digest.update(data)
                    out.flush()
                    os.fsync(out.fileno())
                self._commit(
                    key,
                    tmp,
                    content_type=content_type,
                    etag=f'"{digest.hexdigest()}"',
                    cache_control=cache_control,
                )
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise

        await asyncio.to_thread(write)

    async def head(self, key: str) -> ObjectInfo | None:
        obj = await asyncio.to_thread(self._stat_object, key)
        if obj is None:
            return None
        return ObjectInfo(size=obj.stat.st_size, content_type=obj.content_type)

    async def stat_for_serving(self, key: str) -> _LocalObject | None:
        return await asyncio.to_thread(self._stat_object, key)

    async def download_to(self, key: str, path: Path) -> str | None:
        source = self._object_path(key)

        def copy() -> None:
            try:
                shutil.copyfile(source, path)  # streams (sendfile where available)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
                if not source.is_file():
                    raise ObjectNotFound(key) from exc
                raise

        await asyncio.to_thread(copy)
        return None

    async def copy_if_match(self, source: str, dest: str, etag: str) -> str | None:
        # The local route's gate closes a target once its post moves on: originals stay
        # where they were uploaded (workers.media copies them on S3 only).
        raise NotImplementedError("the local store keeps originals at their upload key")

    async def read_head(self, key: str, n: int) -> bytes:
        source = self._object_path(key)
        if n <= 0:
            if not await asyncio.to_thread(source.is_file):
                raise ObjectNotFound(key)
            return b""

        def read() -> bytes:
            try:
                with source.open("rb") as fh:
                    return fh.read(n)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
                raise ObjectNotFound(key) from exc

        return await asyncio.to_thread(read)

    async def delete_many(self, keys: list[str]) -> None:
        unique = list(dict.fromkeys(validate_key(key) for key in keys))

        def delete() -> None:
            for key in unique:
                for path, stop in (
                    (self._object_path(key), self.root),
                    (self._meta_path(key), self._meta_root),
                ):
                    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                        path.unlink()
                    self._prune_empty_parents(path, stop)

        if unique:
            await asyncio.to_thread(delete)

    async def delete_prefix(self, prefix: str) -> None:
        """Delete every object whose key starts with ``prefix`` + '/' (a "directory")."""
        base = _normalize_prefix(prefix).rstrip("/")

        def delete() -> None:
            for directory, stop in (
                (self.root / base, self.root),
                (self._meta_root / base, self._meta_root),
            ):
                if directory.is_dir() and not directory.is_symlink():
                    shutil.rmtree(directory, ignore_errors=True)
                self._prune_empty_parents(directory, stop)

        await asyncio.to_thread(delete)

    def public_url(self, key: str) -> str:
        return f"{self._media_base}/{validate_key(key)}"

    async def close(self) -> None:
        return None


# The local backend's routes (`local_storage_routes`) and their methods; the upload URLs
# and media URLs `LocalStorage` hands out point at them, and infra/cors.py answers CORS
# on them with these methods.
UPLOADS_PREFIX = "/uploads/"
UPLOADS_METHODS = ("PUT",)
MEDIA_PREFIX = "/media/"
MEDIA_METHODS = ("GET", "HEAD")
LOCAL_STORAGE_ROUTE_METHODS: dict[str, tuple[str, ...]] = {
    UPLOADS_PREFIX: UPLOADS_METHODS,
    MEDIA_PREFIX: MEDIA_METHODS,
}


class UploadGate(Protocol):
    """Whether an upload target still takes a body: the local route asks before it
    reads one, and again around the moment it moves the finished body into place.

    ``hold(request, key)`` yields the declared size (bytes) of the media item whose
    upload key is ``key`` while its owner (post or story) is PENDING, else None; and
    keeps that answer true until the block exits (domain/uploads.py holds a row lock
    on the owner), so completeUpload or deletePost cannot slip in between the check
    and the rename.
    """

    def hold(
        self, request: Request, key: str
    ) -> contextlib.AbstractAsyncContextManager[int | None]: ...


class BodyTimedOut(Exception):
    """An upload body stalled, or came slower than the minimum rate."""


async def _paced(
    chunks: AsyncIterable[bytes], *, idle_seconds: float, deadline: float
) -> AsyncIterable[bytes]:
    """``chunks``, each within ``idle_seconds`` of the last and all before ``deadline``
    (the event loop's clock), else BodyTimedOut: a client that declares a body and
    sends none, or dribbles it, cannot hold a connection and a temporary file."""
    loop = asyncio.get_running_loop()
    iterator = aiter(chunks)
    while True:
        wait = min(idle_seconds, deadline - loop.time())
        try:
            if wait <= 0:
                raise TimeoutError
            async with asyncio.timeout(wait):
                chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError as exc:
            raise BodyTimedOut from exc
        yield chunk


def _refuse(status: int, reason: str, *, close: bool = False) -> Response:
    """A plain-text refusal; ``close`` when the body was not read to its end, so the
    connection cannot be reused (its unread bytes would be read as the next request)."""
    headers = {"Connection": "close"} if close else None
    return PlainTextResponse(reason, status_code=status, headers=headers)


_DIGITS = re.compile(r"[0-9]{1,19}")

# The disk is full (or the process's quota is spent): 507 Insufficient Storage.
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def _store_failed(key: str, exc: OSError, *, close: bool = False) -> Response:
    """The local store could not write an upload (nothing of it is left, the old object
    and its metadata are as they were): 507 when the disk is full, else 503. The client
    may send the body again later."""
    log.warning("upload %s not stored: %r", key, exc)
    if exc.errno in _NO_SPACE:
        return _refuse(507, "the store is out of space; try again later", close=close)
    return _refuse(503, "the store could not save the upload; try again later", close=close)


def local_storage_routes(storage: LocalStorage, *, gate: UploadGate | None = None) -> list[Route]:
    """``PUT /uploads/{key}`` (signed uploads) and ``GET|HEAD /media/{key}`` (renditions).

    With a ``gate`` (the app passes one; docs/uploads-hardening.md), a PUT is taken only
    while the target's post or story is PENDING and only with a Content-Length equal to
    its declared size; without one (a bare store, as in tests of the store alone), any
    validly signed PUT within the URL's size limit is taken.
    """

    async def upload(request: Request) -> Response:
        key = request.path_params["key"]
        if not is_valid_key(key):
            return _refuse(404, "invalid key", close=True)
        query = request.query_params
        content_type = query.get("ct", "")
        signature = query.get("sig", "")
        try:
            max_bytes = int(query.get("max", ""))
            expires = int(query.get("exp", ""))
        except ValueError:
            return _refuse(403, "malformed upload URL", close=True)
        if not signature or not storage.verify_upload(
            key, content_type, max_bytes, expires, signature
        ):
            return _refuse(403, "invalid signature", close=True)
        if time.time() > expires:
            return _refuse(403, "upload URL expired", close=True)
        sent_type = request.headers.get("content-type", "").strip()
        if sent_type.lower() != content_type.lower():
            return _refuse(403, "Content-Type does not match the upload URL", close=True)
        # A body of known length only: a chunked body could be sent forever, and its size
        # is not known until its end.
        declared_header = request.headers.get("content-length")
        if declared_header is None or "transfer-encoding" in request.headers:
            return _refuse(411, "Content-Length required (and no Transfer-Encoding)", close=True)
        if not _DIGITS.fullmatch(declared_header.strip()):
            return _refuse(400, "malformed Content-Length", close=True)
        declared = int(declared_header)
        if declared > max_bytes:
            return _refuse(413, "body too large", close=True)
        if gate is not None:
            try:
                async with gate.hold(request, key) as expected:
                    pass
            except Exception:
                log.exception("upload gate unavailable for %s", key)
                return _refuse(503, "try again later", close=True)
            if expected is None:
                return _refuse(409, "this upload target is closed", close=True)
            if declared != expected:
                return _refuse(400, "Content-Length must equal the declared byteSize", close=True)
        loop = asyncio.get_running_loop()
        idle = storage.body_timeout_seconds
        body = _paced(
            request.stream(),
            idle_seconds=idle,
            deadline=loop.time() + idle + declared / storage.min_bytes_per_second,
        )
        try:
            staged = await storage.stage(body, max_bytes=declared)
        except ObjectTooLarge:
            return _refuse(413, "body longer than its Content-Length", close=True)
        except BodyTimedOut:
            return _refuse(408, "body not received in time", close=True)
        except ClientDisconnect:
            return _refuse(400, "client disconnected", close=True)
        except OSError as exc:  # the disk (full, quota, I/O): stage() removed its file
            return _store_failed(key, exc, close=True)
        committed = False
        try:
            if staged.size != declared:  # the server frames bodies by Content-Length
                return _refuse(400, "body shorter than its Content-Length", close=True)
            if gate is None:
                try:
                    await storage.commit_staged(key, staged, content_type=content_type)
                except OSError as exc:
                    return _store_failed(key, exc)
                committed = True
            else:
                # The gate's failures (PostgreSQL) and the store's (the disk) apart: a
                # commit that fails inside the gate rolls its transaction back and is
                # answered as the store's failure, never as the gate's.
                store_failure: OSError | None = None
                try:
                    async with gate.hold(request, key) as expected:
                        if expected == declared:
                            try:
                                await storage.commit_staged(key, staged, content_type=content_type)
                            except OSError as exc:
                                store_failure = exc
                            else:
                                committed = True
                except Exception:
                    if not committed:
                        log.exception("upload gate unavailable for %s", key)
                        return _refuse(503, "try again later")
                    # The object is in place; only releasing the gate's lock failed.
                    log.warning("upload gate release failed for %s", key, exc_info=True)
                if store_failure is not None:
                    return _store_failed(key, store_failure)
                if not committed:
                    return _refuse(409, "this upload target is closed")
        finally:
            if not committed:
                await storage.discard_staged(staged)
        return Response(status_code=200, headers={"ETag": staged.etag})

    async def media(request: Request) -> Response:
        key = request.path_params["key"]
        if not is_valid_key(key) or not key.startswith(PUBLIC_PREFIX):
            return PlainTextResponse("not found", status_code=404)
        obj = await storage.stat_for_serving(key)
        if obj is None:
            return PlainTextResponse("not found", status_code=404)
        headers = {
            "ETag": obj.etag,
            "Cache-Control": obj.cache_control,
            "X-Content-Type-Options": "nosniff",
            # Cached answers differ by Origin (infra/cors.py adds CORS headers only to a
            # request that has one): a cache must not give a page one stored without.
            "Vary": "Origin",
        }
        if _etag_matches(request.headers.get("if-none-match"), obj.etag):
            return Response(status_code=304, headers=headers)
        return FileResponse(
            obj.path, media_type=obj.content_type, headers=headers, stat_result=obj.stat
        )

    return [
        Route(
            UPLOADS_PREFIX + "{key:path}", upload, methods=UPLOADS_METHODS, name="storage_upload"
        ),
        Route(MEDIA_PREFIX + "{key:path}", media, methods=MEDIA_METHODS, name="storage_media"),
    ]


# --------------------------------------------------------------------------- S3


def bucket_cors_rules(settings: Settings) -> list[dict[str, Any]]:
    """The bucket's CORS rules (the `CORSRules` of S3's PutBucketCors) that let pages on
    the allowed origins (CORS_ALLOW_ORIGINS) upload straight to the bucket and read
    renditions from it: presigned POSTs, multipart parts PUT with their ETag read back
    for completion, and GET/HEAD of images drawn on a canvas. Empty when no origin is
    allowed (production's default).

    One rule, not one per origin: S3 takes the first rule that matches, and one rule
    with every origin says the same (moto also needs it so: it checks every rule).
    """
    origins = OriginList(settings.cors_origins)
    if not origins:
        return []
    return [
        {
            "AllowedOrigins": list(origins.normalized),
            "AllowedMethods": ["GET", "HEAD", "POST", "PUT"],
            # Requests a page sends carry Content-Type (a part's type) at most; any
            # header is harmless, as none carries credentials to the bucket.
            "AllowedHeaders": ["*"],
            # Standard multipart clients (Uppy's, the AWS SDK's) read each part's ETag;
            # ours need not (complete_multipart lists the parts), but may.
            "ExposeHeaders": ["ETag"],
            "MaxAgeSeconds": PREFLIGHT_MAX_AGE_SECONDS,
        }
    ]


def bucket_public_read_policy(settings: Settings) -> dict[str, Any] | None:
    """The bucket policy (S3's PutBucketPolicy document) that lets anyone GET renditions,
    the objects under `PUBLIC_PREFIX`, as the local backend's /media route serves them:
    the client loads them from the bucket's own URLs (`S3Storage.public_url`), unsigned,
    which a new bucket refuses. Originals, and every other action, stay private.

    None when MEDIA_PUBLIC_BASE_URL is set: renditions are then read through that CDN,
    which should reach the bucket with its own origin access (CloudFront's OAC, say),
    not through a public policy.
    """
    if settings.media_public_base_url:
        return None
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PublicReadRenditions",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{settings.s3_bucket}/{PUBLIC_PREFIX}*",
            }
        ],
    }


# What S3-compatible stores answer to an API they lack (S3's own code, and MinIO's and
# Ceph's variants for a bucket subresource they do not implement).
_NOT_IMPLEMENTED = ("NotImplemented", "MethodNotAllowed", "XNotImplemented")


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_not_found(exc: ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 404 or _error_code(exc) in ("404", "NoSuchKey", "NotFound")


def _discard(fh: BinaryIO, path: Path) -> None:
    fh.close()
    path.unlink(missing_ok=True)


def _batches(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class S3Storage:
    """An S3-compatible bucket through one long-lived aioboto3 client.

    The client is opened on first use and closed by ``close()`` (call it from the
    application's lifespan). ``settings.s3_endpoint_url`` selects MinIO, R2 or moto
    (path-style addressing); empty means AWS (virtual-hosted addressing).
    """

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.s3_bucket
        self.region = settings.s3_region
        self._endpoint = settings.s3_endpoint_url.rstrip("/")
        self._media_base = settings.media_public_base_url.rstrip("/")
        self._session = aioboto3.Session(
            aws_access_key_id=settings.s3_access_key_id or None,
            aws_secret_access_key=settings.s3_secret_access_key or None,
            region_name=settings.s3_region,
        )
        self._config = AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path" if self._endpoint else "virtual"},
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=50,
            # No default CRC32 checksums: they leak into presigned URLs and some
            # S3-compatible stores reject them.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._lock = asyncio.Lock()
        self._cors_rules = bucket_cors_rules(settings)
        self._policy = bucket_public_read_policy(settings)

    async def _s3(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    stack = contextlib.AsyncExitStack()
                    self._client = await stack.enter_async_context(
                        self._session.client(
                            "s3", endpoint_url=self._endpoint or None, config=self._config
                        )
                    )
                    self._stack = stack
        return self._client

    async def close(self) -> None:
        async with self._lock:
            stack, self._stack, self._client = self._stack, None, None
            if stack is not None:
                await stack.aclose()

    async def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist, and give it `bucket_cors_rules` and
        `bucket_public_read_policy` (the tests' buckets on moto; a real bucket is
        configured by its owner, with `python -m infra.storage --print-cors` and
        `--print-policy`). A store without PutBucketCors or PutBucketPolicy (some
        configure these server-wide) gets a warning, not an error."""
        s3 = await self._s3()
        try:
            await s3.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if not _is_not_found(exc):
                raise
            kwargs: dict[str, Any] = {"Bucket": self.bucket}
            if self.region and self.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            try:
                await s3.create_bucket(**kwargs)
            except ClientError as exc:
                if _error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
        if self._cors_rules:
            await self._configure(
                "CORS rules",
                "browser uploads",
                s3.put_bucket_cors(
                    Bucket=self.bucket, CORSConfiguration={"CORSRules": self._cors_rules}
                ),
            )
        if self._policy is not None:
            await self._configure(
                "a bucket policy",
                "public reads of renditions",
                s3.put_bucket_policy(Bucket=self.bucket, Policy=json.dumps(self._policy)),
            )

    async def _configure(self, what: str, needed_for: str, call: Awaitable[Any]) -> None:
        """Await one bucket configuration call; a store that does not implement it gets a
        warning (configure the store itself), any other refusal is raised."""
        try:
            await call
        except ClientError as exc:
            if _error_code(exc) not in _NOT_IMPLEMENTED:
                raise
            log.warning(
                "bucket %s: the store does not take %s (%s); configure the store itself "
                "for %s (docs/front-end.md)",
                self.bucket,
                what,
                _error_code(exc),
                needed_for,
            )

    async def upload_target(
        self,
        key: str,
        *,
        content_type: str,
        max_bytes: int,
        declared_bytes: int,
        expires_in: int,
        multipart: bool = False,
        part_size: int | None = None,
    ) -> UploadTarget:
        validate_key(key)
        _validate_upload(
            content_type=content_type,
            max_bytes=max_bytes,
            declared_bytes=declared_bytes,
            expires_in=expires_in,
        )
        expires_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=expires_in)
        s3 = await self._s3()
        if not multipart:
            if max_bytes > MAX_SINGLE_UPLOAD_BYTES:
                raise ValueError("objects over 5 GiB need a multipart upload")
            post = await s3.generate_presigned_post(
                Bucket=self.bucket,
                Key=key,
                Fields={"Content-Type": content_type},
                # botocore adds the exact-key and bucket conditions itself.
                Conditions=[
                    {"Content-Type": content_type},
                    ["content-length-range", 0, max_bytes],
                ],
                ExpiresIn=expires_in,
            )
            return UploadTarget(
                method="POST",
                url=str(post["url"]),
                headers={},
                fields={str(k): str(v) for k, v in post["fields"].items()},
                expires_at=expires_at,
            )

        size = choose_part_size(declared_bytes, part_size)
        count = math.ceil(declared_bytes / size)
        created = await s3.create_multipart_upload(
            Bucket=self.bucket, Key=key, ContentType=content_type
        )
        upload_id = str(created["UploadId"])
        try:
            urls = [
                str(
                    await s3.generate_presigned_url(
                        "upload_part",
                        Params={
                            "Bucket": self.bucket,
                            "Key": key,
                            "UploadId": upload_id,
                            "PartNumber": number,
                        },
                        ExpiresIn=expires_in,
                    )
                )
                for number in range(1, count + 1)
            ]
        except BaseException:
            with contextlib.suppress(ClientError):
                await self.abort_multipart(key, upload_id)
            raise
        return UploadTarget(
            method="PUT",
            url=urls[0],
            headers={},
            fields={},
            expires_at=expires_at,
            part_size=size,
            part_urls=urls,
            upload_id=upload_id,
        )

    async def complete_multipart(
        self, key: str, upload_id: str, *, max_bytes: int | None = None, exact: bool = False
    ) -> None:
        """Complete ``upload_id`` from the parts S3 says it holds, in part order.

        Idempotent: if the upload is gone but the object exists (a retried job), it
        returns. With no parts, or fewer bytes than ``max_bytes`` when ``exact`` is
        set, it raises IncompleteUpload and leaves the upload open (the client may
        still be sending parts); with more than ``max_bytes`` it aborts the upload
        (freeing its storage) and raises ObjectTooLarge. Raises UploadNotFound for an
        unknown upload id.
        """
        validate_key(key)
        s3 = await self._s3()
        parts: list[dict[str, Any]] = []
        try:
            paginator = s3.get_paginator("list_parts")
            async for page in paginator.paginate(Bucket=self.bucket, Key=key, UploadId=upload_id):
                parts.extend(page.get("Parts", []))
        except ClientError as exc:
            if _error_code(exc) == "NoSuchUpload" or _is_not_found(exc):
                if await self.head(key) is not None:
                    return
                raise UploadNotFound(f"no multipart upload {upload_id!r} for {key!r}") from exc
            raise
        if not parts:
            raise IncompleteUpload(f"multipart upload of {key!r} has no parts")
        total = sum(int(part["Size"]) for part in parts)
        if max_bytes is not None and total > max_bytes:
            await self.abort_multipart(key, upload_id)
            raise ObjectTooLarge(f"multipart upload of {key!r} is {total} > {max_bytes} bytes")
        if exact and max_bytes is not None and total < max_bytes:
            raise IncompleteUpload(f"multipart upload of {key!r} has {total} of {max_bytes} bytes")
        ordered = sorted(parts, key=lambda part: int(part["PartNumber"]))
        try:
            await s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [
                        {"PartNumber": int(part["PartNumber"]), "ETag": part["ETag"]}
                        for part in ordered
                    ]
                },
            )
        except ClientError as exc:
            code = _error_code(exc)
            if code == "NoSuchUpload" and await self.head(key) is not None:
                return  # completed concurrently
            if code in ("EntityTooSmall", "InvalidPart", "InvalidPartOrder", "NoSuchUpload"):
                raise IncompleteUpload(f"cannot complete {key!r}: {code}") from exc
            raise

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Abort an upload and free its parts; an unknown upload is fine."""
        await self._abort(validate_key(key), upload_id)

    async def _abort(self, key: str, upload_id: str) -> None:
        s3 = await self._s3()
        try:
            await s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if not (_error_code(exc) == "NoSuchUpload" or _is_not_found(exc)):
                raise

    async def head(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        s3 = await self._s3()
        try:
            response = await s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _is_not_found(exc):
                return None
            raise
        return ObjectInfo(
            size=int(response["ContentLength"]), content_type=response.get("ContentType")
        )

    async def _get(self, key: str, **kwargs: Any) -> Any:
        s3 = await self._s3()
        try:
            return await s3.get_object(Bucket=self.bucket, Key=validate_key(key), **kwargs)
        except ClientError as exc:
            if _is_not_found(exc):
                raise ObjectNotFound(key) from exc
            raise

    async def download_to(self, key: str, path: Path) -> str | None:
        """Stream the object to ``path`` (created or truncated); on any failure the
        partial file is removed. Returns the ETag of the object read."""
        response = await self._get(key)
        body = response["Body"]
        async with body:  # releases the connection, even on early exit
            fh: BinaryIO = await asyncio.to_thread(path.open, "wb")
            try:
                pending: list[bytes] = []
                pending_size = 0
                async for chunk in body.iter_chunks(256 * 1024):
                    pending.append(chunk)
                    pending_size += len(chunk)
                    if pending_size >= _CHUNK:
                        await asyncio.to_thread(fh.write, b"".join(pending))
                        pending.clear()
                        pending_size = 0
                if pending:
                    await asyncio.to_thread(fh.write, b"".join(pending))
                await asyncio.to_thread(fh.close)
            except BaseException:
                _discard(fh, path)  # synchronous: must also run when cancelled
                raise
        etag = response.get("ETag")
        return str(etag) if etag else None

    async def copy_if_match(self, source: str, dest: str, etag: str) -> str | None:
        """A server-side CopyObject of ``source`` to ``dest``, conditioned on ``source``
        still being ``etag`` (CopySourceIfMatch; moto 5.2 ignores the condition, so the
        caller also compares the copy's ETag with what it verified)."""
        s3 = await self._s3()
        try:
            response = await s3.copy_object(
                Bucket=self.bucket,
                Key=validate_key(dest),
                CopySource={"Bucket": self.bucket, "Key": validate_key(source)},
                CopySourceIfMatch=etag,
            )
        except ClientError as exc:
            if _error_code(exc) in ("PreconditionFailed", "412") or _is_not_found(exc):
                return None
            raise
        copied = response.get("CopyObjectResult", {}).get("ETag")
        return str(copied) if copied else None

    async def read_head(self, key: str, n: int) -> bytes:
        if n <= 0:
            if await self.head(key) is None:
                raise ObjectNotFound(key)
            return b""
        try:
            response = await self._get(key, Range=f"bytes=0-{n - 1}")
        except ClientError as exc:
            if _error_code(exc) == "InvalidRange":  # an empty object
                return b""
            raise
        data = bytearray()
        body = response["Body"]
        async with body:
            # Read at most n bytes even from a store that ignores Range.
            while len(data) < n:
                chunk = await body.read(n - len(data))
                if not chunk:
                    break
                data += chunk
        return bytes(data[:n])

    async def put(
        self,
        key: str,
        data: bytes | Path,
        content_type: str,
        cache_immutable: bool = True,
        *,
        cache_control: str | None = None,
    ) -> None:
        validate_key(key)
        _validate_content_type(content_type)
        extra: dict[str, str] = {"ContentType": content_type}
        if cache_control is not None:
            extra["CacheControl"] = cache_control
        elif cache_immutable:
            extra["CacheControl"] = IMMUTABLE_CACHE_CONTROL
        s3 = await self._s3()
        if isinstance(data, Path):
            # Managed transfer: streams from disk, multipart for large files.
            await s3.upload_file(str(data), self.bucket, key, ExtraArgs=extra)
        else:
            await s3.put_object(Bucket=self.bucket, Key=key, Body=data, **extra)

    async def _delete_batch(self, keys: list[str]) -> None:
        s3 = await self._s3()
        response = await s3.delete_objects(
            Bucket=self.bucket,
            Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
        )
        errors = [e for e in response.get("Errors", []) if e.get("Code") != "NoSuchKey"]
        if errors:
            first = errors[0]
            raise StorageError(
                f"could not delete {len(errors)} object(s), e.g. {first.get('Key')!r}: "
                f"{first.get('Code')} {first.get('Message')}"
            )

    async def delete_many(self, keys: list[str]) -> None:
        unique = list(dict.fromkeys(validate_key(key) for key in keys))
        for batch in _batches(unique, _DELETE_BATCH):
            await self._delete_batch(batch)

    async def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix`` + '/' and abort multipart uploads there."""
        base = _normalize_prefix(prefix)
        s3 = await self._s3()
        async for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=base
        ):
            keys = [str(item["Key"]) for item in page.get("Contents", [])]
            if keys:
                await self._delete_batch(keys)
        async for page in s3.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=base
        ):
            for upload in page.get("Uploads", []):
                await self._abort(str(upload["Key"]), str(upload["UploadId"]))

    def public_url(self, key: str) -> str:
        validate_key(key)
        if self._media_base:
            return f"{self._media_base}/{key}"
        if self._endpoint:
            return f"{self._endpoint}/{self.bucket}/{key}"
        return f"https://{self.bucket}.s3.{self.region}.amazonaws.com/{key}"


def print_cors() -> None:
    """`python -m infra.storage --print-cors`: the bucket CORS configuration for the
    environment's CORS_ALLOW_ORIGINS, as `aws s3api put-bucket-cors --bucket B
    --cors-configuration file://cors.json` takes it.

    CORS_ALLOW_ORIGINS must be set: the environment's default (localhost in development,
    none in production) is never what a real bucket wants. Exits non-zero, saying why,
    when it is unset or names no origin, or on a malformed entry or ENV.
    """
    try:
        env = env_from_environment()
        origins = cors_origins_from_environment()
        if origins is None:
            raise SystemExit(
                "set CORS_ALLOW_ORIGINS to the origins of the pages that upload to the "
                "bucket (e.g. CORS_ALLOW_ORIGINS=https://app.example.com); the "
                "environment's default is not printed"
            )
        rules = bucket_cors_rules(Settings(env=env, cors_allow_origins=origins))
    except (RuntimeError, ValueError) as exc:
        raise SystemExit(str(exc)) from exc
    if not rules:
        raise SystemExit("CORS_ALLOW_ORIGINS names no origin: there are no rules to print")
    print(json.dumps({"CORSRules": rules}, indent=2))


# S3's bucket naming rules (3 to 63 lower-case letters, digits, dots and hyphens, a
# letter or digit at each end): what may go into the policy's ARN.
_BUCKET_NAME_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def print_policy() -> None:
    """`python -m infra.storage --print-policy`: the bucket policy letting anyone read
    renditions (`bucket_public_read_policy`) of the environment's S3_BUCKET, as `aws s3api
    put-bucket-policy --bucket B --policy file://policy.json` takes it.

    As `--print-cors`: S3_BUCKET must be set (the default name is never assumed to be
    the operator's bucket) and ENV valid; and MEDIA_PUBLIC_BASE_URL unset (a CDN in
    front reads the bucket with its own origin access, no public policy). Exits
    non-zero, saying why, otherwise.
    """
    try:
        env = env_from_environment()
        bucket = os.environ.get("S3_BUCKET", "").strip()
        if not bucket:
            raise SystemExit(
                "set S3_BUCKET to the bucket the policy is for (e.g. S3_BUCKET=instagraph-media)"
            )
        if not _BUCKET_NAME_RE.fullmatch(bucket):
            raise SystemExit(f"S3_BUCKET {bucket!r} is not an S3 bucket name")
        media_base = os.environ.get("MEDIA_PUBLIC_BASE_URL", "").strip()
        policy = bucket_public_read_policy(
            Settings(env=env, s3_bucket=bucket, media_public_base_url=media_base)
        )
    except (RuntimeError, ValueError) as exc:
        raise SystemExit(str(exc)) from exc
    if policy is None:
        raise SystemExit(
            "MEDIA_PUBLIC_BASE_URL is set: renditions are read through that CDN; give it "
            "origin access to the bucket instead of a public policy (docs/front-end.md)"
        )
    print(json.dumps(policy, indent=2))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m infra.storage")
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--print-cors",
        action="store_true",
        help="print the S3 bucket CORS configuration for CORS_ALLOW_ORIGINS",
    )
    what.add_argument(
        "--print-policy",
        action="store_true",
        help="print the S3 bucket policy letting anyone read S3_BUCKET's renditions",
    )
    arguments = parser.parse_args()
    if arguments.print_cors:
        print_cors()
    elif arguments.print_policy:
        print_policy()
    else:
        parser.print_help()
