"""Trusted documents and automatic persisted queries (APQ).

Two ways for a client to name a document by hash instead of sending its text:

- **Automatic persisted queries**, Apollo's protocol: the request carries
  `extensions.persistedQuery = {"version": 1, "sha256Hash": "<hex>"}`. An unknown
  hash is answered `PersistedQueryNotFound` (code `PERSISTED_QUERY_NOT_FOUND`,
  HTTP 200, as Apollo Server does), and the client retries once with the text and
  the hash, which registers the document in Redis (shared by every API process,
  with a TTL) for the next request.
- **Trusted documents** (persisted documents): a manifest `{hash: document}` built
  with the client and loaded at start. A request names a manifest document with the
  same APQ extension or with a `documentId` (`"sha256:<hex>"` or `"<hex>"`; Relay's
  `doc_id`). With `trusted_only`, the server runs manifest documents only (named by
  hash or sent in full), and APQ registers nothing.

A hash is the lowercase hex SHA-256 of the UTF-8 document text exactly as sent: no
normalisation, so a client must hash the very string it would send as `query`.
Error codes and statuses follow Apollo Server (APQ) and Apollo Router (safelists),
so client tooling and dashboards built for those recognise them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from settings import Settings

log = logging.getLogger("instagraph.documents")

# Key family: apq:<hex> -> the UTF-8 document text, with a TTL. Plain keys (no hash tag):
# each is read and written alone, so any Redis Cluster slot will do.
APQ_KEY_PREFIX = b"apq:"
# APQ documents kept in each process in front of Redis. A client app has a few hundred
# operations at most; 1,000 entries of at most max_document_bytes bound the memory.
APQ_LRU_SIZE = 1000
APQ_VERSION = 1

# Clients retry or report by these exact strings (Apollo Client matches the message or
# the code, urql the message only).
NOT_FOUND_MESSAGE = "PersistedQueryNotFound"
NOT_SUPPORTED_MESSAGE = "PersistedQueryNotSupported"
# Apollo Server's wording, kept so a client author searching for it finds the protocol.
HASH_MISMATCH_MESSAGE = "provided sha does not match query"
BAD_VERSION_MESSAGE = "Unsupported persisted query version"

# A persisted-query error must never be cached by a CDN in front of GET requests: the
# answer to "do you know this hash?" changes as soon as the client registers it.
NO_CACHE = {"cache-control": "private, no-cache, must-revalidate"}

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def hash_document(text: str) -> str:
    """The document's hash: lowercase hex SHA-256 of its UTF-8 text, exactly as sent.

    `hash_document("{ __typename }")` equals `printf %s '{ __typename }' | sha256sum`.
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class PersistedQueryError(Exception):
    """A persisted-query protocol error, answered before any parsing or execution.

    The view sends `response()` as the body with `status` and `headers`, in the media
    type the client accepts (`schema.graphql_http.persisted_query_error_response`).
    """

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.headers: dict[str, str] = dict(NO_CACHE)

    def response(self) -> dict[str, Any]:
        return {"errors": [{"message": self.message, "extensions": {"code": self.code}}]}

    @classmethod
    def not_found(cls) -> PersistedQueryError:
        """APQ: the hash is unknown; the client should retry with the text (HTTP 200, like
        Apollo Server, so clients that treat 4xx as fatal still retry). 200 whatever the
        client accepts: this is a step of the APQ handshake, not a failed request, and
        Apollo Client sends `Accept: application/graphql-response+json` too (and Apollo's
        persisted-query links have treated a 400 as "the server cannot do APQ")."""
        return cls("PERSISTED_QUERY_NOT_FOUND", NOT_FOUND_MESSAGE, 200)

    @classmethod
    def not_supported(cls) -> PersistedQueryError:
        """APQ is switched off; Apollo Client and urql stop hashing and send full text
        (HTTP 200, as for `not_found`)."""
        return cls("PERSISTED_QUERY_NOT_SUPPORTED", NOT_SUPPORTED_MESSAGE, 200)

    @classmethod
    def not_in_list(cls, document_hash: str) -> PersistedQueryError:
        """A trusted-document hash the manifest does not hold (Apollo Router's code)."""
        return cls(
            "PERSISTED_QUERY_NOT_IN_LIST",
            f"Persisted query 'sha256:{document_hash}' is not in this server's trusted "
            "documents; rebuild the client's manifest and deploy it to the server",
            404,
        )

    @classmethod
    def not_trusted(cls) -> PersistedQueryError:
        """Trusted-only mode and a document outside the manifest (Apollo Router's code)."""
        return cls(
            "QUERY_NOT_IN_SAFELIST",
            "This server runs trusted documents only, and this document is not in its "
            "manifest; new documents cannot be registered",
            403,
        )

    @classmethod
    def invalid(cls, message: str) -> PersistedQueryError:
        """A malformed request: the project's INVALID_INPUT code, HTTP 400."""
        return cls("INVALID_INPUT", message, 400)


