"""Accounts and the follow graph."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import strawberry
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from domain import follows as follow_domain
from domain import limits
from domain import users as user_domain
from domain.blocks import HiddenUsers
from domain.comments import remove_comments_on_posts_of
from domain.errors import DomainError, ErrorCode
from domain.follows import FollowOutcome
from domain.likes import remove_likes_on_posts_of
from domain.outbox import best_effort, unsent_follow_change, write_invalidation
from infra.resources import Resources
from infra.security import hash_password, issue_token, verify_password
from models import DbRow
from resolvers.common import payload_pk, register_node
from schema.common import check_page_size
from schema.context import VIEWER_GONE, Info
from schema.errors import ApiError, UserError
from schema.users import AuthPayload, User, UserPayload
from workers.jobs import enqueue_follow_changed

log = logging.getLogger(__name__)


async def load_user(info: Info, user_id: int) -> User | None:
    """A user as the viewer may see them: None when missing or hidden by a block (either
    way), exactly alike."""
    loaders = info.context.loaders
    if user_id != info.context.viewer_id and await loaders.is_hidden(user_id):
        return None
    row = await loaders.user_by_id.load(user_id)
    return User.from_row(row) if row is not None else None


register_node("User", load_user)


async def viewer(info: Info) -> User | None:
    if info.context.viewer_id is None:
        return None
    return await load_user(info, info.context.viewer_id)


async def user(info: Info, username: str) -> User | None:
    if not user_domain.USERNAME_RE.match(user_domain.normalize_username(username)):
        # No account can have this name (a NUL, a lone surrogate, a megabyte of text
        # among them, which the driver would refuse with its own words): no query.
        return None
    async with info.context.engine.connect() as conn:
        row = await user_domain.user_by_username(conn=conn, username=username)
    if row is None:
        return None
    loaders = info.context.loaders
    if row.id != info.context.viewer_id and await loaders.is_hidden(row.id):
        return None
    loaders.user_by_id.prime_rows([row])
    return User.from_row(row)


async def search_users(info: Info, query: str, first: int | None = 20) -> list[User]:
    size = check_page_size(first)
    if user_domain.search_term(query) is None:
        return []  # nothing to look for: no connection taken
    async with info.context.engine.connect() as conn:
        rows = await user_domain.search_users(
            conn=conn, query=query, limit=size, viewer_id=info.context.viewer_id
        )
    info.context.loaders.user_by_id.prime_rows(rows)
    return [User.from_row(row) for row in rows]


def _auth_payload(info: Info, row: DbRow) -> AuthPayload:
    settings = info.context.settings
    token = issue_token(row.id, secret=settings.secret_key, ttl_seconds=settings.token_ttl_seconds)
    return AuthPayload(token=token, user=User.from_row(row))


async def sign_up(info: Info, username: str, email: str, password: str) -> AuthPayload:
    await limits.hit(info.context, limits.SIGN_UP)
    try:
        clean_username = user_domain.check_username(username)
        clean_email = user_domain.check_email(email)
        user_domain.check_password(password)
        password_hash = await hash_password(password)
        async with info.context.engine.begin() as conn:
            row = await user_domain.create_user(
                conn=conn, username=clean_username, email=clean_email, password_hash=password_hash
            )
    except DomainError as exc:
        return AuthPayload(errors=[UserError.from_error(exc)])
    return _auth_payload(info, row)


async def log_in(info: Info, username: str, password: str) -> AuthPayload:
    attempt = await limits.log_in_attempt(info.context, username)
    try:
        async with info.context.engine.connect() as conn:
            credentials = await user_domain.credentials_for(conn=conn, username=username)
        # Unknown user and wrong password take the same time and give the same answer.
        valid = await verify_password(credentials.password_hash if credentials else None, password)
        row = (
            await info.context.loaders.user_by_id.load(credentials.id)
            if credentials and valid
            else None
        )
    except Exception:  # an outage (SERVICE_UNAVAILABLE) is no failed guess: points back
        await attempt.succeeded()
        raise
    if row is None:
        return AuthPayload(
            errors=[UserError(message="Wrong username or password.", code=ErrorCode.INVALID_INPUT)]
        )
    await attempt.succeeded()
    return _auth_payload(info, row)


async def update_profile(
    info: Info,
    display_name: str | None = strawberry.UNSET,
    bio: str | None = strawberry.UNSET,
    is_private: bool | None = strawberry.UNSET,
) -> UserPayload:
    viewer_id = info.context.require_viewer()
    changes = {
        column: value
        for column, value in (
            ("display_name", display_name),
            ("bio", bio),
            ("is_private", is_private),
        )
        if value is not strawberry.UNSET
    }
    for column in ("display_name", "bio"):
        value = changes.get(column)
        if isinstance(value, str):
            changes[column] = value.strip() or None
    try:
        async with info.context.engine.begin() as conn:
            row = await user_domain.update_profile(conn=conn, user_id=viewer_id, changes=changes)
            if row is not None:  # the cached record goes after the commit (domain.outbox)
                await write_invalidation(conn=conn, users=[viewer_id])
    except DomainError as exc:
        return UserPayload(errors=[UserError.from_error(exc)])
    if row is None:  # the account was deleted while the token lived, or never was
        raise ApiError(ErrorCode.UNAUTHENTICATED, VIEWER_GONE)
    await best_effort(
        info.context.resources.recent.forget_users([viewer_id]), f"user {viewer_id}: record"
    )
    info.context.loaders.user_by_id.prime_rows([row])
    return UserPayload(user=User.from_row(row))


# An edge that really changed: (follower, followee, added, followee's new follower count).
EdgeChange = tuple[int, int, bool, int]


@dataclass(frozen=True, slots=True)
class GraphChanges:
    """What one follow-graph mutation really changed, for the caches and feeds after it."""

    edges: list[EdgeChange] = field(default_factory=list)
    # A block made or lifted: who is hidden from whom changed for both users.
    hidden: bool = False


GraphChange = Callable[..., Awaitable[GraphChanges]]


async def _change_graph(info: Info, user_id: strawberry.ID, change: GraphChange) -> UserPayload:
    """The shape every follow-graph mutation shares: parse the target, change the edge
    in one transaction, bring caches and feeds in line, then answer with the target
    as it is now."""
    viewer_id = info.context.require_viewer()
    hidden = info.context.resources.hidden
    try:
        target_id = payload_pk(user_id, "User", "userId")
        async with info.context.engine.begin() as conn:
            result = await change(conn=conn, viewer_id=viewer_id, target_id=target_id)
            if result.hidden:
                # Laid only when a block was really made or lifted (refused or repeated
                # ones cost no one their cache), and before the commit: should this
                # process die between the commit and the refresh below, this tombstone
                # has already kept readers from caching the old set.
                await _forget_hidden_before_commit(hidden, viewer_id, target_id)
    except DomainError as exc:
        return UserPayload(errors=[UserError.from_error(exc)])
    changes = result.edges
    if result.hidden:
        try:
            await hidden.refresh_after_commit(viewer_id, target_id)
        except (RedisError, OSError, DBAPIError):
            # Committed: the answer and the feed clean-up below must not depend on the
            # cache. The tombstone laid before the commit expires within seconds, and
            # readers then read the committed set from PostgreSQL.
            log.warning(
                "hidden sets of %d and %d not refreshed", viewer_id, target_id, exc_info=True
            )
        info.context.loaders.forget_hidden()
    home_feed = info.context.home_feed
    # First, whatever fails after: every follower whose follows changed has their live
    # subscriptions re-read whom to listen to (an unfollowed or blocking celebrity
    # must go silent at once).
    await home_feed.tell_follows_changed([change[0] for change in changes])
    try:
        await info.context.resources.recent.forget_users([viewer_id, target_id])
    except (RedisError, OSError):  # committed: their cached counts lag until the TTL
        log.warning("user records of %d and %d not forgotten", viewer_id, target_id, exc_info=True)
    loaders = info.context.loaders
    loaders.forget_follow_state(target_id)
    loaders.user_by_id.clear(viewer_id)
    for follower_id, followee_id, added, followers in changes:
        # At once, best effort: the edge's `follow_changed` outbox row, committed with
        # it, is the guarantee (workers.outbox.follow_changed).
        await best_effort(
            home_feed.follow_changed(follower_id, followee_id, added=added, followers=followers),
            f"follow {follower_id} -> {followee_id}: feed",
        )
        if home_feed.crosses_threshold(added=added, followers=followers):
            # The crossing is acted on by the edge's job only (once): send it now.
            await best_effort(
                enqueue_edge_job(info.context.resources, follower_id, followee_id, added),
                f"follow {follower_id} -> {followee_id}: crossing",
            )
    # As the viewer may see the target now: null after a block.
    return UserPayload(user=await load_user(info, target_id))


async def enqueue_edge_job(
    resources: Resources, follower_id: int, followee_id: int, added: bool
) -> None:
    """The `follow_changed` job of this edge change, at once, under the relay's id."""
    async with resources.engine.connect() as conn:
        found = await unsent_follow_change(
            conn=conn, follower_id=follower_id, followee_id=followee_id, added=added
        )
    if found is not None:
        await enqueue_follow_changed(resources.jobs, *found)


