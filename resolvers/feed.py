"""The home feed query: parse, read a page through `HomeFeed` (with the viewer's part of
its engagement when the document selects any), read the rest of its engagement, build
the connection."""

from __future__ import annotations

from domain.engagement import ViewerRead
from infra.ids import encode_cursor
from schema.common import check_page_size, page_info, parse_cursor
from schema.context import Info
from schema.posts import (
    Post,
    PostConnection,
    PostEdge,
    edge_cursor,
    read_engagement,
    wants_engagement,
)


async def feed(info: Info, first: int | None = 20, after: str | None = None) -> PostConnection:
    context = info.context
    viewer_id = context.require_viewer()
    size = check_page_size(first)
    cursor = parse_cursor(after, 2)
    # The viewer's part of the engagement (their likes, whom they hide) rides the page's
    # read of its posts: no round trip of its own.
    rider = ViewerRead(viewer_id) if wants_engagement(info) else None
    page = await context.home_feed.read(
        viewer_id, first=size, below=cursor[1] if cursor else None, rider=rider
    )
    engagement = await read_engagement(
        info, [item.post.id for item in page.items], viewer_read=rider
    )
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