class ManifestError(ValueError):
    """A trusted-documents manifest that cannot be loaded; the server refuses to start."""


def parse_manifest(data: object, *, source: str = "manifest") -> dict[str, str]:
    """Turn a decoded manifest into `{hex hash: document}`, checking every hash.

    Accepted shapes: `{"<hex>": "<document>"}` (Relay with SHA256, GraphQL Code
    Generator's `persisted-documents.json`, `python -m schema.manifest`),
    `{"sha256:<hex>": "<document>"}` (the trusted-documents convention), and Apollo's
    `{"format": "apollo-persisted-query-manifest", "version": 1, "operations":
    [{"id", "body", ...}]}`. Raises ManifestError on anything else, and on a key that
    is not the SHA-256 of its document (another algorithm, or an edited body).
    """
    pairs: list[tuple[object, object]]
    if isinstance(data, dict) and data.get("format") == "apollo-persisted-query-manifest":
        if data.get("version") != 1 or not isinstance(data.get("operations"), list):
            raise ManifestError(f"{source}: unsupported Apollo manifest version or shape")
        pairs = []
        for operation in data["operations"]:
            if not isinstance(operation, dict):
                raise ManifestError(f"{source}: each operation must be an object")
            pairs.append((operation.get("id"), operation.get("body")))
    elif isinstance(data, dict):
        pairs = list(data.items())
    else:
        raise ManifestError(f"{source}: a manifest is a JSON object of hash to document")
    documents: dict[str, str] = {}
    for key, document in pairs:
        if not isinstance(key, str) or not isinstance(document, str):
            raise ManifestError(f"{source}: hashes and documents must be strings")
        digest = key.removeprefix("sha256:")
        if not _HEX64.fullmatch(digest):
            raise ManifestError(
                f"{source}: {key!r} is not a SHA-256 hash (64 hex digits, optionally "
                "prefixed 'sha256:'); build the manifest with SHA-256"
            )
        digest = digest.lower()
        if hash_document(document) != digest:
            raise ManifestError(
                f"{source}: {key!r} is not the SHA-256 of its document (the hash must be "
                "taken over the exact text the client sends)"
            )
        documents[digest] = document
    return documents


