"""Notifications: LIKE, COMMENT, FOLLOW, MENTION, FOLLOW_REQUEST (issue 8, point 5).

Interface other domains call, inside the transaction of the action that causes it:

    await record_notification(conn=conn, kind=NotificationKind.LIKE, actor_id=liker,
                              recipient_ids=[post_author], post_id=post_id)

The path of one notification:

1. `record_notification` writes ONE outbox row (kind `notify`) in the caller's
   transaction: nothing is lost when Redis is down, and nothing is announced for an
   action that rolled back. Recipients equal to the actor are dropped there.
2. The outbox relay (`workers.feed.relay_outbox`, every second in the worker) enqueues a
   `deliver_notifications` job per row, with the row's id in the job id.
3. The job (`deliver`) inserts one notification row per recipient, skipping, as things
   stand when it runs: recipients a block stands between with the actor; recipients who
   cannot see the post it is about (a MENTION of someone a private author does not let
   in, or whom a block separates from the post's author: they could not open it); a
   post or comment deleted meanwhile; and a FOLLOW_REQUEST no longer pending (withdrawn,
   approved or declined before the job ran). The unique index on (recipient, kind,
   actor, post, comment) makes a like / unlike / like again, and a job that runs twice,
   one notification (ON CONFLICT DO NOTHING). Then it publishes the rows it really
   inserted to their recipients' live subscriptions.

Clean-up, in the transactions that make a notification stale: a block deletes every
notification between the two users, both ways (`delete_between`: an unblock restores
nothing, as it restores no follow); approving, declining or withdrawing a follow request
deletes its FOLLOW_REQUEST (`delete_follow_request`). The delivery job takes the actor's
row FOR SHARE (`domain.blocks.hold_against_blocks`), and those transactions lock it
too, so a delivery running at the same moment cannot slip a stale row behind them.

Reading (`notification_page`, `unread_count`, `notification_by_id`) still leaves out, in
SQL: notifications whose actor a block hides from the recipient (either way), and those
about a post that has been deleted since. A post that still exists but that the viewer
can no longer see (a private account they stopped following) keeps its notification,
with `post` null.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    String,
    and_,
    any_,
    delete,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy import update as sql_update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement

from domain import outbox as outbox_kinds
from domain.blocks import hold_against_blocks, not_hidden
from models import (
    IDS,
    Comment,
    Follow,
    FollowRequest,
    Notification,
    Post,
    PostStatus,
    User,
    table_of,
)

notifications = table_of(Notification)
posts = table_of(Post)
users = table_of(User)
comments = table_of(Comment)
follows = table_of(Follow)
requests = table_of(FollowRequest)

# The outbox kind the relay dispatches to `deliver_notifications`.
OUTBOX_KIND = outbox_kinds.NOTIFY

# unreadCount counts at most this many: a badge shows "99+" long before, and the count
# then costs a bounded index range however much piles up unread.
UNREAD_COUNT_CAP = 1000


class NotificationKind(StrEnum):
    LIKE = "LIKE"
    COMMENT = "COMMENT"
    FOLLOW = "FOLLOW"
    MENTION = "MENTION"
    FOLLOW_REQUEST = "FOLLOW_REQUEST"


@dataclass(frozen=True, slots=True)
class NotificationEvent:
    """What one outbox row asks for: one kind of notification, by one actor, to some
    recipients (the actor already left out)."""

    kind: NotificationKind
    actor_id: int
    recipient_ids: tuple[int, ...]
    post_id: int | None = None
    comment_id: int | None = None

    def to_payload(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "actor_id": self.actor_id,
            "recipient_ids": list(self.recipient_ids),
            "post_id": self.post_id,
            "comment_id": self.comment_id,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> NotificationEvent:
        return cls(
            kind=NotificationKind(payload["kind"]),
            actor_id=int(payload["actor_id"]),
            recipient_ids=tuple(int(r) for r in payload["recipient_ids"]),
            post_id=_optional_int(payload.get("post_id")),
            comment_id=_optional_int(payload.get("comment_id")),
        )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True, slots=True)
class NotificationRecord:
    """One notification row, as the API shows it and as live subscribers receive it."""

    id: int
    recipient_id: int
    kind: NotificationKind
    actor_id: int
    post_id: int | None
    comment_id: int | None
    created_at: datetime
    read_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> NotificationRecord:
        return cls(
            id=row.id,
            recipient_id=row.recipient_id,
            kind=NotificationKind(row.kind),
            actor_id=row.actor_id,
            post_id=row.post_id,
            comment_id=row.comment_id,
            created_at=row.created_at,
            read_at=row.read_at,
        )

    def to_message(self) -> bytes:
        """The pub/sub message announcing this notification (the whole row, so that a
        subscriber needs no query to read it back)."""
        return orjson.dumps(self)

    @classmethod
    def from_message(cls, message: bytes) -> NotificationRecord:
        data = orjson.loads(message)
        return cls(
            id=int(data["id"]),
            recipient_id=int(data["recipient_id"]),
            kind=NotificationKind(data["kind"]),
            actor_id=int(data["actor_id"]),
            post_id=_optional_int(data["post_id"]),
            comment_id=_optional_int(data["comment_id"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            read_at=datetime.fromisoformat(data["read_at"]) if data["read_at"] else None,
        )


COLUMNS = (
    notifications.c.id,
    notifications.c.recipient_id,
    notifications.c.kind,
    notifications.c.actor_id,
    notifications.c.post_id,
    notifications.c.comment_id,
    notifications.c.created_at,
    notifications.c.read_at,
)


async def record_notification(
    *,
    conn: AsyncConnection,
    kind: str,
    actor_id: int,
    recipient_ids: Iterable[int],
    post_id: int | None = None,
    comment_id: int | None = None,
    invalidate: dict[str, Any] | None = None,
) -> bool:
    """Ask for `kind` notifications to the recipients, written in the caller's
    transaction (one outbox row, whatever the number of recipients) and delivered by the
    worker after the commit. Never to the actor; nothing at all when no one is left.
    Repeats are harmless: each (recipient, kind, actor, post, comment) notifies once.
    `invalidate` (`domain.outbox.invalidation`) rides on the row, which the relay then
    applies as an `invalidate` row's. Returns whether a row was written.

        await record_notification(conn=conn, kind=NotificationKind.MENTION,
                                  actor_id=author, recipient_ids=mentioned,
                                  post_id=post_id, comment_id=comment_id)
    """
    event = NotificationEvent(
        kind=NotificationKind(kind),  # an unknown kind is a bug: ValueError
        actor_id=actor_id,
        recipient_ids=tuple(dict.fromkeys(r for r in recipient_ids if r != actor_id)),
        post_id=post_id,
        comment_id=comment_id,
    )
    if not event.recipient_ids:
        return False
    payload = event.to_payload()
    if invalidate is not None:
        payload[outbox_kinds.INVALIDATE_KEY] = invalidate
    await outbox_kinds.write_event(conn=conn, kind=OUTBOX_KIND, payload=payload)
    return True


async def _post_readers(
    conn: AsyncConnection, post_id: int, reader: ColumnElement[int]
) -> ColumnElement[bool]:
    """Which readers (a column) may open the post, by the rules of
    `resolvers.posts.load_post` and `schema.users.can_see_private_content_of`: its
    author; else, when it is READY, those with no block either way with its author, if
    the author is public or they follow them. Nobody when it is deleted or missing."""
    post = (
        await conn.execute(
            select(posts.c.author_id, posts.c.status, users.c.is_private)
            .join(users, users.c.id == posts.c.author_id)
            .where(posts.c.id == post_id, posts.c.deleted_at.is_(None))
        )
    ).one_or_none()
    if post is None:
        return false()
    if post.status != PostStatus.READY:
        return reader == post.author_id
    author_lets_in = (
        exists().where(follows.c.follower_id == reader, follows.c.followee_id == post.author_id)
        if post.is_private
        else true()
    )
    return or_(reader == post.author_id, and_(not_hidden(post.author_id, reader), author_lets_in))


async def deliver(*, conn: AsyncConnection, event: NotificationEvent) -> list[NotificationRecord]:
    """Insert the event's notifications; returns those that are new. Idempotent: a
    second delivery of the same event inserts nothing. Skips recipients that no longer
    exist, that a block stands between with the actor, or that cannot see the post;
    everything when the post or comment is gone (the comment's foreign key would refuse
    the rows anyway), and a follow request no longer pending (see the module doc)."""
    # Blocks and the end of a request lock the actor's row: they wait for this insert
    # to commit (and then delete it) or this waits for them (and then skips).
    await hold_against_blocks(conn=conn, user_id=event.actor_id)
    recipient = users.c.id
    conditions: list[ColumnElement[bool]] = [
        recipient == any_(IDS),
        recipient != event.actor_id,
        not_hidden(event.actor_id, recipient),
    ]
    if event.post_id is not None:
        conditions.append(await _post_readers(conn, event.post_id, recipient))
    if event.comment_id is not None:
        conditions.append(exists().where(comments.c.id == event.comment_id))
    if event.kind is NotificationKind.FOLLOW_REQUEST:
        conditions.append(
            exists().where(
                requests.c.requester_id == event.actor_id, requests.c.target_id == recipient
            )
        )
    rows = select(
        recipient,
        literal(event.kind.value, String),
        literal(event.actor_id, BigInteger),
        literal(event.post_id, BigInteger),
        literal(event.comment_id, BigInteger),
    ).where(*conditions)
    statement = (
        pg_insert(notifications)
        .from_select(["recipient_id", "kind", "actor_id", "post_id", "comment_id"], rows)
        .on_conflict_do_nothing()
        .returning(*COLUMNS)
    )
    result = await conn.execute(statement, {"ids": list(event.recipient_ids)})
    return sorted((NotificationRecord.from_row(row) for row in result), key=lambda r: r.id)


async def delete_between(*, conn: AsyncConnection, a: int, b: int) -> int:
    """In a block's transaction: every notification between a and b, both ways, goes
    (the block's clean-up, as its likes and comments go); returns how many. Each
    direction is one range of the unique index (recipient, kind, actor, ...)."""
    kinds = [kind.value for kind in NotificationKind]
    result = await conn.execute(
        delete(notifications).where(
            or_(
                and_(
                    notifications.c.recipient_id == a,
                    notifications.c.kind.in_(kinds),
                    notifications.c.actor_id == b,
                ),
                and_(
                    notifications.c.recipient_id == b,
                    notifications.c.kind.in_(kinds),
                    notifications.c.actor_id == a,
                ),
            )
        )
    )
    return int(result.rowcount or 0)


async def delete_follow_request(
    *, conn: AsyncConnection, requester_id: int, target_id: int
) -> None:
    """In the transaction that ends a follow request (approved, declined, withdrawn): its
    FOLLOW_REQUEST notification goes, as the request is no longer there to act on."""
    await conn.execute(
        delete(notifications).where(
            notifications.c.recipient_id == target_id,
            notifications.c.kind == NotificationKind.FOLLOW_REQUEST.value,
            notifications.c.actor_id == requester_id,
        )
    )


def _visible_to(recipient_id: int) -> ColumnElement[bool]:
    """Notifications the recipient is shown: no block either way with the actor, and
    not about a deleted post."""
    return and_(
        not_hidden(recipient_id, notifications.c.actor_id),
        or_(
            notifications.c.post_id.is_(None),
            exists().where(posts.c.id == notifications.c.post_id, posts.c.deleted_at.is_(None)),
        ),
    )


async def notification_page(
    *, conn: AsyncConnection, recipient_id: int, first: int, before: int | None
) -> list[NotificationRecord]:
    """One page, newest first (first + 1 rows, to tell whether more follow), keyset on
    the time-ordered id over the (recipient_id, id DESC) index."""
    statement = (
        select(*COLUMNS)
        .where(notifications.c.recipient_id == recipient_id, _visible_to(recipient_id))
        .order_by(notifications.c.id.desc())
        .limit(first + 1)
    )
    if before is not None:
        statement = statement.where(notifications.c.id < before)
    return [NotificationRecord.from_row(row) for row in await conn.execute(statement)]


async def notification_by_id(
    *, conn: AsyncConnection, recipient_id: int, notification_id: int
) -> NotificationRecord | None:
    """One of the recipient's notifications, if they are shown it; None otherwise."""
    row = (
        await conn.execute(
            select(*COLUMNS).where(
                notifications.c.id == notification_id,
                notifications.c.recipient_id == recipient_id,
                _visible_to(recipient_id),
            )
        )
    ).one_or_none()
    return None if row is None else NotificationRecord.from_row(row)


async def unread_count(*, conn: AsyncConnection, recipient_id: int) -> int:
    """Unread notifications the recipient is shown, up to `UNREAD_COUNT_CAP`, read from
    the partial index of unread rows."""
    unread = (
        select(literal(1))
        .where(
            notifications.c.recipient_id == recipient_id,
            notifications.c.read_at.is_(None),
            _visible_to(recipient_id),
        )
        .limit(UNREAD_COUNT_CAP)
        .subquery()
    )
    return int(await conn.scalar(select(func.count()).select_from(unread)) or 0)


async def mark_all_read(*, conn: AsyncConnection, recipient_id: int) -> int:
    """Mark every unread notification of the recipient read; returns how many."""
    result = await conn.execute(
        sql_update(notifications)
        .where(notifications.c.recipient_id == recipient_id, notifications.c.read_at.is_(None))
        .values(read_at=func.now())
    )
    return int(result.rowcount or 0)