async def _forget_hidden_before_commit(hidden: HiddenUsers, viewer_id: int, target_id: int) -> None:
    """Lay the block's tombstones before its commit, best effort. When Redis refuses
    them, the block commits all the same (it needs only PostgreSQL): its `invalidate`
    outbox row re-reads both users' hidden sets once Redis answers again (within about
    a second, `workers.outbox.apply_invalidations`), and while Redis is down readers
    read the sets from PostgreSQL."""
    await best_effort(
        hidden.forget(viewer_id, target_id), f"hidden sets of {viewer_id} and {target_id}"
    )


async def _follow(*, conn: AsyncConnection, viewer_id: int, target_id: int) -> GraphChanges:
    outcome, count = await follow_domain.follow(conn=conn, viewer_id=viewer_id, target_id=target_id)
    if outcome is FollowOutcome.FOLLOWED and count is not None:
        return GraphChanges([(viewer_id, target_id, True, count)])
    return GraphChanges()


async def _unfollow(*, conn: AsyncConnection, viewer_id: int, target_id: int) -> GraphChanges:
    count = await follow_domain.unfollow(conn=conn, viewer_id=viewer_id, target_id=target_id)
    return GraphChanges([(viewer_id, target_id, False, count)] if count is not None else [])


async def _approve(*, conn: AsyncConnection, viewer_id: int, target_id: int) -> GraphChanges:
    count = await follow_domain.approve_request(
        conn=conn, viewer_id=viewer_id, requester_id=target_id
    )
    return GraphChanges([(target_id, viewer_id, True, count)] if count is not None else [])