def load_manifest(path: Path) -> dict[str, str]:
    """Read and check a manifest file (see `parse_manifest`)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ManifestError(f"cannot read trusted documents from {path}: {exc}") from exc
    return parse_manifest(data, source=str(path))


class DocumentRegistry:
    """Resolves what a request names (text, APQ hash, document id) to the text to execute.

    Manifest documents live in a dict: naming one costs a lookup, no Redis. APQ
    documents live in Redis under `apq:<hex>` (shared by all API processes, expiring
    after `apq_ttl_seconds`), behind a bounded in-process LRU, so a warm hash costs no
    Redis round trip either.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        manifest: Mapping[str, str],
        trusted_only: bool,
        apq_enabled: bool,
        apq_ttl_seconds: int,
        max_document_bytes: int,
        validator: Callable[[str], bool] | None = None,
    ) -> None:
        """`validator` tells whether a document parses and validates against the schema:
        only such documents are registered (as Apollo Server does), so Redis never holds
        arbitrary text sent with a matching hash."""
        if trusted_only and not manifest:
            raise ManifestError(
                "TRUSTED_DOCUMENTS_ONLY is set but no trusted documents are loaded: every "
                "request would be refused; set TRUSTED_DOCUMENTS to the manifest"
            )
        if apq_ttl_seconds <= 0:
            raise ValueError("APQ_TTL_SECONDS must be positive")
        self.redis = redis
        self.trusted_only = trusted_only
        # Registering is pointless when only manifest documents may run.
        self.apq_enabled = apq_enabled and not trusted_only
        self.apq_ttl_seconds = apq_ttl_seconds
        self.max_document_bytes = max_document_bytes
        self.validator = validator
        self._manifest: dict[str, str] = {}
        for key, document in manifest.items():
            digest = key.removeprefix("sha256:").lower()
            if hash_document(document) != digest:
                raise ManifestError(f"trusted document {key!r} is not the SHA-256 of its text")
            self._manifest[digest] = document
        # Trusted-only mode also accepts a manifest document sent in full: a set lookup
        # (the string's own hash) instead of a SHA-256 of every request's text.
        self._trusted_texts = frozenset(self._manifest.values())
        self._lru: OrderedDict[str, str] = OrderedDict()

    @classmethod
    def from_settings(
        cls, redis: Redis, settings: Settings, *, validator: Callable[[str], bool] | None = None
    ) -> DocumentRegistry:
        """The registry the settings describe, with the manifest file loaded and checked."""
        manifest = load_manifest(settings.trusted_documents) if settings.trusted_documents else {}
        registry = cls(
            redis,
            manifest=manifest,
            trusted_only=settings.trusted_documents_only,
            apq_enabled=settings.apq_enabled,
            apq_ttl_seconds=settings.apq_ttl_seconds,
            max_document_bytes=settings.apq_max_document_bytes,
            validator=validator,
        )
        if manifest:
            log.info(
                "loaded %d trusted documents from %s%s",
                len(manifest),
                settings.trusted_documents,
                " (trusted documents only)" if settings.trusted_documents_only else "",
            )
        return registry

    def known_documents(self) -> list[str]:
        """The manifest's documents, to parse, validate and compile once at start."""
        return list(self._manifest.values())

    async def resolve(
        self,
        query: str | None,
        extensions: dict[str, Any] | None,
        *,
        document_id: str | None = None,
    ) -> str | None:
        """The document text this request asks to execute.

        `query`, `extensions` and `document_id` are the request's `query`, `extensions`
        and `documentId` (or Relay's `doc_id`) parameters, from the JSON body or the GET
        query string. Returns None when the request names no document at all (the view
        lets Strawberry answer "No GraphQL query found"). Raises PersistedQueryError for
        an unknown hash, a hash that does not match the text, a malformed reference, and
        (trusted-only mode) any document outside the manifest.
        """
        if query is not None and not isinstance(query, str):
            raise PersistedQueryError.invalid("`query` must be a string")
        text = query or None  # `?query=` (empty) names nothing, like an absent query
        persisted = extensions.get("persistedQuery") if isinstance(extensions, dict) else None
        if persisted is None and document_id is None:
            if text is None or not self.trusted_only or text in self._trusted_texts:
                return text
            raise PersistedQueryError.not_trusted()

        digest = _requested_hash(persisted, document_id)
        trusted = self._manifest.get(digest)
        if trusted is not None:
            if text is not None and text != trusted:
                raise PersistedQueryError.invalid(HASH_MISMATCH_MESSAGE)
            return trusted

        if text is not None:
            try:
                encoded = text.encode("utf-8")
            except UnicodeEncodeError as exc:  # a lone surrogate from a JSON \ud800 escape
                raise PersistedQueryError.invalid("the document is not valid Unicode") from exc
            if hashlib.sha256(encoded).hexdigest() != digest:
                # Refused, not merely left unregistered: a client that sends a wrong hash
                # would otherwise poison the store for everyone asking for that hash.
                raise PersistedQueryError.invalid(HASH_MISMATCH_MESSAGE)
            if self.trusted_only:
                raise PersistedQueryError.not_trusted()
            if persisted is not None and self.apq_enabled:
                await self._register(digest, text, encoded)
            return text

        if self.trusted_only:
            raise PersistedQueryError.not_in_list(digest)
        if self.apq_enabled:
            stored = await self._lookup(digest)
            if stored is not None:
                return stored
        if persisted is None:
            # A documentId is not APQ: no registration round follows, so say plainly
            # that the server does not know it.
            raise PersistedQueryError.not_in_list(digest)
        if not self.apq_enabled:
            raise PersistedQueryError.not_supported()
        raise PersistedQueryError.not_found()

    async def _lookup(self, digest: str) -> str | None:
        document = self._lru.get(digest)
        if document is not None:
            self._lru.move_to_end(digest)
            return document
        try:
            raw = await self.redis.get(APQ_KEY_PREFIX + digest.encode())
        except RedisError as exc:
            # Answered as a miss: the client sends the text and the request still works.
            log.warning("APQ lookup failed, answering not found: %s", exc)
            return None
        if raw is None:
            return None
        document = raw.decode("utf-8")
        self._remember(digest, document)
        return document

    async def _register(self, digest: str, document: str, encoded: bytes) -> None:
        if len(encoded) > self.max_document_bytes:
            # Executed but not stored: the bound keeps Redis from holding arbitrary blobs.
            log.info(
                "APQ document of %d bytes not registered (limit %d)",
                len(encoded),
                self.max_document_bytes,
            )
            return
        if self.validator is not None and not self.validator(document):
            return  # executed unregistered: Strawberry reports what is wrong with it
        try:
            # SET refreshes the TTL of a document registered again.
            await self.redis.set(APQ_KEY_PREFIX + digest.encode(), encoded, ex=self.apq_ttl_seconds)
        except RedisError as exc:
            log.warning("APQ registration failed, executing unregistered: %s", exc)
            return
        self._remember(digest, document)

    def _remember(self, digest: str, document: str) -> None:
        self._lru[digest] = document
        self._lru.move_to_end(digest)
        while len(self._lru) > APQ_LRU_SIZE:
            self._lru.popitem(last=False)


