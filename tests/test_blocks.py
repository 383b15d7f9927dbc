"""Blocks hide two users from each other, both ways, everywhere, and answer as if the
other did not exist, so the blocked user cannot tell a block from a deleted account.

(tests/test_authorization.py has the same rules for every query and mutation as tables.)
"""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from sqlalchemy import text
from websockets.typing import Subprotocol

from domain import follows as follow_domain
from domain import likes as like_domain
from domain.blocks import blocked_either_way, hidden_key, hold_against_blocks
from domain.comments import remove_comments_on_posts_of
from domain.likes import remove_likes_on_posts_of
from infra.feedstore import feed_key, user_channel
from tests.conftest import count_statements
from tests.factories import Factory, MadeUser
from tests.social_factories import block, comment, fanned_out_post, post_gid, until

BLOCK = (
    "mutation ($id: ID!) { block(userId: $id) { user { username } errors { field message code } } }"
)
UNBLOCK = "mutation ($id: ID!) { unblock(userId: $id) { user { username } errors { field message code } } }"
FOLLOW = "mutation ($id: ID!) { follow(userId: $id) { user { username } errors { field message code } } }"
UNFOLLOW = "mutation ($id: ID!) { unfollow(userId: $id) { user { username } errors { field message code } } }"
APPROVE = "mutation ($id: ID!) { approveFollowRequest(userId: $id) { user { username } errors { field message code } } }"
DECLINE = "mutation ($id: ID!) { declineFollowRequest(userId: $id) { user { username } errors { field message code } } }"
GRAPH_MUTATIONS = {
    "follow": FOLLOW,
    "unfollow": UNFOLLOW,
    "approveFollowRequest": APPROVE,
    "declineFollowRequest": DECLINE,
    "block": BLOCK,
    "unblock": UNBLOCK,
}

POST = "query ($id: ID!) { post(id: $id) { id author { username } media { id } } }"
NODE = "query ($id: ID!) { node(id: $id) { __typename id } }"
PROFILE = """
query ($name: String!) {
  user(username: $name) {
    username followerCount followingCount viewerIsFollowing followsViewer
    posts(first: 10) { edges { node { id } } }
  }
}
"""
LISTS = """
query ($name: String!) {
  user(username: $name) {
    followers(first: 10) { edges { node { username } } }
    following(first: 10) { edges { node { username } } }
  }
}
"""
FEED = "query { feed(first: 20) { edges { node { id author { username } } } } }"
FEED_ITEM = "subscription { feedItemAdded { id author { username } } }"


async def feed_authors(gql, user: MadeUser) -> list[str]:
    edges = (await gql(FEED, token=user.token))["feed"]["edges"]
    return [edge["node"]["author"]["username"] for edge in edges]


async def list_names(gql, viewer: MadeUser | None, name: str) -> dict[str, list[str]]:
    token = viewer.token if viewer else None
    data = (await gql(LISTS, token=token, name=name))["user"]
    return {
        kind: [edge["node"]["username"] for edge in data[kind]["edges"]]
        for kind in ("followers", "following")
    }


async def a_deleted_user(factory: Factory) -> str:
    """The global ID of an account that no longer exists: what a hidden one must look like."""
    ghost = await factory.user()
    async with factory.engine.begin() as conn:
        await conn.execute(text("DELETE FROM users WHERE id = :id"), {"id": ghost.pk})
    return ghost.id


async def test_the_blocked_user_opening_the_blockers_post_by_id_gets_null(gql, factory, server):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    alices_post, bobs_post = await factory.ready_post(alice), await factory.ready_post(bob)
    seen = (await gql(POST, token=bob.token, id=post_gid(alices_post)))["post"]
    assert seen["author"] == {"username": "alice"}  # and bob's hidden set is now cached
    media_id = seen["media"][0]["id"]

    # When alice blocks bob
    await block(gql, alice, bob)

    # Then bob opening alice's post, its media or her account by id gets null, at once
    for global_id in (post_gid(alices_post), media_id, alice.id):
        assert (await gql(NODE, token=bob.token, id=global_id))["node"] is None, global_id
    assert (await gql(POST, token=bob.token, id=post_gid(alices_post)))["post"] is None
    # And the other way round: alice no longer sees bob's
    assert (await gql(POST, token=alice.token, id=post_gid(bobs_post)))["post"] is None
    assert (await gql(NODE, token=alice.token, id=bob.id))["node"] is None
    # Everyone else still does, and each still sees their own
    carol = await factory.user("carol")
    assert (await gql(POST, token=carol.token, id=post_gid(alices_post)))["post"] is not None
    assert (await gql(POST, id=post_gid(bobs_post)))["post"] is not None
    assert (await gql(POST, token=bob.token, id=post_gid(bobs_post)))["post"] is not None
    # The check costs no SQL once warm: the hidden set is one Redis read per request
    await gql(POST, token=bob.token, id=post_gid(alices_post))
    with count_statements(server.engine) as sql:
        assert (await gql(POST, token=bob.token, id=post_gid(alices_post)))["post"] is None
    assert sql.count == 0, sql.statements
    # And with Redis emptied, the hidden sets come back from PostgreSQL
    await server.redis.flushdb()
    assert (await gql(POST, token=bob.token, id=post_gid(alices_post)))["post"] is None