async def _decline(*, conn: AsyncConnection, viewer_id: int, target_id: int) -> GraphChanges:
    await follow_domain.decline_request(conn=conn, viewer_id=viewer_id, requester_id=target_id)
    return GraphChanges()


async def _block(*, conn: AsyncConnection, viewer_id: int, target_id: int) -> GraphChanges:
    outcome = await follow_domain.block(conn=conn, viewer_id=viewer_id, target_id=target_id)
    out, back = outcome.target_followers, outcome.viewer_followers
    return GraphChanges(
        [
            *([(viewer_id, target_id, False, out)] if out is not None else []),
            *([(target_id, viewer_id, False, back)] if back is not None else []),
        ],
        hidden=outcome.new,
    )


async def _unblock(*, conn: AsyncConnection, viewer_id: int, target_id: int) -> GraphChanges:
    lifted = await follow_domain.unblock(conn=conn, viewer_id=viewer_id, target_id=target_id)
    return GraphChanges(hidden=lifted)


async def follow(info: Info, user_id: strawberry.ID) -> UserPayload:
    await limits.hit(info.context, limits.FOLLOW, info.context.require_viewer())
    return await _change_graph(info, user_id, _follow)


async def unfollow(info: Info, user_id: strawberry.ID) -> UserPayload:
    return await _change_graph(info, user_id, _unfollow)


async def approve_follow_request(info: Info, user_id: strawberry.ID) -> UserPayload:
    return await _change_graph(info, user_id, _approve)


async def decline_follow_request(info: Info, user_id: strawberry.ID) -> UserPayload:
    return await _change_graph(info, user_id, _decline)


async def block(info: Info, user_id: strawberry.ID) -> UserPayload:
    """A block also takes the blocked account's likes and comments off the viewer's posts
    (as Instagram does: the viewer could no longer see them to remove them)."""
    removed: list[tuple[int, list[int], list[int]]] = []
    shards = info.context.settings.counter_shards

    async def change(*, conn: AsyncConnection, viewer_id: int, target_id: int) -> GraphChanges:
        changes = await _block(conn=conn, viewer_id=viewer_id, target_id=target_id)
        liked = await remove_likes_on_posts_of(
            conn=conn, author_id=viewer_id, user_id=target_id, shards=shards
        )
        commented = await remove_comments_on_posts_of(
            conn=conn, author_id=viewer_id, user_id=target_id, shards=shards
        )
        removed.append((target_id, liked, commented))
        return changes

    payload = await _change_graph(info, user_id, change)
    # Committed: bring the caches in line, every post in one round trip.
    await info.context.resources.engagement.changed(
        likes=[(post_id, target_id) for target_id, liked, _ in removed for post_id in liked],
        comments=[post_id for _, _, commented in removed for post_id in commented],
    )
    return payload


async def unblock(info: Info, user_id: strawberry.ID) -> UserPayload:
    return await _change_graph(info, user_id, _unblock)
