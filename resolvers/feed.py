"""The home feed query: parse, read a page through `HomeFeed`, read its engagement when
the document selects any, build the connection."""

from __future__ import annotations

from infra.ids import encode_cursor
from schema.common import check_page_size, page_info, parse_cursor
from schema.context import Info
from schema.posts import Post, PostConnection, PostEdge, edge_cursor, read_engagement


async def feed(info: Info, first: int | None = 20, after: str | None = None) -> PostConnection:
    context = info.context
    viewer_id = context.require_viewer()
    size = check_page_size(first)
    cursor = parse_cursor(after, 2)
    page = await context.home_feed.read(viewer_id, first=size, below=cursor[1] if cursor else None)
    engagement = await read_engagement(info, [item.post.id for item in page.items])
    edges = [
        PostEdge(
            cursor=encode_cursor(item.post.id, item.post.id),
            node=Post.build(
                item.post,
                item.media,
                item.author,
                engagement[item.post.id] if engagement is not None else None,
            ),
        )
        for item in page.items
    ]
    return PostConnection(
        edges=edges,
        page_info=page_info(
            edges, has_next=page.has_next, has_previous=cursor is not None, cursor=edge_cursor
        ),
    )
