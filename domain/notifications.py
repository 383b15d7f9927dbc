"""Notifications: LIKE, COMMENT, FOLLOW, MENTION, FOLLOW_REQUEST (issue 8, notifications work).

Interface other domains call, inside the transaction of the action that causes it:

    await record_notification(conn=conn, kind=NotificationKind.LIKE, actor_id=liker,
                              recipient_ids=[post_author], post_id=post_id)

It writes an outbox row in the caller's transaction (so nothing is lost when Redis is
down); a worker turns it into notification rows and live deliveries. Never for one's
own actions; idempotent per (recipient, kind, actor, post, comment).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncConnection


class NotificationKind:
    LIKE = "LIKE"
    COMMENT = "COMMENT"
    FOLLOW = "FOLLOW"
    MENTION = "MENTION"
    FOLLOW_REQUEST = "FOLLOW_REQUEST"


async def record_notification(
    *,
    conn: AsyncConnection,
    kind: str,
    actor_id: int,
    recipient_ids: Iterable[int],
    post_id: int | None = None,
    comment_id: int | None = None,
) -> None:
    """Stub until the notifications work lands: records nothing."""
    del conn, kind, actor_id, recipient_ids, post_id, comment_id