async def test_profiles_are_null_both_ways_and_lists_leave_the_other_out(gql, factory):
    alice, bob, carol, dave = [await factory.user(n) for n in ("alice", "bob", "carol", "dave")]
    # carol is followed by alice, bob and dave, and follows all three back
    for user in (alice, bob, dave):
        await factory.follow(user, carol)
        await factory.follow(carol, user)
    await factory.follow(alice, bob)

    await block(gql, bob, alice)

    for viewer, other in ((alice, bob), (bob, alice)):
        assert (await gql(PROFILE, token=viewer.token, name=other.username))["user"] is None
        # Nor through a third party's lists
        lists = await list_names(gql, viewer, "carol")
        assert lists == {
            "followers": ["dave", viewer.username],
            "following": ["dave", viewer.username],
        }
    # Others see everyone; the counts are the account's own and stay public
    assert (await list_names(gql, dave, "carol"))["followers"] == ["dave", "bob", "alice"]
    assert (await list_names(gql, None, "carol"))["following"] == ["dave", "bob", "alice"]
    profile = (await gql(PROFILE, token=alice.token, name="carol"))["user"]
    assert (profile["followerCount"], profile["followingCount"]) == (3, 3)
    # The follow between them is gone: alice's own lists hold carol only
    assert await list_names(gql, alice, "alice") == {"followers": ["carol"], "following": ["carol"]}


async def test_every_refusal_between_them_reads_as_a_missing_user(gql, factory):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    ghost_id = await a_deleted_user(factory)
    # What each graph mutation answers about an account that does not exist
    missing = {
        name: (await gql(document, token=bob.token, id=ghost_id))[name]
        for name, document in GRAPH_MUTATIONS.items()
    }
    assert all(payload["errors"][0]["code"] == "NOT_FOUND" for payload in missing.values())

    await block(gql, alice, bob)

    # bob (the blocked) gets exactly that about alice, whatever he tries, block included
    for name, document in GRAPH_MUTATIONS.items():
        assert (await gql(document, token=bob.token, id=alice.id))[name] == missing[name], name
    # alice (the blocker) too, except lifting or repeating her own block
    for name in ("follow", "unfollow", "approveFollowRequest", "declineFollowRequest"):
        answer = (await gql(GRAPH_MUTATIONS[name], token=alice.token, id=bob.id))[name]
        assert answer == missing[name], name
    again = (await gql(BLOCK, token=alice.token, id=bob.id))["block"]
    assert again == {"user": None, "errors": []}  # idempotent; bob stays hidden


async def test_a_pending_request_goes_with_the_block(gql, factory):
    owner, asker = await factory.user("owner", is_private=True), await factory.user("asker")
    requested = (await gql(FOLLOW, token=asker.token, id=owner.id))["follow"]
    assert requested["errors"] == []

    await block(gql, asker, owner)  # the one who asked blocks: the request is withdrawn

    for name in ("approveFollowRequest", "declineFollowRequest"):
        answer = (await gql(GRAPH_MUTATIONS[name], token=owner.token, id=asker.id))[name]
        assert answer["errors"][0]["code"] == "NOT_FOUND"
    assert (await gql(UNBLOCK, token=asker.token, id=owner.id))["unblock"]["errors"] == []
    # Still nothing to approve after the unblock: no request comes back
    answer = (await gql(APPROVE, token=owner.token, id=asker.id))["approveFollowRequest"]
    assert answer["errors"][0]["code"] == "NOT_FOUND"
    profile = (await gql(PROFILE, token=asker.token, name="owner"))["user"]
    assert (profile["viewerIsFollowing"], profile["followerCount"]) == (False, 0)


