"""Compact builders for the social tests (blocks, the authorization tables): the things
people make, made the way they are made (GraphQL where a test is about the API, the
real state machine where only the result matters), and the waits that go with them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from arq.jobs import Job
from sqlalchemy import select

from domain import stories as story_domain
from domain.posts import MediaOutcome, MediaSpec
from infra.ids import to_global_id
from models import OutboxEvent, table_of
from tests.conftest import GraphQLClient, Server
from tests.factories import Factory, MadeUser
from workers.feed import kick_relay, relay_outbox

DEADLINE = 30  # generous: only keeps a broken test from hanging

ADD_COMMENT = """
mutation ($id: ID!, $text: String!) {
  addComment(postId: $id, text: $text) { comment { id } errors { field message code } }
}
"""
FOLLOW = "mutation ($id: ID!) { follow(userId: $id) { errors { code } } }"
BLOCK = "mutation ($id: ID!) { block(userId: $id) { errors { code } } }"


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll until the check holds (failing after the deadline)."""
    async with asyncio.timeout(DEADLINE):
        # Polls state in Redis or the worker, which have no event to wait on.
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def act(gql: GraphQLClient, document: str, user: MadeUser, **variables: Any) -> Any:
    """Run a mutation that must succeed; returns its payload."""
    data = await gql(document, token=user.token, **variables)
    [payload] = data.values()
    assert payload["errors"] == [], payload
    return payload


async def follow(gql: GraphQLClient, follower: MadeUser, followee: MadeUser) -> None:
    """Through the API: on a private account this files a request."""
    await act(gql, FOLLOW, follower, id=followee.id)


async def block(gql: GraphQLClient, blocker: MadeUser, blocked: MadeUser) -> None:
    await act(gql, BLOCK, blocker, id=blocked.id)


def post_gid(pk: int) -> str:
    return to_global_id("Post", pk)


async def comment(gql: GraphQLClient, author: MadeUser, post_id: int, text: str = "nice") -> str:
    """addComment on a post; returns the comment's global ID."""
    payload = await act(gql, ADD_COMMENT, author, id=post_gid(post_id), text=text)
    comment_id: str = payload["comment"]["id"]
    return comment_id


async def fanned_out_post(server: Server, factory: Factory, author: MadeUser) -> int:
    """A READY post whose fan-out job the worker has finished."""
    assert server.worker is not None
    post_id = await factory.ready_post(author)
    await kick_relay(server.worker.ctx)
    await Job(f"fan_out:{post_id}", server.resources.jobs).result(timeout=DEADLINE)
    return post_id


async def ready_story(server: Server, author: MadeUser) -> str:
    """A READY story through the real state machine, with rendition keys standing in for
    processing (as `Factory.ready_post` does for posts); returns its global ID."""
    async with server.engine.begin() as conn:
        created = await story_domain.create_story(
            conn=conn, author_id=author.pk, spec=MediaSpec("image/jpeg", 1000)
        )
        story_id, media_id = created.story.id, created.media.id
        await story_domain.start_processing(conn=conn, story_id=story_id, ttl=timedelta(hours=24))
        outcome = MediaOutcome(
            media_id=media_id,
            detected_type="image/jpeg",
            width=1080,
            height=1920,
            placeholder="LEHV6nWB2yk8pyo0adR*.7kCMdnj",
            rendition_keys={
                f"{size}:{fmt}": story_domain.rendition_key(story_id, media_id, size, fmt)
                for size in ("THUMB", "FEED", "FULL")
                for fmt in ("JPEG", "WEBP")
            },
        )
        await story_domain.mark_ready(
            conn=conn, story_id=story_id, outcome=outcome, ttl=timedelta(hours=24)
        )
    return to_global_id("Story", story_id)


async def deliver_notifications(server: Server) -> None:
    """Relay the outbox as the worker's cron does, then wait for every notification job
    (each is named by its outbox row)."""
    from domain.notifications import OUTBOX_KIND  # the notifications work lands in parallel

    assert server.worker is not None
    ctx = server.worker.ctx
    await relay_outbox(ctx)
    outbox = table_of(OutboxEvent)
    async with server.engine.connect() as conn:
        rows = await conn.execute(select(outbox.c.id).where(outbox.c.kind == OUTBOX_KIND))
        event_ids = list(rows.scalars())
    for event_id in event_ids:
        await Job(f"notify:{event_id}", ctx["resources"].jobs).result(timeout=DEADLINE)
