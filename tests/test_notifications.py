"""Notifications (issue 8, point 5): written by the worker from the outbox, never for
one's own actions, once per (recipient, kind, actor, post, comment), hidden with a
block, paged newest first with an unread count, and never lost to a Redis outage.

Delivery is what a user sees: the action through the API, the outbox relay (which the
worker's cron runs every second; tests run it themselves, as for the feed), the
worker's job, then the `notifications` query. `deliver` waits for every delivery job
by its deterministic id, so a test can also assert that nothing was written.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from arq import Retry
from arq.jobs import Job
from sqlalchemy import select, text

from domain.notifications import OUTBOX_KIND, NotificationKind, record_notification
from infra.embedded import EmbeddedRedis, free_port
from infra.ids import to_global_id
from infra.resources import Resources
from models import OutboxEvent, table_of
from tests.conftest import Server, count_redis_round_trips, count_statements, make_worker
from tests.factories import MadeUser
from workers.feed import kick_relay, relay_outbox
from workers.jobs import PATIENT_TRIES
from workers.notifications import deliver_notifications
from workers.settings import shutdown, startup

DEADLINE = 30  # generous: only keeps a broken test from hanging

NOTIFICATIONS = """
query ($first: Int, $after: String) {
  notifications(first: $first, after: $after) {
    edges { cursor node { id kind read actor { username } post { id } comment { text } } }
    pageInfo { hasNextPage hasPreviousPage endCursor }
    unreadCount
  }
}
"""
MARK_READ = """
mutation { markNotificationsRead { edges { node { kind read } } unreadCount } }
"""
NODE = "query ($id: ID!) { node(id: $id) { ... on Notification { kind actor { username } } } }"
FOLLOW = "mutation ($id: ID!) { follow(userId: $id) { errors { code } } }"
UNFOLLOW = "mutation ($id: ID!) { unfollow(userId: $id) { errors { code } } }"
APPROVE = "mutation ($id: ID!) { approveFollowRequest(userId: $id) { errors { code } } }"
DECLINE = "mutation ($id: ID!) { declineFollowRequest(userId: $id) { errors { code } } }"
BLOCK = "mutation ($id: ID!) { block(userId: $id) { errors { code } } }"
UNBLOCK = "mutation ($id: ID!) { unblock(userId: $id) { errors { code } } }"
LIKE = "mutation ($id: ID!) { likePost(postId: $id) { errors { code } } }"
UNLIKE = "mutation ($id: ID!) { unlikePost(postId: $id) { errors { code } } }"
COMMENT = "mutation ($id: ID!, $text: String!) { addComment(postId: $id, text: $text) { comment { id } errors { code } } }"
DELETE_POST = "mutation ($id: ID!) { deletePost(id: $id) { errors { code } } }"

outbox = table_of(OutboxEvent)


async def deliver(server: Server) -> None:
    """Relay the outbox as the worker's cron does, then wait until every notification
    job has finished (each is named by its outbox row)."""
    assert server.worker is not None
    ctx = server.worker.ctx
    await relay_outbox(ctx)
    async with server.engine.connect() as conn:
        rows = await conn.execute(select(outbox.c.id).where(outbox.c.kind == OUTBOX_KIND))
        event_ids = list(rows.scalars())
    for event_id in event_ids:
        await Job(f"notify:{event_id}", ctx["resources"].jobs).result(timeout=DEADLINE)


async def notifications_of(gql: Any, user: MadeUser, **variables: Any) -> dict[str, Any]:
    data = await gql(NOTIFICATIONS, token=user.token, **variables)
    connection: dict[str, Any] = data["notifications"]
    return connection


def kinds_and_actors(connection: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["node"]["kind"], e["node"]["actor"]["username"]) for e in connection["edges"]]


async def act(gql: Any, document: str, user: MadeUser, **variables: Any) -> None:
    """A mutation that must succeed (no payload errors)."""
    data = await gql(document, token=user.token, **variables)
    [payload] = data.values()
    assert payload["errors"] == [], payload


# -- FOLLOW and FOLLOW_REQUEST, end to end through the worker ------------------------


async def test_a_follow_notifies_the_followed_user_only(feed_server, gql, factory):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    await act(gql, FOLLOW, alice, id=bob.id)
    await deliver(feed_server)

    bobs = await notifications_of(gql, bob)
    [edge] = bobs["edges"]
    assert edge["node"] == {
        "id": edge["node"]["id"],
        "kind": "FOLLOW",
        "read": False,
        "actor": {"username": "alice"},
        "post": None,
        "comment": None,
    }
    assert bobs["unreadCount"] == 1
    # The actor is never told about their own action.
    alices = await notifications_of(gql, alice)
    assert (alices["edges"], alices["unreadCount"]) == ([], 0)


async def test_a_request_to_a_private_account_notifies_it_and_the_approval_too(
    feed_server, gql, factory
):
    alice, carol = await factory.user("alice"), await factory.user("carol", is_private=True)
    await act(gql, FOLLOW, alice, id=carol.id)
    await act(gql, FOLLOW, alice, id=carol.id)  # asking twice is one request
    await deliver(feed_server)
    assert kinds_and_actors(await notifications_of(gql, carol)) == [("FOLLOW_REQUEST", "alice")]

    # When carol approves, alice now follows her: carol is told so, as for a public
    # account, and the answered request leaves her list.
    await act(gql, APPROVE, carol, id=alice.id)
    await deliver(feed_server)
    carols = await notifications_of(gql, carol)
    assert kinds_and_actors(carols) == [("FOLLOW", "alice")]
    assert carols["unreadCount"] == 1
    assert (await notifications_of(gql, alice))["edges"] == []


@pytest.mark.parametrize("ending", ["decline", "withdraw"])
async def test_a_request_declined_or_withdrawn_leaves_no_follow_request(
    feed_server, gql, factory, ending
):
    alice, carol = await factory.user("alice"), await factory.user("carol", is_private=True)
    await act(gql, FOLLOW, alice, id=carol.id)
    await deliver(feed_server)
    assert kinds_and_actors(await notifications_of(gql, carol)) == [("FOLLOW_REQUEST", "alice")]

    if ending == "decline":
        await act(gql, DECLINE, carol, id=alice.id)
    else:
        await act(gql, UNFOLLOW, alice, id=carol.id)
    carols = await notifications_of(gql, carol)
    assert (carols["edges"], carols["unreadCount"]) == ([], 0)


async def test_a_request_withdrawn_before_delivery_is_never_notified(feed_server, gql, factory):
    alice, carol = await factory.user("alice"), await factory.user("carol", is_private=True)
    # alice asks and changes her mind before the worker got to the request...
    await act(gql, FOLLOW, alice, id=carol.id)
    await act(gql, UNFOLLOW, alice, id=carol.id)
    await deliver(feed_server)
    # ...so carol is never asked about a request that is not there.
    assert (await notifications_of(gql, carol))["edges"] == []


async def test_follow_unfollow_follow_again_is_one_notification(feed_server, gql, factory):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    for document in (FOLLOW, UNFOLLOW, FOLLOW, UNFOLLOW, FOLLOW):
        await act(gql, document, alice, id=bob.id)
    await deliver(feed_server)
    assert kinds_and_actors(await notifications_of(gql, bob)) == [("FOLLOW", "alice")]


async def test_a_delivery_job_run_twice_writes_and_announces_once(feed_server, gql, factory):
    # At least once: the relay may hand a row to the worker again after a crash.
    alice, bob = await factory.user("alice"), await factory.user("bob")
    await act(gql, FOLLOW, alice, id=bob.id)
    await deliver(feed_server)
    async with feed_server.engine.begin() as conn:
        await conn.execute(text("UPDATE outbox SET sent_at = NULL"))
        await conn.execute(text("UPDATE notifications SET read_at = now()"))
    await feed_server.worker.ctx["resources"].jobs.flushdb()  # job ids and results forgotten
    await deliver(feed_server)
    bobs = await notifications_of(gql, bob)
    assert kinds_and_actors(bobs) == [("FOLLOW", "alice")]
    assert bobs["unreadCount"] == 0  # the same row, not a new unread one


# -- LIKE, COMMENT and MENTION, end to end -------------------------------------------


async def test_like_unlike_like_again_is_one_notification_about_the_post(feed_server, gql, factory):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    post_id = await factory.ready_post(bob, "sunset")
    post = to_global_id("Post", post_id)
    for document in (LIKE, UNLIKE, LIKE, LIKE):
        await act(gql, document, alice, id=post)
    await deliver(feed_server)

    [edge] = (await notifications_of(gql, bob))["edges"]
    assert edge["node"]["kind"] == "LIKE"
    assert edge["node"]["actor"] == {"username": "alice"}
    assert edge["node"]["post"] == {"id": post}
    assert edge["node"]["comment"] is None


async def test_a_comment_notifies_the_author_and_mentions_notify_those_named(
    feed_server, gql, factory
):
    alice, bob, carol = [await factory.user(name) for name in ("alice", "bob", "carol")]
    post_id = await factory.ready_post(bob, "sunset")
    post = to_global_id("Post", post_id)
    await act(gql, COMMENT, alice, id=post, text="look @carol, and me @alice")
    await deliver(feed_server)

    [for_bob] = (await notifications_of(gql, bob))["edges"]
    assert for_bob["node"]["kind"] == "COMMENT"
    assert for_bob["node"]["post"] == {"id": post}
    assert for_bob["node"]["comment"] == {"text": "look @carol, and me @alice"}
    [for_carol] = (await notifications_of(gql, carol))["edges"]
    assert for_carol["node"]["kind"] == "MENTION"
    assert for_carol["node"]["actor"] == {"username": "alice"}
    assert for_carol["node"]["comment"] == {"text": "look @carol, and me @alice"}
    # Mentioning oneself, or liking one's own post, tells no one.
    await act(gql, LIKE, bob, id=post)
    await deliver(feed_server)
    assert (await notifications_of(gql, alice))["edges"] == []
    assert len((await notifications_of(gql, bob))["edges"]) == 1


async def test_a_mention_reaches_only_those_who_can_see_the_post(feed_server, gql, factory):
    names = ("carol", "dave", "alice", "friend", "stranger", "blocked")
    carol, dave, alice, friend, stranger, blocked = [
        await factory.user(name, is_private=name == "carol") for name in names
    ]
    for follower in (alice, friend):
        await factory.follow(follower, carol)
    await act(gql, BLOCK, dave, id=blocked.id)
    private = to_global_id("Post", await factory.ready_post(carol, "private sunset"))
    public = to_global_id("Post", await factory.ready_post(dave, "public sunset"))
    # alice, who may see both posts, names people under them...
    await act(gql, COMMENT, alice, id=private, text="@friend @stranger look")
    await act(gql, COMMENT, alice, id=public, text="@blocked look")
    await deliver(feed_server)
    # ...and only those who can open the post are told: not a stranger to a private
    # account, nor someone the post's author blocked (they would find nothing there).
    assert kinds_and_actors(await notifications_of(gql, friend)) == [("MENTION", "alice")]
    assert (await notifications_of(gql, stranger))["edges"] == []
    async with feed_server.engine.connect() as conn:
        told = await conn.scalar(
            text("SELECT count(*) FROM notifications WHERE recipient_id = :r"), {"r": blocked.pk}
        )
    assert told == 0


async def test_own_actions_never_notify(feed_server, gql, factory):
    # The interface drops the actor from the recipients: alone, nothing is even queued.
    alice, bob = await factory.user("alice"), await factory.user("bob")
    post_id = await factory.ready_post(alice)
    async with feed_server.engine.begin() as conn:
        await record_notification(
            conn=conn, kind=NotificationKind.LIKE, actor_id=alice.pk, recipient_ids=[alice.pk]
        )
        queued = await conn.scalar(select(outbox.c.id).where(outbox.c.kind == OUTBOX_KIND))
    assert queued is None
    # Among others, the others are told.
    async with feed_server.engine.begin() as conn:
        await record_notification(
            conn=conn,
            kind=NotificationKind.MENTION,
            actor_id=alice.pk,
            recipient_ids=[alice.pk, bob.pk, bob.pk],
            post_id=post_id,
        )
    await deliver(feed_server)
    assert (await notifications_of(gql, alice))["edges"] == []
    assert kinds_and_actors(await notifications_of(gql, bob)) == [("MENTION", "alice")]


# -- Reading: unread count, marking read, paging, node, auth -------------------------


async def test_mark_notifications_read_clears_the_unread_count(feed_server, gql, factory):
    bob = await factory.user("bob")
    fans = await factory.users(3)
    for fan in fans:
        await act(gql, FOLLOW, fan, id=bob.id)
    await deliver(feed_server)
    assert (await notifications_of(gql, bob))["unreadCount"] == 3

    marked = (await gql(MARK_READ, token=bob.token))["markNotificationsRead"]
    assert marked["unreadCount"] == 0
    assert [e["node"] for e in marked["edges"]] == [{"kind": "FOLLOW", "read": True}] * 3

    # A new one afterwards is unread again, the old ones stay read.
    late = await factory.user("late")
    await act(gql, FOLLOW, late, id=bob.id)
    await deliver(feed_server)
    bobs = await notifications_of(gql, bob)
    assert bobs["unreadCount"] == 1
    assert [e["node"]["read"] for e in bobs["edges"]] == [False, True, True, True]
    assert bobs["edges"][0]["node"]["actor"] == {"username": "late"}


async def test_notifications_page_newest_first_without_overlap(feed_server, gql, factory):
    bob = await factory.user("bob")
    fans = await factory.users(25)
    for fan in fans:
        await act(gql, FOLLOW, fan, id=bob.id)
    await deliver(feed_server)

    first = await notifications_of(gql, bob, first=20)
    assert first["pageInfo"]["hasNextPage"] is True
    assert first["pageInfo"]["hasPreviousPage"] is False
    second = await notifications_of(gql, bob, first=20, after=first["pageInfo"]["endCursor"])
    assert second["pageInfo"]["hasNextPage"] is False
    assert second["pageInfo"]["hasPreviousPage"] is True
    actors = [a for _, a in kinds_and_actors(first) + kinds_and_actors(second)]
    assert len(first["edges"]) == 20
    assert sorted(actors) == sorted(fan.username for fan in fans)  # each once
    assert first["unreadCount"] == second["unreadCount"] == 25


async def test_the_newest_notification_comes_first(feed_server, gql, factory):
    bob = await factory.user("bob")
    for name in ("first", "second", "third"):
        fan = await factory.user(name)
        await act(gql, FOLLOW, fan, id=bob.id)
        await deliver(feed_server)  # one at a time: the order of delivery is known
    actors = [a for _, a in kinds_and_actors(await notifications_of(gql, bob))]
    assert actors == ["third", "second", "first"]


async def test_a_page_costs_a_bounded_number_of_statements(feed_server, gql, factory):
    bob = await factory.user("bob")
    post = to_global_id("Post", await factory.ready_post(bob, "sunset"))
    fans = await factory.users(10)
    for fan in fans:
        await act(gql, FOLLOW, fan, id=bob.id)
        await act(gql, LIKE, fan, id=post)
        await act(gql, COMMENT, fan, id=post, text="wow")
    await deliver(feed_server)
    await notifications_of(gql, bob, first=30)  # warm the record caches
    with count_statements(feed_server.engine) as statements:
        page = await notifications_of(gql, bob, first=30)
    assert len(page["edges"]) == 30
    # Whatever the page size: the page, one batch of actors, one of the posts' authors
    # (the user cache may miss so soon after the follows changed their counts), the
    # comments asked for, and the unread count. The posts come from the record cache.
    assert statements.count <= 5, statements.statements


PAGE_WITH_POSTS = """
query ($first: Int) {
  notifications(first: $first) {
    edges { node { kind post { id likeCount commentCount viewerHasLiked } } }
  }
}
"""


async def test_a_page_about_many_posts_costs_the_same_as_one_about_a_few(feed_server, gql, factory):
    # Each notification about a post of its own: the page's posts, their engagement and
    # their visibility must come in batches, not one round per notification.
    alice, bob = await factory.user("alice"), await factory.user("bob")
    for _ in range(12):
        post = to_global_id("Post", await factory.ready_post(bob))
        await act(gql, LIKE, alice, id=post)
    await deliver(feed_server)

    async def cost(first: int) -> tuple[int, int]:
        await gql(PAGE_WITH_POSTS, token=bob.token, first=first)  # warm the caches alike
        with (
            count_statements(feed_server.engine) as statements,
            count_redis_round_trips(feed_server.redis) as round_trips,
        ):
            data = await gql(PAGE_WITH_POSTS, token=bob.token, first=first)
        edges = data["notifications"]["edges"]
        assert len(edges) == first
        assert all(edge["node"]["post"]["likeCount"] == 1 for edge in edges)
        return statements.count, round_trips.count

    few, many = await cost(3), await cost(12)
    assert many == few
    statements, round_trips = many
    assert statements <= 3
    assert round_trips <= 6


async def test_unauthenticated_reads_are_refused(feed_server, gql):
    body = await gql.raw(NOTIFICATIONS)
    assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAUTHENTICATED"]
    body = await gql.raw(MARK_READ)
    assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAUTHENTICATED"]


async def test_a_notification_is_a_node_for_its_recipient_only(feed_server, gql, factory):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    await act(gql, FOLLOW, alice, id=bob.id)
    await deliver(feed_server)
    [edge] = (await notifications_of(gql, bob))["edges"]
    node_id = edge["node"]["id"]
    assert (await gql(NODE, token=alice.token, id=node_id))["node"] is None
    assert (await gql(NODE, id=node_id))["node"] is None
    mine = (await gql(NODE, token=bob.token, id=node_id))["node"]
    assert mine == {"kind": "FOLLOW", "actor": {"username": "alice"}}


# -- Blocks and deleted posts --------------------------------------------------------


async def test_a_block_hides_the_actors_notifications_either_way(feed_server, gql, factory):
    alice, bob, dave = [await factory.user(name) for name in ("alice", "bob", "dave")]
    await act(gql, FOLLOW, alice, id=bob.id)
    await act(gql, FOLLOW, dave, id=bob.id)
    await deliver(feed_server)
    assert len((await notifications_of(gql, bob))["edges"]) == 2

    # bob blocks alice: her notification is gone from his list and his count.
    await act(gql, BLOCK, bob, id=alice.id)
    bobs = await notifications_of(gql, bob)
    assert (kinds_and_actors(bobs), bobs["unreadCount"]) == ([("FOLLOW", "dave")], 1)
    # dave blocks bob (the other way): dave's goes too.
    await act(gql, BLOCK, dave, id=bob.id)
    bobs = await notifications_of(gql, bob)
    assert (bobs["edges"], bobs["unreadCount"]) == ([], 0)
    # The block took them away for good: an unblock restores nothing, as it restores no
    # follow.
    await act(gql, UNBLOCK, bob, id=alice.id)
    await act(gql, UNBLOCK, dave, id=bob.id)
    bobs = await notifications_of(gql, bob)
    assert (bobs["edges"], bobs["unreadCount"]) == ([], 0)


async def test_no_notification_is_written_across_a_block_made_before_delivery(
    feed_server, gql, factory
):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    await act(gql, FOLLOW, alice, id=bob.id)
    # bob blocks alice before the worker got to it...
    await act(gql, BLOCK, bob, id=alice.id)
    await deliver(feed_server)
    # ...so none was written: lifting the block shows nothing.
    await act(gql, UNBLOCK, bob, id=alice.id)
    assert (await notifications_of(gql, bob))["edges"] == []


async def test_notifications_about_a_deleted_post_are_left_out(feed_server, gql, factory):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    kept = to_global_id("Post", await factory.ready_post(bob, "kept"))
    gone = to_global_id("Post", await factory.ready_post(bob, "gone"))
    await act(gql, LIKE, alice, id=kept)
    await act(gql, LIKE, alice, id=gone)
    await deliver(feed_server)
    assert len((await notifications_of(gql, bob))["edges"]) == 2

    await act(gql, DELETE_POST, bob, id=gone)
    bobs = await notifications_of(gql, bob)
    assert [e["node"]["post"] for e in bobs["edges"]] == [{"id": kept}]
    assert bobs["unreadCount"] == 1


# -- None lost when Redis or PostgreSQL is down ---------------------------------------


async def test_a_delivery_that_cannot_reach_postgresql_is_retried_not_dropped(server):
    # The outbox row is marked sent once the job is queued: only a retry can still
    # deliver it. A database at a closed port is a real connection failure.
    settings = replace(
        server.settings, database_url=f"postgresql://nobody@127.0.0.1:{free_port()}/nowhere"
    )
    resources = Resources.create(settings)
    payload = {"kind": "FOLLOW", "actor_id": 1, "recipient_ids": [2]}
    try:
        ctx: dict[str, Any] = {"resources": resources, "job_try": 1, "max_tries": 5}
        with pytest.raises(Retry):
            await deliver_notifications(ctx, 1, payload)
        # The last try lets the failure through, for arq to record.
        ctx["job_try"] = PATIENT_TRIES  # retried for about an hour (docs/delivery.md)
        with pytest.raises(OSError):
            await deliver_notifications(ctx, 1, payload)
    finally:
        await resources.close()


async def test_a_notification_made_while_redis_is_down_is_delivered_after(
    server, gql, factory, tmp_path
):
    # The worker's Redis (its job queue) is its own here, so it can be stopped.
    redis_server = EmbeddedRedis(tmp_path / "redis", persistent=True).start()
    settings = replace(server.settings, redis_url=redis_server.url)
    ctx: dict[str, Any] = {"settings": settings}
    await startup(ctx)
    try:
        alice, bob = await factory.user("alice"), await factory.user("bob")
        # Given the job queue is unreachable when alice follows bob...
        redis_server.stop()
        await act(gql, FOLLOW, alice, id=bob.id)
        await kick_relay(ctx)  # the relay fails quietly and keeps the rows
        async with server.engine.connect() as conn:
            unsent = await conn.scalar(text("SELECT count(*) FROM outbox WHERE sent_at IS NULL"))
        assert unsent == 2  # the notification, and the follow's feed change (docs/delivery.md)
        assert (await notifications_of(gql, bob))["edges"] == []

        # ...when it is back (same address, its data intact) and the worker runs...
        redis_server.start(port=redis_server.port)
        assert await relay_outbox(ctx) == 2
        worker = make_worker(settings, burst=True)  # runs what is queued, then stops
        await worker.main()
        await worker.close()

        # ...then bob has his notification, and nothing is left to send.
        assert kinds_and_actors(await notifications_of(gql, bob)) == [("FOLLOW", "alice")]
        async with server.engine.connect() as conn:
            unsent = await conn.scalar(text("SELECT count(*) FROM outbox WHERE sent_at IS NULL"))
        assert unsent == 0
    finally:
        await shutdown(ctx)
        redis_server.stop()
        redis_server.wipe()
