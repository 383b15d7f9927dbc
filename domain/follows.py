"""The follow graph: follow, unfollow, requests for private accounts, blocks.

Counters (`users.follower_count`, `users.following_count`) change in the same
transaction as the edge, and only when the edge really changed, so repeats and
races leave them exact. Both users' rows are updated in id order, so two
opposite follows racing each other cannot deadlock.

An edge that really changed through the API (follow, unfollow, approved request, block)
writes a `follow_changed` outbox row in its transaction (the follower's feed, cached
counts and celebrity lists follow it after the commit, see `domain.outbox`); a block
made or lifted writes the invalidation of both users' hidden sets. `add_follow` and
`remove_follow` alone (test factories, seeding) write none.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

from sqlalchemy import and_, any_, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.blocks import blocked_either_way, blockers_between, not_hidden
from domain.errors import DomainError, ErrorCode
from domain.notifications import (
    NotificationKind,
    delete_between,
    delete_follow_request,
    record_notification,
)
from domain.outbox import FOLLOW_CHANGED, write_event, write_invalidation
from domain.users import USER_COLUMNS
from models import IDS, Block, DbRow, Follow, FollowRequest, User, table_of

users = table_of(User)
follows = table_of(Follow)
requests = table_of(FollowRequest)
blocks = table_of(Block)


async def _edge_changed(
    conn: AsyncConnection, *, follower_id: int, followee_id: int, added: bool, followers: int
) -> None:
    """The outbox row of an edge that really changed (`followers`: the followee's
    follower count this transaction left, which tells the job about a threshold
    crossing)."""
    await write_event(
        conn=conn,
        kind=FOLLOW_CHANGED,
        payload={
            "follower_id": follower_id,
            "followee_id": followee_id,
            "added": added,
            "followers": followers,
        },
    )


class FollowOutcome(Enum):
    FOLLOWED = "followed"  # a new edge
    FOLLOWING = "following"  # the edge was already there
    REQUESTED = "requested"  # a private account: a request was filed


async def _adjust_counts(
    conn: AsyncConnection, *, follower_id: int, followee_id: int, delta: int
) -> int:
    """Move both counters; returns the followee's follower count as this transaction
    left it (exact even under concurrency: the row lock orders the updates)."""
    followers = 0
    for user_id in sorted((follower_id, followee_id)):
        column = "following_count" if user_id == follower_id else "follower_count"
        count = await conn.scalar(
            update(users)
            .where(users.c.id == user_id)
            .values({column: users.c[column] + delta})
            .returning(users.c.follower_count)
        )
        if user_id == followee_id:
            followers = int(count or 0)
    return followers


async def _lock_pair(conn: AsyncConnection, *, viewer_id: int, target_id: int) -> DbRow:
    """Lock both users' rows in id order (follow and block then cannot interleave), and
    return the target's row; NOT_FOUND if it does not exist."""
    rows = (
        await conn.execute(
            select(users.c.id, users.c.is_private)
            .where(users.c.id.in_([viewer_id, target_id]))
            .order_by(users.c.id)
            .with_for_update(key_share=True)
        )
    ).all()
    target = next((row for row in rows if row.id == target_id), None)
    if target is None:
        raise _no_such_user()
    return target


def _no_such_user() -> DomainError:
    """The one answer for a user who does not exist and for one a block hides (either
    way): the same code, words and field, so a block is never revealed."""
    return DomainError(ErrorCode.NOT_FOUND, "No such user.", field="userId")


async def _target(conn: AsyncConnection, *, viewer_id: int, target_id: int) -> DbRow:
    """The target's privacy flag, with both rows locked; NOT_FOUND when it does not
    exist or a block stands between them."""
    row = await _lock_pair(conn, viewer_id=viewer_id, target_id=target_id)
    if await blocked_either_way(conn=conn, a=viewer_id, b=target_id):
        raise _no_such_user()
    return row


async def add_follow(*, conn: AsyncConnection, follower_id: int, followee_id: int) -> int | None:
    """Create the edge and return the followee's new follower count; None when the edge
    existed already (counters move only on a real insert)."""
    inserted = await conn.scalar(
        insert(follows)
        .values(follower_id=follower_id, followee_id=followee_id)
        .on_conflict_do_nothing()
        .returning(follows.c.id)
    )
    if inserted is None:
        return None
    return await _adjust_counts(conn, follower_id=follower_id, followee_id=followee_id, delta=1)


