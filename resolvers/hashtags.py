"""Hashtag pages: the root field, the count and the page of posts."""

from __future__ import annotations

from domain import hashtags as hashtag_domain
from domain.text import hashtag_name
from schema.common import check_page_size, parse_cursor
from schema.context import Info
from schema.errors import invalid_input
from schema.hashtags import Hashtag
from schema.posts import PostConnection, post_connection


def hashtag(name: str) -> Hashtag:
    """`hashtag(name:)`: the normalised tag; not a hashtag is INVALID_INPUT. No SQL: the
    count and the posts are read only when asked for."""
    tag = hashtag_name(name)
    if tag is None:
        raise invalid_input("`name` is not a hashtag: letters, digits, marks and '_' only.")
    return Hashtag(name=tag)


async def post_count(info: Info, tag: str) -> int:
    async with info.context.engine.connect() as conn:
        return await hashtag_domain.post_count(conn=conn, tag=tag)


async def tag_posts(info: Info, tag: str, first: int | None, after: str | None) -> PostConnection:
    """One statement for the page; media, authors and engagement through the loaders."""
    size = check_page_size(first)
    cursor = parse_cursor(after, 1)
    async with info.context.engine.connect() as conn:
        rows = await hashtag_domain.tag_posts_page(
            conn=conn,
            tag=tag,
            viewer_id=info.context.viewer_id,
            first=size,
            after=cursor[0] if cursor else None,
        )
    return await post_connection(info, rows, size, has_previous=cursor is not None)
