"""The per-request context every resolver receives as `info.context`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.permission import BasePermission
from strawberry.types import Info as StrawberryInfo

from infra.cache import RecordCache
from infra.feedstore import FeedStore
from infra.pubsub import PubSubHub
from infra.storage import Storage
from loaders import Loaders
from schema.errors import ApiError, ErrorCode
from settings import Settings


@dataclass
class Context:
    settings: Settings
    engine: AsyncEngine
    redis: Redis
    storage: Storage
    jobs: ArqRedis
    cache: RecordCache
    feeds: FeedStore
    pubsub: PubSubHub
    request_id: str
    viewer_id: int | None
    loaders: Loaders
    request: Request | WebSocket | None = None
    response: Response | None = None
    # Filled from graphql-transport-ws `connection_init` for WebSocket connections.
    connection_params: dict[str, Any] | None = None

    def require_viewer(self) -> int:
        if self.viewer_id is None:
            raise ApiError(ErrorCode.UNAUTHENTICATED, "You need to log in.")
        return self.viewer_id


Info = StrawberryInfo[Context, None]


class IsAuthenticated(BasePermission):
    """Declared on fields that need a logged-in viewer (STYLE rule 4)."""

    message = "You need to log in."
    error_extensions = {"code": ErrorCode.UNAUTHENTICATED.value}

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return info.context.viewer_id is not None