async def test_unblock_shows_them_again_and_restores_no_follow(gql, factory):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    await factory.follow(alice, bob)
    await factory.follow(bob, alice)
    bobs_post = await factory.ready_post(bob)
    await block(gql, alice, bob)

    unblocked = (await gql(UNBLOCK, token=alice.token, id=bob.id))["unblock"]

    assert unblocked == {"user": {"username": "bob"}, "errors": []}
    profile = (await gql(PROFILE, token=alice.token, name="bob"))["user"]
    assert profile["viewerIsFollowing"] is False
    assert profile["followsViewer"] is False
    assert (profile["followerCount"], profile["followingCount"]) == (0, 0)
    assert profile["posts"]["edges"] == [{"node": {"id": post_gid(bobs_post)}}]
    assert (await gql(POST, token=alice.token, id=post_gid(bobs_post)))["post"] is not None
    assert await feed_authors(gql, alice) == []  # bob's posts stay out of her feed
    # Following is possible again, and it is a fresh start
    assert (await gql(FOLLOW, token=bob.token, id=alice.id))["follow"] == {
        "user": {"username": "alice"},
        "errors": [],
    }


async def test_only_the_blocker_can_lift_a_block(gql, factory):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    await block(gql, alice, bob)
    refused = (await gql(UNBLOCK, token=bob.token, id=alice.id))["unblock"]
    assert refused["errors"][0]["code"] == "NOT_FOUND"
    assert (await gql(PROFILE, token=bob.token, name="alice"))["user"] is None


async def test_two_users_blocking_each_other_at_once_make_one_block(gql, factory):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    await factory.follow(alice, bob)
    await factory.follow(bob, alice)
    answers = await asyncio.gather(
        gql(BLOCK, token=alice.token, id=bob.id), gql(BLOCK, token=bob.token, id=alice.id)
    )
    codes = sorted(str([e["code"] for e in a["block"]["errors"]]) for a in answers)
    # One wins; to the other, the winner no longer exists
    assert codes == ["['NOT_FOUND']", "[]"]
    for user in (alice, bob):
        other = bob if user is alice else alice
        assert (await gql(PROFILE, token=user.token, name=other.username))["user"] is None
    async with factory.engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM blocks")) == 1
        assert await conn.scalar(text("SELECT count(*) FROM follows")) == 0


async def test_both_home_feeds_lose_the_others_posts(gql, factory):
    alice, bob, carol = [await factory.user(n) for n in ("alice", "bob", "carol")]
    for user in (alice, bob):
        await factory.follow(user, carol)
    await factory.follow(alice, bob)
    await factory.follow(bob, alice)
    for author in (alice, bob, carol):
        await factory.ready_post(author)
    # Both feeds are in Redis now (built on first read), each with the other's post
    assert sorted(await feed_authors(gql, alice)) == ["alice", "bob", "carol"]
    assert sorted(await feed_authors(gql, bob)) == ["alice", "bob", "carol"]

    await block(gql, alice, bob)

    assert sorted(await feed_authors(gql, alice)) == ["alice", "carol"]
    assert sorted(await feed_authors(gql, bob)) == ["bob", "carol"]


async def test_a_blocking_celebrity_is_no_longer_pulled_into_the_feed(feed_server, gql, factory):
    # This server's celebrity threshold is 3: star's posts are merged in at read time
    star, fan = await factory.user("star"), await factory.user("fan")
    for other in await factory.users(2):
        await factory.follow(other, star)
    await factory.follow(fan, star)
    await feed_authors(gql, fan)
    await fanned_out_post(feed_server, factory, star)
    assert await feed_authors(gql, fan) == ["star"]

    await block(gql, star, fan)

    assert await feed_authors(gql, fan) == []
    assert await feed_authors(gql, star) == ["star"]


