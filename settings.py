"""Typed settings read once from the environment.

Every knob the system has lives here, with its default. `get_settings()` is the
only way to read them; tests build their own `Settings` with `dataclasses.replace`.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise RuntimeError(f"{name} must be an integer, got {raw!r}") from exc


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise RuntimeError(f"{name} must be true or false, got {raw!r}")


def _env_list(name: str, default: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in _env(name, default).split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    """Configuration of one process (API or worker)."""

    env: str = "development"
    # Empty means "start an embedded server" (development and tests only).
    database_url: str = ""
    redis_url: str = ""
    secret_key: str = ""
    data_dir: Path = ROOT / ".data"
    token_ttl_seconds: int = 30 * 24 * 3600
    # Bearer tokens, not cookies, carry auth, so a page on another origin gains
    # nothing from opening a WebSocket: any origin may connect unless narrowed.
    allowed_origins: tuple[str, ...] = ("*",)
    db_pool_size: int = 10
    db_max_overflow: int = 10
    # GraphQL limits (security by default).
    max_query_depth: int = 10
    max_aliases: int = 15
    max_tokens: int = 2000
    # Trusted documents and automatic persisted queries (docs/persisted-queries.md).
    # A manifest {sha256 hex: document} loaded at start; None: no trusted documents.
    trusted_documents: Path | None = None
    # Production with first-party clients only should set this (with a manifest): every
    # document outside the manifest is refused, and APQ registers nothing.
    trusted_documents_only: bool = False
    apq_enabled: bool = True
    # A registered document lives this long in Redis; a client re-registers it in one
    # extra round trip after it expires.
    apq_ttl_seconds: int = 24 * 3600
    # Larger documents still run, but are not stored (Redis holds no arbitrary blobs).
    apq_max_document_bytes: int = 32 * 1024
    # The reference web client at /app (web/): on in development, off in production
    # unless WEB_APP=true.
    web_app: bool = True
    # Media storage (used by the media issue).
    storage_backend: str = "local"
    media_root: Path = field(default_factory=lambda: ROOT / ".data" / "media")
    public_base_url: str = "http://127.0.0.1:8000"
    media_public_base_url: str = ""
    s3_endpoint_url: str = ""
    s3_bucket: str = "instagraph-media"
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    # Uploads and processing.
    photo_max_bytes: int = 8 * 1024 * 1024
    video_max_bytes: int = 4 * 1024 * 1024 * 1024
    multipart_threshold_bytes: int = 100 * 1024 * 1024
    multipart_part_bytes: int = 16 * 1024 * 1024
    upload_ttl_seconds: int = 3600
    processing_timeout_seconds: int = 600
    pending_ttl_seconds: int = 24 * 3600
    sweep_every_seconds: int = 60
    max_processing_attempts: int = 5
    job_timeout_seconds: int = 300
    # Stories: visible for this long from READY (never after, cleanup or not); a cron
    # deletes expired ones and their objects this often.
    story_ttl_hours: int = 24
    story_cleanup_every_minutes: int = 5
    # The home feed.
    feed_cap: int = 800
    author_posts_cap: int = 200
    celebrity_follower_threshold: int = 10_000
    inactive_after_seconds: int = 14 * 24 * 3600
    fanout_batch_size: int = 1000
    cache_ttl_seconds: int = 24 * 3600
    # Rows each post's like and comment counts are spread over (domain/counters.py): more
    # rows, more concurrent likes on one post; 1 is the single hot row (a benchmark's
    # baseline). Changing it keeps every count exact.
    counter_shards: int = 16
    # `make run`: API processes sharing the port (SO_REUSEPORT; see run.py).
    api_workers: int = 1

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL with the asyncpg driver, whatever scheme was given."""
        url = self.database_url
        for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+asyncpg://" + url[len(prefix) :]
        raise RuntimeError(f"DATABASE_URL must be a postgresql:// URL, got {url!r}")


