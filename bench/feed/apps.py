"""The baselines the feed page is judged against, served like the API is (uvicorn with
uvloop and httptools, in its own process):

    python -m uvicorn bench.feed.apps:create_app --factory --loop uvloop --http httptools

- `/naive`  fan-out on read, the design the Redis feed replaces: the viewer's followees
            (and the viewer) joined to posts, newest 21, with authors, then their media;
            two asyncpg statements.
- `/floor`  the feed page with no GraphQL around it: the same bearer-token check, the
            same `HomeFeed.read` the resolver calls (Redis ids, celebrity pull, record
            caches; PostgreSQL only on a miss), the same JSON built by hand, orjson.
            What our stack could do at best.
- `/plain`  a constant JSON body: the HTTP stack and the load generator alone.

All three answer the feed document's shape (`{"data": {"feed": {edges, pageInfo}}}`),
and the bench checks they return the same posts as the API for every viewer.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from domain.feed.home import FeedItem
from infra.ids import encode_cursor, to_global_id
from infra.resources import Resources
from infra.security import user_id_from_authorization
from infra.storage import Storage
from settings import Settings, load_settings

PAGE = 20
JSON = "application/json"

NAIVE_POSTS_SQL = """
SELECT p.id, p.caption, p.created_at, u.id AS author_id, u.username, u.display_name
FROM (SELECT followee_id AS author_id FROM follows WHERE follower_id = $1
      UNION ALL SELECT $1) AS sources
JOIN posts p ON p.author_id = sources.author_id
JOIN users u ON u.id = p.author_id
WHERE p.status = 'READY' AND p.deleted_at IS NULL
ORDER BY p.id DESC
LIMIT $2
"""
NAIVE_MEDIA_SQL = """
SELECT post_id, width, height, placeholder, rendition_keys FROM media
WHERE post_id = ANY($1::bigint[]) ORDER BY post_id, position
"""


def _media_json(storage: Storage, item: Any) -> dict[str, Any]:
    keys = item.rendition_keys if isinstance(item.rendition_keys, dict) else {}
    key = keys.get("FEED:JPEG")
    return {
        "url": storage.public_url(key) if key else None,
        "width": item.width,
        "height": item.height,
        "placeholder": item.placeholder,
    }


def _page_json(edges: list[dict[str, Any]], has_next: bool) -> bytes:
    info = {"hasNextPage": has_next, "endCursor": edges[-1]["cursor"] if edges else None}
    return orjson.dumps({"data": {"feed": {"edges": edges, "pageInfo": info}}})


def _edge(post_id: int, caption: Any, created_at: Any, author: dict[str, Any], media: Any) -> Any:
    return {
        "cursor": encode_cursor(post_id, post_id),
        "node": {
            "id": to_global_id("Post", post_id),
            "caption": caption,
            "createdAt": created_at,
            "author": author,
            "media": media,
        },
    }


def floor_page(storage: Storage, items: list[FeedItem], has_next: bool) -> bytes:
    """The feed document's JSON for a `HomeFeed.read` result, built by hand."""
    edges = []
    for item in items:
        post, author = item.post, item.author
        edges.append(
            _edge(
                post.id,
                post.caption,
                post.created_at,
                {
                    "id": to_global_id("User", author.id),
                    "username": author.username,
                    "displayName": author.display_name,
                },
                # HomeFeed.read returns READY posts only: every rendition URL is live.
                [_media_json(storage, m) for m in item.media],
            )
        )
    return _page_json(edges, has_next)


def create_app(settings: Settings | None = None) -> Starlette:
    """The baseline app (uvicorn --factory calls this with no argument: settings come
    from the environment, as the API's do)."""
    settings = settings or load_settings()
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        size = settings.db_pool_size + settings.db_max_overflow  # as many as the API may open
        pool = await asyncpg.create_pool(
            settings.database_url, min_size=settings.db_pool_size, max_size=size
        )
        state["pool"] = pool
        async with Resources.open(settings) as resources:
            state["resources"] = resources
            try:
                yield
            finally:
                await pool.close()

    def viewer_of(request: Request) -> int | None:
        return user_id_from_authorization(
            request.headers.get("authorization"), secret=settings.secret_key
        )

    async def naive(request: Request) -> Response:
        viewer = viewer_of(request)
        if viewer is None:
            return Response(status_code=401)
        storage = state["resources"].storage
        async with state["pool"].acquire() as conn:
            rows = await conn.fetch(NAIVE_POSTS_SQL, viewer, PAGE + 1)
            media: dict[int, list[Any]] = {}
            for row in await conn.fetch(NAIVE_MEDIA_SQL, [r["id"] for r in rows[:PAGE]]):
                media.setdefault(row["post_id"], []).append(row)
        edges = []
        for row in rows[:PAGE]:
            author = {
                "id": to_global_id("User", row["author_id"]),
                "username": row["username"],
                "displayName": row["display_name"],
            }
            items = [
                {
                    "url": storage.public_url(key) if (key := keys.get("FEED:JPEG")) else None,
                    "width": m["width"],
                    "height": m["height"],
                    "placeholder": m["placeholder"],
                }
                for m in media.get(row["id"], [])
                for keys in [orjson.loads(m["rendition_keys"])]
            ]
            edges.append(_edge(row["id"], row["caption"], row["created_at"], author, items))
        return Response(_page_json(edges, len(rows) > PAGE), media_type=JSON)

    async def floor(request: Request) -> Response:
        viewer = viewer_of(request)
        if viewer is None:
            return Response(status_code=401)
        resources: Resources = state["resources"]
        result = await resources.home_feed.read(viewer, first=PAGE, below=None)
        return Response(
            floor_page(resources.storage, result.items, result.has_next), media_type=JSON
        )

    async def plain(request: Request) -> Response:
        return Response(b'{"data":{"ok":true}}', media_type=JSON)

    async def healthz(request: Request) -> Response:
        return Response(b"ok")

    return Starlette(
        routes=[
            Route("/naive", naive, methods=["GET", "POST"]),
            Route("/floor", floor, methods=["GET", "POST"]),
            Route("/plain", plain, methods=["GET", "POST"]),
            Route("/healthz", healthz),
        ],
        lifespan=lifespan,
    )