async def _subscribe(server, user: MadeUser) -> websockets.ClientConnection:
    url = server.base_url.replace("http://", "ws://") + "/graphql"
    ws = await websockets.connect(url, subprotocols=[Subprotocol("graphql-transport-ws")])
    auth = {"authorization": f"Bearer {user.token}"}
    await ws.send(json.dumps({"type": "connection_init", "payload": auth}))
    async with asyncio.timeout(30):
        assert json.loads(await ws.recv())["type"] == "connection_ack"
    await ws.send(json.dumps({"id": "f", "type": "subscribe", "payload": {"query": FEED_ITEM}}))

    async def listening() -> bool:  # once its channel has a subscriber in Redis
        return (await server.redis.pubsub_numsub(user_channel(user.pk)))[0][1] > 0

    await until(listening)
    return ws


@pytest.mark.parametrize("blocker", ["author", "reader"])
async def test_live_deliveries_stop_both_ways(feed_server, gql, factory, blocker):
    author, friend, reader = [await factory.user(n) for n in ("author", "friend", "reader")]
    await factory.follow(reader, author)
    await factory.follow(reader, friend)
    await feed_authors(gql, reader)  # an active reader: fan-out publishes to them
    ws = await _subscribe(feed_server, reader)
    try:
        if blocker == "author":
            await block(gql, author, reader)
        else:
            await block(gql, reader, author)
        # The author's post is fanned out first, then the friend's: had the author's
        # reached the reader, it would be the first message on their channel.
        for who in (author, friend):
            await fanned_out_post(feed_server, factory, who)
        async with asyncio.timeout(30):
            message = json.loads(await ws.recv())
        assert message["payload"]["data"]["feedItemAdded"]["author"] == {"username": "friend"}
    finally:
        await ws.close()


LIKE = "mutation ($id: ID!) { likePost(postId: $id) { errors { code } } }"
ENGAGEMENT = """
query ($id: ID!) {
  post(id: $id) { likeCount commentCount comments(first: 10) { edges { node { text } } } }
}
"""


async def test_a_block_takes_the_blocked_accounts_likes_and_comments_off_the_blockers_posts(
    gql, factory
):
    alice, bob, carol = (
        await factory.user("alice"),
        await factory.user("bob"),
        await factory.user("carol"),
    )
    alices_post, carols_post = await factory.ready_post(alice), await factory.ready_post(carol)
    for post in (alices_post, carols_post):
        for liker in (bob, carol):
            assert (await gql(LIKE, token=liker.token, id=post_gid(post)))["likePost"] == {
                "errors": []
            }
        await comment(gql, bob, post, "from bob")
        await comment(gql, carol, post, "from carol")
    before = (await gql(ENGAGEMENT, token=carol.token, id=post_gid(alices_post)))["post"]
    assert (before["likeCount"], before["commentCount"]) == (2, 2)

    # When alice blocks bob
    await block(gql, alice, bob)

    # Then bob's like and comment are gone from alice's post, for everyone, counts included
    after = (await gql(ENGAGEMENT, token=carol.token, id=post_gid(alices_post)))["post"]
    assert (after["likeCount"], after["commentCount"]) == (1, 1)
    assert [e["node"]["text"] for e in after["comments"]["edges"]] == ["from carol"]
    # And bob's engagement elsewhere stays
    elsewhere = (await gql(ENGAGEMENT, token=carol.token, id=post_gid(carols_post)))["post"]
    assert (elsewhere["likeCount"], elsewhere["commentCount"]) == (2, 2)


# -- A block and a like at the same moment ---------------------------------------------

ADD_COMMENT = """
mutation ($id: ID!, $text: String!) { addComment(postId: $id, text: $text) { errors { code } } }
"""
LIKES_AND_COMMENTS = """
SELECT (SELECT count(*) FROM likes WHERE post_id = :post AND user_id = :user),
       (SELECT count(*) FROM comments WHERE post_id = :post AND author_id = :user)
"""


async def lock_waiters(engine) -> int:
    """Sessions of this database waiting for a row lock right now."""
    async with engine.connect() as conn:
        waiting = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        )
    return int(waiting or 0)


async def likes_and_comments(engine, post_id: int, user: MadeUser) -> tuple[int, int]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(text(LIKES_AND_COMMENTS), {"post": post_id, "user": user.pk})
        ).one()
    return int(row[0]), int(row[1])


