"""The per-request context every resolver receives as `info.context`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.permission import BasePermission
from strawberry.types import Info as StrawberryInfo

from domain.feed.home import HomeFeed
from infra.cache import RecordCache
from infra.feedstore import FeedStore
from infra.pubsub import PubSubHub
from infra.resources import Resources
from infra.storage import Storage
from loaders import Loaders
from schema.errors import ApiError, ErrorCode
from settings import Settings


@dataclass(eq=False)
class Context:
    """What one request (or one WebSocket connection) carries. The shared resources come
    from the process's bundle; loaders are built on first use, so a request that needs
    none (the compiled feed path, `{ __typename }`) does not pay for them."""

    resources: Resources
    request_id: str
    viewer_id: int | None
    request: Request | WebSocket | None = None
    response: Response | None = None
    # Filled from graphql-transport-ws `connection_init` for WebSocket connections.
    connection_params: dict[str, Any] | None = None
    _loaders: Loaders | None = field(default=None, repr=False)

    @property
    def loaders(self) -> Loaders:
        if self._loaders is None:
            self._loaders = Loaders(
                self.resources.engine, self.resources.cache, self.viewer_id, self.resources.hidden
            )
        return self._loaders

    @loaders.setter
    def loaders(self, loaders: Loaders) -> None:
        self._loaders = loaders

    def renew_loaders(self) -> None:
        """Drop every loader's memo: a long-lived subscription must not serve stale rows,
        and a connection that just authenticated must not reuse anonymous ones."""
        self._loaders = None

    @property
    def settings(self) -> Settings:
        return self.resources.settings

    @property
    def engine(self) -> AsyncEngine:
        return self.resources.engine

    @property
    def redis(self) -> Redis:
        return self.resources.redis

    @property
    def jobs(self) -> ArqRedis:
        return self.resources.jobs

    @property
    def storage(self) -> Storage:
        return self.resources.storage

    @property
    def cache(self) -> RecordCache:
        return self.resources.cache

    @property
    def feeds(self) -> FeedStore:
        return self.resources.feeds

    @property
    def home_feed(self) -> HomeFeed:
        return self.resources.home_feed

    @property
    def pubsub(self) -> PubSubHub:
        return self.resources.pubsub

    def require_viewer(self) -> int:
        if self.viewer_id is None:
            raise ApiError(ErrorCode.UNAUTHENTICATED, "You need to log in.")
        return self.viewer_id


Info = StrawberryInfo[Context, None]

# A write whose row names a user that does not exist (PostgreSQL's foreign_key_violation).
_FOREIGN_KEY_VIOLATION = "23503"
VIEWER_GONE = "Your session's account does not exist; log in again."


def is_viewer_gone(error: BaseException | None, context: object) -> bool:
    """Whether this error is a write refused because the viewer's own row does not exist:
    a correctly signed token whose account is gone (or never was). Tokens are checked
    without the database (`infra.security`: so the feed's read costs it nothing), so a
    write on their behalf is where it shows: the row it inserts names the viewer, and
    PostgreSQL refuses the foreign key. `schema.root.InstagraphSchema.process_errors`
    answers it UNAUTHENTICATED instead of an INTERNAL_SERVER_ERROR carrying the driver's
    text, at no cost to any request that succeeds.

    Read from the driver's report (`Key (author_id)=(42) is not present in table
    "users".`), walking the exception chain SQLAlchemy wraps it in."""
    viewer_id = getattr(context, "viewer_id", None)
    if viewer_id is None:
        return False
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "sqlstate", None) == _FOREIGN_KEY_VIOLATION:
            detail = getattr(error, "detail", None)
            if isinstance(detail, str) and detail.endswith(
                f')=({viewer_id}) is not present in table "users".'
            ):
                return True
        error = getattr(error, "orig", None) or error.__cause__ or error.__context__
    return False


class IsAuthenticated(BasePermission):
    """Declared on fields that need a logged-in viewer (STYLE rule 4)."""

    message = "You need to log in."
    error_extensions = {"code": ErrorCode.UNAUTHENTICATED.value}

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return info.context.viewer_id is not None
