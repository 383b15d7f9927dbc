"""In-process cost of executing the home feed document: Strawberry (graphql-core) versus
the compiled plan (`schema.compiler`), over the same 20 hydrated posts.

    .venv/bin/python -m bench.compiler [--rounds 7] [--iterations 300]

Both paths answer the same request the way the HTTP view would (Strawberry: its
`execute` plus `process_result`; compiled: `DocumentCompiler.get` plus `execute`), and
the script checks their JSON is identical before timing. Reports medians and the
ratio: the machine is noisy, so compare ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import orjson
import strawberry
from strawberry.http import process_result

from bench.common import FEED_QUERY
from infra.ids import encode_cursor
from schema.common import page_info
from schema.compiler import DocumentCompiler
from schema.posts import Media, Post, PostConnection, PostEdge
from schema.root import InstagraphSchema, create_schema
from schema.users import User
from settings import Settings

POSTS = 20


@strawberry.type
class BenchQuery:
    """The feed field with the real types, answering from memory (no Redis, no SQL)."""

    @strawberry.field
    async def feed(
        self, info: strawberry.Info, first: int | None = 20, after: str | None = None
    ) -> PostConnection:
        connection: PostConnection = info.context.connection
        return connection


def bench_schema(settings: Settings) -> InstagraphSchema:
    """The production schema's extensions and config around the in-memory feed."""
    real = create_schema(settings)
    return InstagraphSchema(
        query=BenchQuery,
        types=[User, Post, Media],
        extensions=real.extensions,
        config=real.config,
        production=settings.is_production,
    )


def connection() -> PostConnection:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    posts = []
    for index in range(POSTS):
        author = SimpleNamespace(
            id=1000 + index % 5,
            username=f"user{index % 5}",
            display_name=f"User {index % 5}" if index % 2 else None,
            bio=None,
            is_private=False,
            created_at=start,
            follower_count=10,
            following_count=20,
            post_count=30,
        )
        row = SimpleNamespace(
            id=10_000 + index,
            author_id=author.id,
            caption=f"caption {index} #tag",
            hashtags=["tag"],
            created_at=start + timedelta(minutes=index),
            status="READY",
            failure_reason=None,
        )
        media = SimpleNamespace(
            id=20_000 + index,
            kind="PHOTO",
            width=1080,
            height=1080,
            placeholder="LEHV6nWB2yk8pyo0adR*.7kCMdnj",
            duration_seconds=None,
            rendition_keys={"FEED:JPEG": f"media/{index}/feed.jpg"},
            video_key=None,
        )
        posts.append(Post.build(row, [media], author))
    edges = [PostEdge(cursor=encode_cursor(p.pk, p.pk), node=p) for p in posts]
    return PostConnection(
        edges=edges,
        page_info=page_info(edges, has_next=True, has_previous=False, cursor=lambda e: e.cursor),
    )


class Storage:
    def public_url(self, key: str) -> str:
        return f"https://cdn.example.com/{key}"


def hand_built(page: PostConnection, context: Any) -> dict[str, Any]:
    """The same response written out by hand for this one document: the floor any
    executor could at best approach (no checks, no errors, no info objects)."""
    edges = []
    for edge in page.edges:
        post, author = edge.node, edge.node.author
        media = [
            {
                "url": item.url(SimpleNamespace(context=context)),
                "width": item.width,
                "height": item.height,
                "placeholder": item.placeholder,
            }
            for item in post.media
        ]
        node = {
            "id": post.id,
            "caption": post.caption,
            "createdAt": post.created_at.isoformat(),
            "author": {
                "id": author.id,
                "username": author.username,
                "displayName": author.display_name,
            },
            "media": media,
        }
        edges.append({"cursor": edge.cursor, "node": node})
    info = page.page_info
    page_dict = {"hasNextPage": info.has_next_page, "endCursor": info.end_cursor}
    return {"data": {"feed": {"edges": edges, "pageInfo": page_dict}}}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()

    settings = Settings(env="development", secret_key="bench-secret-key-" + "x" * 32)
    schema = bench_schema(settings)
    compiler = DocumentCompiler(schema)
    context = SimpleNamespace(connection=connection(), storage=Storage(), viewer_id=1)
    variables: dict[str, Any] = {"after": None}

    async def strawberry_once() -> dict[str, Any]:
        result = await schema.execute(FEED_QUERY, variables, context, None, "Feed")
        return dict(process_result(result))

    async def compiled_once() -> dict[str, Any]:
        operation = compiler.get(FEED_QUERY, "Feed")
        assert operation is not None
        return await operation.execute(context, variables)

    async def floor_once() -> dict[str, Any]:
        return hand_built(context.connection, context)

    expected, got = await strawberry_once(), await compiled_once()
    if orjson.dumps(expected) != orjson.dumps(got):
        raise SystemExit("the compiled response differs from Strawberry's")
    if orjson.dumps(await floor_once()) != orjson.dumps(got):
        raise SystemExit("the hand-built response differs")
    fields = orjson.dumps(got).count(b'":')

    async def timed(run: Any) -> float:
        started = time.perf_counter()
        for _ in range(args.iterations):
            await run()
        return (time.perf_counter() - started) / args.iterations * 1e6

    runs = {"strawberry": strawberry_once, "compiled": compiled_once, "hand-built": floor_once}
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):  # interleaved, so drifts in machine load hit all alike
        for name, run in runs.items():
            samples[name].append(await timed(run))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    print(f"feed document, {POSTS} posts, {fields} fields, median of {args.rounds} rounds")
    for name, value in medians.items():
        print(f"  {name:<10} {value:9.1f} µs per execution")
    print(f"  compiled: {medians['strawberry'] / medians['compiled']:.1f}x faster than Strawberry,")
    print(f"  {medians['compiled'] / medians['hand-built']:.2f}x the hand-built floor")


if __name__ == "__main__":
    asyncio.run(main())
