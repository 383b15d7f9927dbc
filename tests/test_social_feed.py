"""The feed page with its social fields (issue 8, point 9): likeCount, commentCount,
viewerHasLiked and the first comments of every post, right after likes, unlikes,
comments, deletes and blocks, served by the compiled executor, and a warm page costs no
SQL and a fixed number of Redis round trips."""

from __future__ import annotations

from typing import Any

import pytest

import domain.engagement
from infra.ids import to_global_id
from tests.conftest import count_redis_round_trips, count_statements
from tests.test_fast_path import Served
from tests.test_feed import FEED, post_and_fan_out

SOCIAL_FEED = """
query {
  feed(first: 20) {
    edges { cursor node { id caption createdAt author { id username }
      media { url(size: FEED) placeholder }
      likeCount commentCount viewerHasLiked
      comments(first: 2) { edges { node { id text author { username } } } } } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
# A longer first page of comments than a post carries, and the page after a cursor.
COMMENT_PAGES = """
query ($first: Int, $after: String) {
  feed(first: 20) { edges { node { caption
    comments(first: $first, after: $after) {
      edges { cursor node { text } } pageInfo { hasNextPage endCursor } } } } }
}
"""
LIKE = "mutation ($id: ID!) { likePost(postId: $id) { errors { code } } }"
UNLIKE = "mutation ($id: ID!) { unlikePost(postId: $id) { errors { code } } }"
COMMENT = """
mutation ($id: ID!, $text: String!) {
  addComment(postId: $id, text: $text) { comment { id } errors { code } }
}
"""
DELETE_COMMENT = "mutation ($id: ID!) { deleteComment(id: $id) { errors { code } } }"
BLOCK = "mutation ($id: ID!) { block(userId: $id) { errors { code } } }"


def gid(pk: int) -> str:
    return to_global_id("Post", pk)


async def act(gql, document: str, user, **variables: Any) -> dict[str, Any]:
    """Run a mutation as `user`; it must succeed."""
    [payload] = (await gql(document, token=user.token, **variables)).values()
    assert payload["errors"] == [], payload["errors"]
    return payload


async def comment(gql, user, post_id: int, text: str) -> str:
    return (await act(gql, COMMENT, user, id=gid(post_id), text=text))["comment"]["id"]


async def social(gql, user) -> dict[str, tuple[int, int, bool, list[tuple[str, str]]]]:
    """Caption -> (likeCount, commentCount, viewerHasLiked, [(text, author)] shown)."""
    page = (await gql(SOCIAL_FEED, token=user.token))["feed"]
    return {
        edge["node"]["caption"]: (
            edge["node"]["likeCount"],
            edge["node"]["commentCount"],
            edge["node"]["viewerHasLiked"],
            [
                (c["node"]["text"], c["node"]["author"]["username"])
                for c in edge["node"]["comments"]["edges"]
            ],
        )
        for edge in page["edges"]
    }


async def test_likes_comments_and_blocks_show_right_on_the_feed(feed_server, gql, factory):
    author, viewer = await factory.user("author"), await factory.user("viewer")
    ann, ben, cat = await factory.user("ann"), await factory.user("ben"), await factory.user("cat")
    await factory.follow(viewer, author)
    await factory.follow(cat, author)
    await gql(FEED, token=viewer.token)
    old = await post_and_fan_out(feed_server, factory, author, "old")
    new = await post_and_fan_out(feed_server, factory, author, "new")
    # Read (and cached) before anything happens: the changes below must show anyway.
    assert await social(gql, viewer) == {"new": (0, 0, False, []), "old": (0, 0, False, [])}

    await act(gql, LIKE, viewer, id=gid(new))
    await act(gql, LIKE, viewer, id=gid(new))  # a double tap is one like
    await act(gql, LIKE, ann, id=gid(new))
    await act(gql, LIKE, ann, id=gid(old))
    await act(gql, LIKE, ben, id=gid(new))
    await act(gql, UNLIKE, ben, id=gid(new))
    await comment(gql, ann, new, "ann first")
    await comment(gql, viewer, new, "viewer second")
    bens = await comment(gql, ben, new, "ben third")
    await comment(gql, cat, old, "cat on old")
    await act(gql, DELETE_COMMENT, author, id=bens)  # the post's author removes it
    await comment(gql, ann, new, "ann again")

    expected = {
        "new": (2, 3, True, [("ann first", "ann"), ("viewer second", "viewer")]),
        "old": (1, 1, False, [("cat on old", "cat")]),
    }
    assert await social(gql, viewer) == expected  # reads what changed...
    assert await social(gql, viewer) == expected  # ...and from the caches, the same
    # Another reader: the same counts and comments, their own likes.
    assert await social(gql, cat) == {
        "new": (2, 3, False, [("ann first", "ann"), ("viewer second", "viewer")]),
        "old": (1, 1, False, [("cat on old", "cat")]),
    }

    # The viewer unlikes, and blocks ann: her comments are no longer shown to them (the
    # counts stay totals, see domain.engagement); the others still see them.
    await act(gql, UNLIKE, viewer, id=gid(new))
    await act(gql, BLOCK, viewer, id=ann.id)
    assert await social(gql, viewer) == {
        "new": (1, 3, False, [("viewer second", "viewer")]),
        "old": (1, 1, False, [("cat on old", "cat")]),
    }
    assert (await social(gql, cat))["new"][3] == [("ann first", "ann"), ("viewer second", "viewer")]


async def test_a_warm_social_page_costs_no_sql_and_a_fixed_number_of_round_trips(
    feed_server, gql, factory, monkeypatch: pytest.MonkeyPatch
):
    # The process' memos (users, and posts' counts and first comments) hold for longer
    # than this test takes, so that what is counted below does not depend on timing.
    monkeypatch.setattr(domain.engagement, "MEMO_TTL_SECONDS", 3600.0)
    monkeypatch.setattr(feed_server.resources.recent, "ttl", 3600.0)
    author, viewer, fan = [await factory.user(n) for n in ("author", "viewer", "fan")]
    await factory.follow(viewer, author)
    await gql(FEED, token=viewer.token)
    posts = [await post_and_fan_out(feed_server, factory, author, f"p{i}") for i in range(5)]
    for post_id in posts[::2]:
        await act(gql, LIKE, viewer, id=gid(post_id))
        await act(gql, LIKE, fan, id=gid(post_id))
        for index in range(3):
            await comment(gql, fan, post_id, f"c{index}")
    await gql(SOCIAL_FEED, token=viewer.token)
    await gql(SOCIAL_FEED, token=viewer.token)  # documents compile on their second use
    # Authors (of posts and of comments) and posts' counts and first comments come from
    # the process' memos when read a moment ago; without them, from the Redis caches:
    # the first budget counts those trips.
    feed_server.resources.recent.clear()
    feed_server.resources.engagement.clear()
    with (
        Served() as served,
        count_statements(feed_server.engine) as sql,
        count_redis_round_trips(feed_server.redis) as trips,
    ):
        page = await social(gql, viewer)
    assert served.compiled == 1
    assert sql.count == 0
    # Feed ids with the celebrity pull, posts with the viewer's likes and hidden set
    # (one pipeline), post authors, counts and first comments, comment authors.
    assert trips.count == 5, trips.statements
    assert page["p4"] == (2, 3, True, [("c0", "fan"), ("c1", "fan")])
    assert page["p3"] == (0, 0, False, [])
    # With the memos warm (under load: every page but about one a second per process),
    # as many round trips as a plain page: feed ids, posts with the viewer's part.
    with (
        count_statements(feed_server.engine) as sql,
        count_redis_round_trips(feed_server.redis) as trips,
    ):
        assert await social(gql, viewer) == page
    assert sql.count == 0
    assert trips.count == 2, trips.statements


async def test_longer_comment_pages_are_read_from_postgresql(feed_server, gql, factory):
    author, viewer = await factory.user("author"), await factory.user("viewer")
    await factory.follow(viewer, author)
    await gql(FEED, token=viewer.token)
    post_id = await post_and_fan_out(feed_server, factory, author, "busy")
    for index in range(6):
        await comment(gql, author, post_id, f"c{index}")
    await gql(COMMENT_PAGES, token=viewer.token, first=3)  # compiles on its second use

    async def page(**variables: Any) -> tuple[list[str], bool, str]:
        [edge] = (await gql(COMMENT_PAGES, token=viewer.token, **variables))["feed"]["edges"]
        comments = edge["node"]["comments"]
        texts = [c["node"]["text"] for c in comments["edges"]]
        return texts, comments["pageInfo"]["hasNextPage"], comments["pageInfo"]["endCursor"]

    # What the post carries answers a short first page on the compiled path...
    with Served() as served:
        texts, more, cursor = await page(first=3)
    assert (texts, more) == (["c0", "c1", "c2"], True)
    assert (served.compiled, served.strawberry) == (1, 0)
    # ...longer ones and later pages come from PostgreSQL, through Strawberry (which
    # awaits what the compiled plan does not).
    with Served() as served:
        assert (await page(first=5))[:2] == (["c0", "c1", "c2", "c3", "c4"], True)
        assert (await page(first=5, after=cursor))[:2] == (["c3", "c4", "c5"], False)
        assert (await page(first=10))[:2] == ([f"c{i}" for i in range(6)], False)
    assert (served.compiled, served.strawberry) == (0, 3)


async def test_comments_by_a_blocked_account_do_not_leave_the_preview_short(
    feed_server, gql, factory
):
    author, viewer, troll, friend = [
        await factory.user(n) for n in ("author", "viewer", "troll", "friend")
    ]
    await factory.follow(viewer, author)
    await factory.follow(friend, author)
    await gql(FEED, token=viewer.token)
    post_id = await post_and_fan_out(feed_server, factory, author, "post")
    for index in range(3):
        await comment(gql, troll, post_id, f"troll {index}")
    await comment(gql, friend, post_id, "hello")
    await comment(gql, author, post_id, "thanks")
    await social(gql, viewer)  # documents compile on their second use
    await act(gql, BLOCK, viewer, id=troll.id)
    with Served() as served:
        # Right after the block (its cache entry being rewritten), and once cached again.
        for _ in range(3):
            assert (await social(gql, viewer))["post"][3] == [
                ("hello", "friend"),
                ("thanks", "author"),
            ]
    assert served.compiled == 3
    # With Redis emptied (nothing cached: hidden sets, engagement, feeds), the same.
    await feed_server.redis.flushdb()
    assert (await social(gql, viewer))["post"][3] == [("hello", "friend"), ("thanks", "author")]
    # Others still see every comment.
    assert (await social(gql, friend))["post"][3] == [("troll 0", "troll"), ("troll 1", "troll")]


async def test_a_viewer_with_more_likes_than_the_cache_holds_sees_every_like(
    feed_server, gql, factory, monkeypatch: pytest.MonkeyPatch
):
    # Each viewer's newest liked post ids are cached up to a cap (1,000); a smaller cap
    # here shows posts below it answered from PostgreSQL, and the cap kept on new likes.
    monkeypatch.setattr(domain.engagement, "LIKED_CAP", 2)
    author, viewer = await factory.user("author"), await factory.user("viewer")
    await factory.follow(viewer, author)
    await gql(FEED, token=viewer.token)
    posts = [await post_and_fan_out(feed_server, factory, author, f"p{i}") for i in range(6)]
    for post_id in posts[:4]:
        await act(gql, LIKE, viewer, id=gid(post_id))

    def liked(page: dict[str, Any]) -> list[str]:
        return sorted(caption for caption, values in page.items() if values[2])

    assert liked(await social(gql, viewer)) == ["p0", "p1", "p2", "p3"]
    assert liked(await social(gql, viewer)) == ["p0", "p1", "p2", "p3"]  # the cached set
    await act(
        gql, LIKE, viewer, id=gid(posts[5])
    )  # the hook drops the set; the next read refills it
    await act(gql, UNLIKE, viewer, id=gid(posts[0]))  # below the floor
    assert liked(await social(gql, viewer)) == ["p1", "p2", "p3", "p5"]
    feed_server.resources.recent.clear()
    with count_statements(feed_server.engine) as sql:
        assert liked(await social(gql, viewer)) == ["p1", "p2", "p3", "p5"]
    assert sql.count == 1  # the likes below the floor, in one statement


async def test_a_feed_page_reads_its_longer_comment_pages_in_one_statement(
    feed_server, gql, factory
):
    author, viewer = await factory.user("author"), await factory.user("viewer")
    await factory.follow(viewer, author)
    await gql(FEED, token=viewer.token)
    posts = [await post_and_fan_out(feed_server, factory, author, f"p{i}") for i in range(4)]
    for post_id in posts:
        for index in range(6):
            await comment(gql, author, post_id, f"c{index}")
    # Warm: the documents compiled, records, hidden sets and engagement cached.
    for _ in range(2):
        await gql(COMMENT_PAGES, token=viewer.token, first=5)
    # Five comments per post: more than a post carries, so read from PostgreSQL, yet
    # one statement for the whole page, not one per post.
    with count_statements(feed_server.engine) as sql:
        edges = (await gql(COMMENT_PAGES, token=viewer.token, first=5))["feed"]["edges"]
    assert sql.count == 1, sql.statements
    assert len(edges) == 4
    for edge in edges:
        comments = edge["node"]["comments"]
        assert [c["node"]["text"] for c in comments["edges"]] == [f"c{i}" for i in range(5)]
        assert comments["pageInfo"]["hasNextPage"] is True
    # The pages after each post's own cursor are right too.
    cursor = edges[0]["node"]["comments"]["pageInfo"]["endCursor"]
    after = (await gql(COMMENT_PAGES, token=viewer.token, first=5, after=cursor))["feed"]
    first_post = after["edges"][0]["node"]["comments"]
    assert [c["node"]["text"] for c in first_post["edges"]] == ["c5"]
    assert first_post["pageInfo"]["hasNextPage"] is False


@pytest.mark.parametrize("refusal", ["acl", "wrongtype"])
async def test_the_feed_answers_when_redis_refuses_the_viewers_likes(
    feed_server, gql, factory, refusal: str
):
    author, viewer = await factory.user("author"), await factory.user("viewer")
    await factory.follow(viewer, author)
    await gql(FEED, token=viewer.token)
    liked = await post_and_fan_out(feed_server, factory, author, "liked")
    await post_and_fan_out(feed_server, factory, author, "other")
    await act(gql, LIKE, viewer, id=gid(liked))
    await comment(gql, author, liked, "hi")
    expected = {"liked": (1, 1, True, [("hi", "author")]), "other": (0, 0, False, [])}
    assert await social(gql, viewer) == expected
    # Given Redis refuses the viewer's part of the page (the ZMSCORE of their liked set,
    # sent along with the posts' MGET), by an ACL or because the key holds another type...
    if refusal == "acl":
        await feed_server.redis.execute_command("ACL", "SETUSER", "default", "-zmscore")
    else:
        await feed_server.redis.set(domain.engagement.liked_key(viewer.pk), "not a set")
    try:
        # ...the page is still answered, the viewer's likes from PostgreSQL.
        assert await social(gql, viewer) == expected
        assert await social(gql, viewer) == expected
    finally:
        if refusal == "acl":
            await feed_server.redis.execute_command("ACL", "SETUSER", "default", "+@all")
    # The like hook replaces what was in the way; the page then follows it.
    await act(gql, UNLIKE, viewer, id=gid(liked))
    assert (await social(gql, viewer))["liked"][:3] == (0, 1, False)


async def test_a_commenter_who_changes_their_profile_shows_changed_in_the_preview(
    feed_server, gql, factory
):
    # The comments a page shows are built once for every viewer of the post; an author's
    # new profile must show all the same (this process forgets its users on a change).
    author, viewer, ann = [await factory.user(name) for name in ("author", "viewer", "ann")]
    await factory.follow(viewer, author)
    await gql(FEED, token=viewer.token)
    post = await post_and_fan_out(feed_server, factory, author, "post")
    await comment(gql, ann, post, "hello")
    document = SOCIAL_FEED.replace("author { username }", "author { username displayName }")

    async def preview() -> list[tuple[str, str | None]]:
        [edge] = (await gql(document, token=viewer.token))["feed"]["edges"]
        return [
            (c["node"]["text"], c["node"]["author"]["displayName"])
            for c in edge["node"]["comments"]["edges"]
        ]

    assert await preview() == [("hello", None)]
    assert await preview() == [("hello", None)]  # built, then reused
    update = 'mutation { updateProfile(displayName: "Ann") { errors { code } } }'
    await act(gql, update, ann)
    assert await preview() == [("hello", "Ann")]