def _development_secret(data_dir: Path) -> str:
    """Generate a signing key once and keep it under .data/ so tokens survive restarts."""
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def load_settings() -> Settings:
    """Read the environment. Raises RuntimeError on a setting that cannot work."""
    env = _env("ENV", "development")
    if env not in ("development", "production"):
        raise RuntimeError(f"ENV must be 'development' or 'production', got {env!r}")
    data_dir = Path(_env("DATA_DIR", str(ROOT / ".data"))).resolve()
    secret_key = _env("SECRET_KEY", "")
    database_url = _env("DATABASE_URL", "")
    redis_url = _env("REDIS_URL", "")
    if env == "production":
        missing = [
            name
            for name, value in (
                ("SECRET_KEY", secret_key),
                ("DATABASE_URL", database_url),
                ("REDIS_URL", redis_url),
            )
            if not value
        ]
        if missing:
            raise RuntimeError(f"production needs {', '.join(missing)} to be set")
        if len(secret_key) < 32:
            raise RuntimeError("SECRET_KEY must be at least 32 characters (HS256 key length)")
    elif not secret_key:
        secret_key = _development_secret(data_dir)
    return Settings(
        env=env,
        database_url=database_url,
        redis_url=redis_url,
        secret_key=secret_key,
        data_dir=data_dir,
        token_ttl_seconds=_env_int("TOKEN_TTL_SECONDS", 30 * 24 * 3600),
        allowed_origins=_env_list("ALLOWED_ORIGINS", "*"),
        db_pool_size=_env_int("DB_POOL_SIZE", 10),
        db_max_overflow=_env_int("DB_MAX_OVERFLOW", 10),
        max_query_depth=_env_int("MAX_QUERY_DEPTH", 10),
        max_aliases=_env_int("MAX_ALIASES", 15),
        max_tokens=_env_int("MAX_TOKENS", 2000),
        trusted_documents=(
            Path(_env("TRUSTED_DOCUMENTS", "")).resolve() if _env("TRUSTED_DOCUMENTS", "") else None
        ),
        trusted_documents_only=_env_bool("TRUSTED_DOCUMENTS_ONLY", False),
        apq_enabled=_env_bool("APQ_ENABLED", True),
        apq_ttl_seconds=_env_int("APQ_TTL_SECONDS", 24 * 3600),
        apq_max_document_bytes=_env_int("APQ_MAX_DOCUMENT_BYTES", 32 * 1024),
        web_app=_env_bool("WEB_APP", env != "production"),
        storage_backend=_env("STORAGE_BACKEND", "local"),
        media_root=Path(_env("MEDIA_ROOT", str(data_dir / "media"))).resolve(),
        public_base_url=_env("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/"),
        media_public_base_url=_env("MEDIA_PUBLIC_BASE_URL", "").rstrip("/"),
        s3_endpoint_url=_env("S3_ENDPOINT_URL", ""),
        s3_bucket=_env("S3_BUCKET", "instagraph-media"),
        s3_region=_env("S3_REGION", "us-east-1"),
        s3_access_key_id=_env("S3_ACCESS_KEY_ID", ""),
        s3_secret_access_key=_env("S3_SECRET_ACCESS_KEY", ""),
        photo_max_bytes=_env_int("PHOTO_MAX_BYTES", 8 * 1024 * 1024),
        video_max_bytes=_env_int("VIDEO_MAX_BYTES", 4 * 1024 * 1024 * 1024),
        multipart_threshold_bytes=_env_int("MULTIPART_THRESHOLD_BYTES", 100 * 1024 * 1024),
        multipart_part_bytes=_env_int("MULTIPART_PART_BYTES", 16 * 1024 * 1024),
        upload_ttl_seconds=_env_int("UPLOAD_TTL_SECONDS", 3600),
        processing_timeout_seconds=_env_int("PROCESSING_TIMEOUT_SECONDS", 600),
        pending_ttl_seconds=_env_int("PENDING_TTL_SECONDS", 24 * 3600),
        sweep_every_seconds=_env_int("SWEEP_EVERY_SECONDS", 60),
        max_processing_attempts=_env_int("MAX_PROCESSING_ATTEMPTS", 5),
        job_timeout_seconds=_env_int("JOB_TIMEOUT_SECONDS", 300),
        story_ttl_hours=_env_int("STORY_TTL_HOURS", 24),
        story_cleanup_every_minutes=_env_int("STORY_CLEANUP_EVERY_MINUTES", 5),
        feed_cap=_env_int("FEED_CAP", 800),
        author_posts_cap=_env_int("AUTHOR_POSTS_CAP", 200),
        celebrity_follower_threshold=_env_int("CELEBRITY_FOLLOWER_THRESHOLD", 10_000),
        inactive_after_seconds=_env_int("INACTIVE_AFTER_SECONDS", 14 * 24 * 3600),
        fanout_batch_size=_env_int("FANOUT_BATCH_SIZE", 1000),
        cache_ttl_seconds=_env_int("CACHE_TTL_SECONDS", 24 * 3600),
        counter_shards=_env_int("COUNTER_SHARDS", 16),
        api_workers=_env_int("API_WORKERS", 1),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
