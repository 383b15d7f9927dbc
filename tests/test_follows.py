"""The follow graph: follow/unfollow, requests, blocks, connections, exact counters."""

from __future__ import annotations

import asyncio

from tests.conftest import count_statements

FOLLOW = """
mutation ($id: ID!) {
  follow(userId: $id) {
    user { username followerCount viewerIsFollowing followsViewer }
    errors { field message code }
  }
}
"""
UNFOLLOW = """
mutation ($id: ID!) {
  unfollow(userId: $id) { user { followerCount viewerIsFollowing } errors { field code } }
}
"""
APPROVE = "mutation ($id: ID!) { approveFollowRequest(userId: $id) { user { followingCount } errors { code } } }"
DECLINE = "mutation ($id: ID!) { declineFollowRequest(userId: $id) { errors { code } } }"
BLOCK = "mutation ($id: ID!) { block(userId: $id) { errors { code } } }"
UNBLOCK = "mutation ($id: ID!) { unblock(userId: $id) { errors { code } } }"
COUNTS = "query ($name: String!) { user(username: $name) { followerCount followingCount } }"

FOLLOWERS = """
query ($name: String!, $first: Int, $after: String) {
  user(username: $name) {
    followers(first: $first, after: $after) {
      edges { cursor node { username followerCount followingCount viewerIsFollowing followsViewer } }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
  }
}
"""
FOLLOWING = """
query ($name: String!, $first: Int) {
  user(username: $name) { following(first: $first) { edges { node { username } } } }
}
"""


async def counts(gql, name):
    return (await gql(COUNTS, name=name))["user"]


async def test_follow_and_unfollow_are_idempotent(gql, factory):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    # When alice follows bob twice
    for _ in range(2):
        payload = (await gql(FOLLOW, token=alice.token, id=bob.id))["follow"]
        assert payload["errors"] == []
        assert payload["user"] == {
            "username": "bob",
            "followerCount": 1,
            "viewerIsFollowing": True,
            "followsViewer": False,
        }
    # Then the counters moved once
    assert await counts(gql, "alice") == {"followerCount": 0, "followingCount": 1}
    # And unfollowing twice leaves zero, without errors
    for _ in range(2):
        payload = (await gql(UNFOLLOW, token=alice.token, id=bob.id))["unfollow"]
        assert payload == {"user": {"followerCount": 0, "viewerIsFollowing": False}, "errors": []}
    assert await counts(gql, "alice") == {"followerCount": 0, "followingCount": 0}


async def test_follow_rejects_self_missing_and_malformed_targets(gql, factory):
    alice = await factory.user("alice")
    ghost = await factory.user("ghost")
    ghost_id = ghost.id
    async with factory.engine.begin() as conn:
        from sqlalchemy import text

        await conn.execute(text("DELETE FROM users WHERE id = :id"), {"id": ghost.pk})

    self_follow = (await gql(FOLLOW, token=alice.token, id=alice.id))["follow"]
    assert self_follow["errors"][0]["code"] == "INVALID_INPUT"
    missing = (await gql(FOLLOW, token=alice.token, id=ghost_id))["follow"]
    assert missing["errors"] == [
        {"field": "userId", "message": "No such user.", "code": "NOT_FOUND"}
    ]
    malformed = (await gql(FOLLOW, token=alice.token, id="%%%"))["follow"]
    assert malformed["errors"][0]["code"] == "INVALID_INPUT"
    assert malformed["errors"][0]["field"] == "userId"
    assert await counts(gql, "alice") == {"followerCount": 0, "followingCount": 0}


async def test_follow_needs_a_logged_in_viewer(gql, factory):
    bob = await factory.user("bob")
    body = await gql.raw(FOLLOW, id=bob.id)
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_counts_stay_exact_under_concurrent_follows(gql, factory):
    star = await factory.user("star")
    fans = await factory.users(50)
    # When 50 users follow at once, some of them twice, and 10 of them unfollow at once too
    follows = [gql(FOLLOW, token=fan.token, id=star.id) for fan in fans]
    repeats = [gql(FOLLOW, token=fan.token, id=star.id) for fan in fans[:20]]
    results = await asyncio.gather(*follows, *repeats)
    assert all(r["follow"]["errors"] == [] for r in results)
    assert await counts(gql, "star") == {"followerCount": 50, "followingCount": 0}
    # Mutual follows racing in both directions must not deadlock either
    back = [gql(FOLLOW, token=star.token, id=fan.id) for fan in fans[:10]]
    unfollows = [gql(UNFOLLOW, token=fan.token, id=star.id) for fan in fans[:10]]
    await asyncio.gather(*back, *unfollows, *unfollows[:0])
    assert await counts(gql, "star") == {"followerCount": 40, "followingCount": 10}
    for fan in fans[:10]:
        assert await counts(gql, fan.username) == {"followerCount": 1, "followingCount": 0}