def _requested_hash(persisted: object, document_id: str | None) -> str:
    """The lowercase hex hash a request names, from the APQ extension or a document id."""
    digest: str | None = None
    if persisted is not None:
        if not isinstance(persisted, dict):
            raise PersistedQueryError.invalid("`extensions.persistedQuery` must be an object")
        version = persisted.get("version")
        if isinstance(version, bool) or version != APQ_VERSION:
            raise PersistedQueryError.invalid(BAD_VERSION_MESSAGE)
        sha = persisted.get("sha256Hash")
        if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
            raise PersistedQueryError.invalid(
                "`extensions.persistedQuery.sha256Hash` must be the 64-digit hex SHA-256 "
                "of the document"
            )
        digest = sha.lower()
    if document_id is not None:
        raw = document_id.removeprefix("sha256:") if isinstance(document_id, str) else ""
        if not _HEX64.fullmatch(raw):
            raise PersistedQueryError.invalid(
                "`documentId` must be 'sha256:' followed by the 64-digit hex SHA-256 of the "
                "document (Relay: set persistConfig's algorithm to SHA256)"
            )
        if digest is not None and digest != raw.lower():
            raise PersistedQueryError.invalid(
                "`documentId` and `extensions.persistedQuery.sha256Hash` name different documents"
            )
        digest = raw.lower()
    if digest is None:  # pragma: no cover - the caller checked one of them is present
        raise PersistedQueryError.invalid("no persisted document named")
    return digest