async def follow(
    *, conn: AsyncConnection, viewer_id: int, target_id: int
) -> tuple[FollowOutcome, int | None]:
    """Follow a user, or file a request when the account is private. Idempotent. Returns
    the outcome and, for a new edge, the target's new follower count."""
    if viewer_id == target_id:
        raise DomainError(ErrorCode.INVALID_INPUT, "You cannot follow yourself.", field="userId")
    target = await _target(conn, viewer_id=viewer_id, target_id=target_id)
    already = await conn.scalar(
        select(follows.c.id).where(
            follows.c.follower_id == viewer_id, follows.c.followee_id == target_id
        )
    )
    if already is not None:
        return FollowOutcome.FOLLOWING, None
    if target.is_private:
        filed = await conn.scalar(
            insert(requests)
            .values(requester_id=viewer_id, target_id=target_id)
            .on_conflict_do_nothing()
            .returning(requests.c.requester_id)
        )
        if filed is not None:
            await record_notification(
                conn=conn,
                kind=NotificationKind.FOLLOW_REQUEST,
                actor_id=viewer_id,
                recipient_ids=[target_id],
            )
        return FollowOutcome.REQUESTED, None
    count = await add_follow(conn=conn, follower_id=viewer_id, followee_id=target_id)
    if count is not None:
        await record_notification(
            conn=conn, kind=NotificationKind.FOLLOW, actor_id=viewer_id, recipient_ids=[target_id]
        )
        await _edge_changed(
            conn, follower_id=viewer_id, followee_id=target_id, added=True, followers=count
        )
    return (FollowOutcome.FOLLOWED if count is not None else FollowOutcome.FOLLOWING), count


async def remove_follow(*, conn: AsyncConnection, follower_id: int, followee_id: int) -> int | None:
    """Remove the edge and return the followee's new follower count; None if there was none."""
    removed = await conn.scalar(
        delete(follows)
        .where(follows.c.follower_id == follower_id, follows.c.followee_id == followee_id)
        .returning(follows.c.id)
    )
    if removed is None:
        return None
    return await _adjust_counts(conn, follower_id=follower_id, followee_id=followee_id, delta=-1)


async def unfollow(*, conn: AsyncConnection, viewer_id: int, target_id: int) -> int | None:
    """Remove the edge and any pending request (withdrawn: its FOLLOW_REQUEST goes too).
    Idempotent; a missing user, or one a block hides, is NOT_FOUND.

    The pair lock (as `follow` takes it) also makes a notification delivery for the
    request, running at the same moment, finish before this or see the request gone
    (`domain.notifications.deliver`)."""
    await _target(conn, viewer_id=viewer_id, target_id=target_id)
    withdrawn = await conn.scalar(
        delete(requests)
        .where(requests.c.requester_id == viewer_id, requests.c.target_id == target_id)
        .returning(requests.c.requester_id)
    )
    if withdrawn is not None:
        await delete_follow_request(conn=conn, requester_id=viewer_id, target_id=target_id)
    count = await remove_follow(conn=conn, follower_id=viewer_id, followee_id=target_id)
    if count is not None:
        await _edge_changed(
            conn, follower_id=viewer_id, followee_id=target_id, added=False, followers=count
        )
    return count


async def _take_request(conn: AsyncConnection, *, viewer_id: int, requester_id: int) -> None:
    """Remove a pending request to follow the viewer; NOT_FOUND if there is none (a
    block took any away, and the pair lock, taken as `block` takes it, keeps an approval
    from racing a block into a follow across it)."""
    missing = DomainError(ErrorCode.NOT_FOUND, "No pending request from this user.", field="userId")
    try:
        await _lock_pair(conn, viewer_id=viewer_id, target_id=requester_id)
    except DomainError as exc:
        raise missing from exc
    if await blocked_either_way(conn=conn, a=viewer_id, b=requester_id):
        raise missing
    filed = await conn.scalar(
        delete(requests)
        .where(requests.c.requester_id == requester_id, requests.c.target_id == viewer_id)
        .returning(requests.c.requester_id)
    )
    if filed is None:
        raise missing
    # Answered: the FOLLOW_REQUEST has nothing left to act on (an approval tells FOLLOW).
    await delete_follow_request(conn=conn, requester_id=requester_id, target_id=viewer_id)


async def approve_request(
    *, conn: AsyncConnection, viewer_id: int, requester_id: int
) -> int | None:
    """Turn a pending request to follow the viewer into a follow.

    The viewer was told FOLLOW_REQUEST when the request was filed; now the requester
    follows them, they are told FOLLOW from the requester, as for a public account
    ("started following you"). The contract has no "accepted your request" kind, so
    the requester is not notified."""
    await _take_request(conn, viewer_id=viewer_id, requester_id=requester_id)
    count = await add_follow(conn=conn, follower_id=requester_id, followee_id=viewer_id)
    if count is not None:
        await record_notification(
            conn=conn,
            kind=NotificationKind.FOLLOW,
            actor_id=requester_id,
            recipient_ids=[viewer_id],
        )
        await _edge_changed(
            conn, follower_id=requester_id, followee_id=viewer_id, added=True, followers=count
        )
    return count


async def decline_request(*, conn: AsyncConnection, viewer_id: int, requester_id: int) -> None:
    await _take_request(conn, viewer_id=viewer_id, requester_id=requester_id)


class BlockOutcome(NamedTuple):
    """What a block changed: whether the block is new (False: it stood already), and the
    new follower counts of the target and of the viewer where an edge was removed."""

    new: bool
    target_followers: int | None
    viewer_followers: int | None