async def test_followers_connection_pages_newest_first_with_stable_cursors(gql, factory):
    star = await factory.user("star")
    fans = await factory.users(5)
    for fan in fans:
        await factory.follow(fan, star)
    first_page = (await gql(FOLLOWERS, name="star", first=2))["user"]["followers"]
    names = [e["node"]["username"] for e in first_page["edges"]]
    assert names == [fans[4].username, fans[3].username]
    assert first_page["pageInfo"]["hasNextPage"] is True
    assert first_page["pageInfo"]["hasPreviousPage"] is False

    # New followers arrive between two page requests: the next page neither repeats nor skips.
    late = await factory.users(3)
    for fan in late:
        await factory.follow(fan, star)
    after = first_page["pageInfo"]["endCursor"]
    second = (await gql(FOLLOWERS, name="star", first=2, after=after))["user"]["followers"]
    third_after = second["pageInfo"]["endCursor"]
    third = (await gql(FOLLOWERS, name="star", first=2, after=third_after))["user"]["followers"]
    rest = [e["node"]["username"] for e in second["edges"] + third["edges"]]
    assert rest == [fans[2].username, fans[1].username, fans[0].username]
    assert third["pageInfo"]["hasNextPage"] is False
    assert second["pageInfo"]["hasPreviousPage"] is True

    following = (await gql(FOLLOWING, name=fans[0].username, first=10))["user"]["following"]
    assert [e["node"]["username"] for e in following["edges"]] == ["star"]


async def test_page_size_and_cursor_are_validated(gql, factory):
    await factory.user("star")
    for first in (0, -1, 101):
        body = await gql.raw(FOLLOWERS, name="star", first=first)
        assert body["errors"][0]["extensions"]["code"] == "INVALID_INPUT", first
    for cursor in ("nonsense", "YzphYmM", "Zm9v", "!!"):
        body = await gql.raw(FOLLOWERS, name="star", first=5, after=cursor)
        assert body["errors"][0]["extensions"]["code"] == "INVALID_INPUT", cursor


async def test_followers_page_costs_a_fixed_number_of_statements(gql, factory, server):
    star = await factory.user("star")
    viewer = await factory.user("viewer")
    fans = await factory.users(50)
    for fan in fans:
        await factory.follow(fan, star)
    for fan in fans[::2]:
        await factory.follow(viewer, fan)
    for fan in fans[::5]:
        await factory.follow(fan, viewer)

    # The viewer's first request also reads whom blocks hide from them (then cached in Redis).
    await gql(FOLLOWERS, token=viewer.token, name="star", first=1)
    with count_statements(server.engine) as small:
        await gql(FOLLOWERS, token=viewer.token, name="star", first=5)
    with count_statements(server.engine) as large:
        data = await gql(FOLLOWERS, token=viewer.token, name="star", first=50)

    # user lookup + page (which primes the user loader) + viewerIsFollowing + followsViewer
    assert large.count == small.count
    assert large.count <= 4, large.statements
    edges = data["user"]["followers"]["edges"]
    assert len(edges) == 50
    followed = {fan.username for fan in fans[::2]}
    follows_back = {fan.username for fan in fans[::5]}
    for edge in edges:
        node = edge["node"]
        assert node["viewerIsFollowing"] == (node["username"] in followed)
        assert node["followsViewer"] == (node["username"] in follows_back)
        assert node["followingCount"] == 1 + (node["username"] in follows_back)