async def test_a_like_and_a_comment_made_while_a_block_commits_wait_and_are_refused(
    server, gql, factory
):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    post_id = await factory.ready_post(alice)
    # Given alice's block of bob has done everything but commit (its clean-up found
    # nothing of bob's on her posts)...
    async with server.engine.begin() as conn:
        await follow_domain.block(conn=conn, viewer_id=alice.pk, target_id=bob.pk)
        await remove_likes_on_posts_of(conn=conn, author_id=alice.pk, user_id=bob.pk)
        await remove_comments_on_posts_of(conn=conn, author_id=alice.pk, user_id=bob.pk)
        # ...when bob likes and comments on her post (he still sees it: nothing committed)...
        like = asyncio.create_task(gql(LIKE, token=bob.token, id=post_gid(post_id)))
        add = asyncio.create_task(
            gql(ADD_COMMENT, token=bob.token, id=post_gid(post_id), text="hi")
        )

        async def both_waiting_or_done() -> bool:
            return (like.done() and add.done()) or await lock_waiters(server.engine) == 2

        await until(both_waiting_or_done)  # they wait for the block's row locks
    # ...then, once it commits, both see the block and write nothing behind its clean-up.
    assert (await like)["likePost"] == {"errors": [{"code": "NOT_FOUND"}]}
    assert (await add)["addComment"] == {"errors": [{"code": "NOT_FOUND"}]}
    assert await likes_and_comments(server.engine, post_id, bob) == (0, 0)


async def test_a_block_made_while_a_like_commits_waits_and_takes_it_away(server, gql, factory):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    post_id = await factory.ready_post(alice)
    # Given bob's like has passed its block check and is written, not yet committed...
    async with server.engine.begin() as conn:
        await hold_against_blocks(conn=conn, user_id=bob.pk)
        assert not await blocked_either_way(conn=conn, a=bob.pk, b=alice.pk)
        await like_domain.like(conn=conn, post_id=post_id, post_author_id=alice.pk, user_id=bob.pk)
        # ...when alice blocks him...
        blocking = asyncio.create_task(gql(BLOCK, token=alice.token, id=bob.id))

        async def waiting_or_done() -> bool:
            return blocking.done() or await lock_waiters(server.engine) == 1

        await until(waiting_or_done)  # the block waits for the like's row lock
    # ...then the block, going on after the like committed, takes it away.
    assert (await blocking)["block"] == {"user": None, "errors": []}
    assert await likes_and_comments(server.engine, post_id, bob) == (0, 0)


# -- Redis failing after a block committed ---------------------------------------------


async def test_a_block_stands_and_cleans_the_feed_when_redis_refuses_the_cache_refresh(
    server, gql, factory
):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    await factory.follow(alice, bob)
    post_id = await factory.ready_post(bob)
    assert await feed_authors(gql, alice) == ["bob"]  # alice's feed is built, bob's post in it
    # Given Redis refuses scripts (the hidden sets' refresh runs one) but not the rest...
    await server.redis.execute_command("ACL", "SETUSER", "default", "-@scripting")
    try:
        # ...when alice blocks bob, the block is answered as done...
        payload = (await gql(BLOCK, token=alice.token, id=bob.id))["block"]
    finally:
        await server.redis.execute_command("ACL", "SETUSER", "default", "+@all")
    assert payload == {"user": None, "errors": []}
    # ...and the feed clean-up after it still ran: bob's post left alice's feed.
    assert await server.redis.zscore(feed_key(alice.pk), str(post_id)) is None
    # Each is hidden from the other as soon as the tombstones laid before the commit
    # send readers to PostgreSQL.
    assert (await gql(POST, token=alice.token, id=post_gid(post_id)))["post"] is None
    assert (await gql(PROFILE, token=bob.token, name="alice"))["user"] is None


async def test_a_block_or_unblock_that_changes_nothing_leaves_the_cached_hidden_sets(
    server, gql, factory
):
    alice, bob, mallory = [await factory.user(name) for name in ("alice", "bob", "mallory")]
    await block(gql, alice, bob)
    cached = await server.redis.get(hidden_key(bob.pk))
    assert json.loads(cached) == [alice.pk]
    # Anyone may "unblock" bob, and alice may block him again: nothing changes, so his
    # cached set stays, and his requests keep reading Redis, not PostgreSQL.
    for _ in range(3):
        assert (await gql(UNBLOCK, token=mallory.token, id=bob.id))["unblock"]["errors"] == []
    assert (await gql(BLOCK, token=alice.token, id=bob.id))["block"]["errors"] == []
    assert await server.redis.get(hidden_key(bob.pk)) == cached