async def block(*, conn: AsyncConnection, viewer_id: int, target_id: int) -> BlockOutcome:
    """Block a user: both follow edges, pending requests and the notifications between
    them go. Idempotent.

    A user who blocked the viewer does not exist for the viewer: blocking them is
    NOT_FOUND, as for a missing user (answering otherwise would reveal their block)."""
    if viewer_id == target_id:
        raise DomainError(ErrorCode.INVALID_INPUT, "You cannot block yourself.", field="userId")
    await _lock_pair(conn, viewer_id=viewer_id, target_id=target_id)
    if await _hidden_by_their_block(conn, viewer_id=viewer_id, target_id=target_id):
        raise _no_such_user()
    new = await conn.scalar(
        insert(blocks)
        .values(blocker_id=viewer_id, blocked_id=target_id)
        .on_conflict_do_nothing()
        .returning(blocks.c.blocker_id)
    )
    removed_out = await remove_follow(conn=conn, follower_id=viewer_id, followee_id=target_id)
    removed_in = await remove_follow(conn=conn, follower_id=target_id, followee_id=viewer_id)
    await conn.execute(
        delete(requests).where(
            or_(
                and_(requests.c.requester_id == viewer_id, requests.c.target_id == target_id),
                and_(requests.c.requester_id == target_id, requests.c.target_id == viewer_id),
            )
        )
    )
    # Their notifications to each other go with the block, so an unblock restores none.
    await delete_between(conn=conn, a=viewer_id, b=target_id)
    for follower_id, followee_id, count in (
        (viewer_id, target_id, removed_out),
        (target_id, viewer_id, removed_in),
    ):
        if count is not None:
            await _edge_changed(
                conn, follower_id=follower_id, followee_id=followee_id, added=False, followers=count
            )
    if new is not None:
        await write_invalidation(conn=conn, hidden=[viewer_id, target_id])
    return BlockOutcome(new is not None, removed_out, removed_in)


async def unblock(*, conn: AsyncConnection, viewer_id: int, target_id: int) -> bool:
    """Lift the viewer's block of the target; True when there was one. Idempotent;
    restores no follow (nor the notifications the block deleted). NOT_FOUND for a
    missing user and for one who blocked the viewer (see `block`)."""
    await _lock_pair(conn, viewer_id=viewer_id, target_id=target_id)
    if await _hidden_by_their_block(conn, viewer_id=viewer_id, target_id=target_id):
        raise _no_such_user()
    lifted = await conn.scalar(
        delete(blocks)
        .where(blocks.c.blocker_id == viewer_id, blocks.c.blocked_id == target_id)
        .returning(blocks.c.blocker_id)
    )
    if lifted is not None:
        await write_invalidation(conn=conn, hidden=[viewer_id, target_id])
    return lifted is not None


async def _hidden_by_their_block(conn: AsyncConnection, *, viewer_id: int, target_id: int) -> bool:
    """The target blocked the viewer and the viewer did not block the target: only the
    target's block hides them from each other, so to the viewer the target is not there."""
    return await blockers_between(conn=conn, a=viewer_id, b=target_id) == {target_id}


async def follow_page(
    *,
    conn: AsyncConnection,
    user_id: int,
    direction: str,
    first: int,
    after: int | None,
    viewer_id: int | None = None,
) -> list[DbRow]:
    """One page (first + 1 rows, to tell whether more follow) of followers or followees,
    without the accounts a block hides from the viewer (either way).

    Newest first, keyset on the edge's monotonic id: a follow created between two
    page requests lands before the cursor and never shifts the next page.
    """
    if direction == "followers":
        anchor, other = follows.c.followee_id, follows.c.follower_id
    else:
        anchor, other = follows.c.follower_id, follows.c.followee_id
    statement = (
        select(follows.c.id.label("edge_id"), *USER_COLUMNS)
        .join(users, users.c.id == other)
        .where(anchor == user_id, not_hidden(viewer_id, other))
        .order_by(follows.c.id.desc())
        .limit(first + 1)
    )
    if after is not None:
        statement = statement.where(follows.c.id < after)
    return list((await conn.execute(statement)).all())


async def followees_among(
    *, conn: AsyncConnection, follower_id: int, user_ids: list[int]
) -> set[int]:
    """Which of user_ids follower_id follows: one statement for any number of ids."""
    rows = await conn.execute(
        select(follows.c.followee_id).where(
            follows.c.follower_id == follower_id, follows.c.followee_id == any_(IDS)
        ),
        {"ids": user_ids},
    )
    return {row[0] for row in rows}


async def requested_among(
    *, conn: AsyncConnection, requester_id: int, user_ids: list[int]
) -> set[int]:
    """Which of user_ids requester_id has a pending follow request to."""
    rows = await conn.execute(
        select(requests.c.target_id).where(
            requests.c.requester_id == requester_id, requests.c.target_id == any_(IDS)
        ),
        {"ids": user_ids},
    )
    return {row[0] for row in rows}


async def followers_among(
    *, conn: AsyncConnection, followee_id: int, user_ids: list[int]
) -> set[int]:
    """Which of user_ids follow followee_id."""
    rows = await conn.execute(
        select(follows.c.follower_id).where(
            follows.c.followee_id == followee_id, follows.c.follower_id == any_(IDS)
        ),
        {"ids": user_ids},
    )
    return {row[0] for row in rows}