async def test_private_accounts_take_follow_requests(gql, factory):
    owner = await factory.user("owner", is_private=True)
    asker, other = await factory.user("asker"), await factory.user("other")
    # Following a private account files a request, not a follow
    requested = (await gql(FOLLOW, token=asker.token, id=owner.id))["follow"]
    assert requested["errors"] == []
    assert requested["user"]["viewerIsFollowing"] is False
    assert requested["user"]["followerCount"] == 0
    # Only the owner can answer, and only a pending request
    assert (await gql(APPROVE, token=owner.token, id=other.id))["approveFollowRequest"]["errors"][
        0
    ]["code"] == "NOT_FOUND"
    approved = (await gql(APPROVE, token=owner.token, id=asker.id))["approveFollowRequest"]
    assert approved == {"user": {"followingCount": 1}, "errors": []}
    assert await counts(gql, "owner") == {"followerCount": 1, "followingCount": 0}
    # A declined request leaves no edge
    await gql(FOLLOW, token=other.token, id=owner.id)
    assert (await gql(DECLINE, token=owner.token, id=other.id))["declineFollowRequest"] == {
        "errors": []
    }
    assert await counts(gql, "owner") == {"followerCount": 1, "followingCount": 0}


async def test_block_removes_edges_and_prevents_follows(gql, factory):
    alice, bob = await factory.user("alice"), await factory.user("bob")
    await factory.follow(alice, bob)
    await factory.follow(bob, alice)
    assert (await gql(BLOCK, token=alice.token, id=bob.id))["block"] == {"errors": []}
    assert await counts(gql, "alice") == {"followerCount": 0, "followingCount": 0}
    assert await counts(gql, "bob") == {"followerCount": 0, "followingCount": 0}
    # Refused as if alice did not exist (tests/test_blocks.py has the whole story).
    refused = (await gql(FOLLOW, token=bob.token, id=alice.id))["follow"]
    assert refused["errors"][0]["code"] == "NOT_FOUND"
    assert (await gql(UNBLOCK, token=alice.token, id=bob.id))["unblock"] == {"errors": []}
    assert (await gql(FOLLOW, token=bob.token, id=alice.id))["follow"]["errors"] == []


async def test_a_private_accounts_follow_lists_are_for_its_followers(gql, factory):
    owner = await factory.user("owner", is_private=True)
    follower, stranger = await factory.user("follower"), await factory.user("stranger")
    await factory.follow(follower, owner)
    for viewer, count in ((owner, 1), (follower, 1), (stranger, 0), (None, 0)):
        token = viewer.token if viewer else None
        data = (await gql(FOLLOWERS, token=token, name="owner", first=10))["user"]["followers"]
        assert len(data["edges"]) == count, viewer
    # The counts stay public, as on a private profile page.
    assert await counts(gql, "owner") == {"followerCount": 1, "followingCount": 0}


REQUESTED = """query ($u: String!) { user(username: $u) {
  viewerIsFollowing viewerHasRequestedFollow } }"""


async def test_the_viewer_sees_its_pending_request_until_answered(gql, factory):
    owner = await factory.user("owner", is_private=True)
    asker = await factory.user("asker")
    state = {"viewerIsFollowing": False, "viewerHasRequestedFollow": False}
    assert (await gql(REQUESTED, token=asker.token, u="owner"))["user"] == state
    await gql(FOLLOW, token=asker.token, id=owner.id)
    state["viewerHasRequestedFollow"] = True
    assert (await gql(REQUESTED, token=asker.token, u="owner"))["user"] == state
    # Nobody else sees the asker's request; an anonymous viewer has none
    assert (await gql(REQUESTED, u="owner"))["user"]["viewerHasRequestedFollow"] is False
    assert (await gql(REQUESTED, token=owner.token, u="asker"))["user"] == {
        "viewerIsFollowing": False,
        "viewerHasRequestedFollow": False,
    }
    await gql(APPROVE, token=owner.token, id=asker.id)
    assert (await gql(REQUESTED, token=asker.token, u="owner"))["user"] == {
        "viewerIsFollowing": True,
        "viewerHasRequestedFollow": False,
    }
    # Withdrawn: unfollow cancels a pending request
    other = await factory.user("other")
    await gql(FOLLOW, token=other.token, id=owner.id)
    await gql(UNFOLLOW, token=other.token, id=owner.id)
    assert (await gql(REQUESTED, token=other.token, u="owner"))["user"][
        "viewerHasRequestedFollow"
    ] is False
