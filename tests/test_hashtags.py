"""Hashtag pages (issue 8, point 3): tags parsed from captions, stored normalised,
`hashtag(name)` with an exact `postCount` and the READY posts the viewer may see, newest
first, keyset-paginated; caption @mentions notify the accounts named."""

from __future__ import annotations

from typing import Any

import pytest

from domain.hashtags import sync_post_tags
from infra.ids import to_global_id
from tests.conftest import GraphQLClient, Server, count_statements
from tests.factories import MadeUser
from tests.social_factories import act, block, comment, deliver_notifications

HASHTAG = """
query ($name: String!, $first: Int, $after: String) {
  hashtag(name: $name) {
    name postCount
    posts(first: $first, after: $after) {
      edges { cursor node { id caption hashtags author { username } } }
      pageInfo { hasNextPage hasPreviousPage endCursor }
    }
  }
}
"""
POST = "query ($id: ID!) { post(id: $id) { id hashtags } }"
CREATE_POST = """
mutation ($caption: String!) {
  createPost(input: {caption: $caption, media: [{contentType: "image/jpeg", byteSize: "1000"}]}) {
    post { id status hashtags } errors { code }
  }
}
"""
# "I want" in Persian: its letters are Arabic ones (RUF001 takes them for Latin look-alikes),
# with a zero-width non-joiner (U+200C) between the prefix and the verb.
PERSIAN_TAG = "می\u200cخواهم"  # noqa: RUF001
DELETE_POST = "mutation ($id: ID!) { deletePost(id: $id) { deletedId errors { code } } }"
NOTIFICATIONS = """
query { notifications(first: 20) { edges { node { kind actor { username } post { id } } } } }
"""


def gid(post_id: int) -> str:
    return to_global_id("Post", post_id)


async def tag_page(
    gql: GraphQLClient, name: str, viewer: MadeUser | None = None, **variables: Any
) -> dict[str, Any]:
    data = await gql(HASHTAG, token=viewer.token if viewer else None, name=name, **variables)
    page: dict[str, Any] = data["hashtag"]
    return page


def post_ids(page: dict[str, Any]) -> list[str]:
    return [edge["node"]["id"] for edge in page["posts"]["edges"]]


async def test_tags_are_stored_normalised_in_order_of_first_appearance(gql, factory):
    author = await factory.user()
    post_id = await factory.ready_post(author, "Breakfast #CAFÉ #café #Cafe #日本 #Ünïcödé a#b")

    post = (await gql(POST, id=gid(post_id)))["post"]

    assert post["hashtags"] == ["café", "cafe", "日本", "ünïcödé"]


async def test_cafe_with_any_case_is_one_tag_and_without_accent_another(gql, factory):
    author = await factory.user()
    accented = await factory.ready_post(author, "#CAFÉ au lait")
    plain = await factory.ready_post(author, "#Cafe noir")

    for typed in ("café", "#café", "CAFÉ", " #Café ", "\uff03café"):  # full-width #
        page = await tag_page(gql, typed)
        assert (page["name"], page["postCount"], post_ids(page)) == ("café", 1, [gid(accented)])
    page = await tag_page(gql, "cafe")
    assert (page["name"], page["postCount"], post_ids(page)) == ("cafe", 1, [gid(plain)])
    for name in ("日本", "ünïcödé"):
        await factory.ready_post(author, f"#{name.upper()}")
        assert (await tag_page(gql, name))["postCount"] == 1


@pytest.mark.parametrize("name", ["", "#", "two words", "café!", "#a#b", "a" * 101])
async def test_a_name_that_is_not_a_hashtag_is_invalid_input(gql, name):
    body = await gql.raw(HASHTAG, name=name)

    assert body["data"] == {"hashtag": None}
    assert body["errors"][0]["extensions"]["code"] == "INVALID_INPUT"


# JSON escapes, sent as such: `\u0000` (NUL) and a lone surrogate are valid JSON, but
# neither is part of a hashtag (nor text PostgreSQL could take).
@pytest.mark.parametrize("escaped", ["caf\\u0000", "\\u0000", "caf\\ud800", "\\ud800"])
async def test_a_nul_or_a_lone_surrogate_is_invalid_input(http, escaped):
    body = (
        '{"query": "query ($name: String!) { hashtag(name: $name) { name postCount } }",'
        f' "variables": {{"name": "{escaped}"}}}}'
    )

    response = await http.post(
        "/graphql", content=body.encode(), headers={"Content-Type": "application/json"}
    )

    # Refused before anything runs (issue 10): a lone surrogate by the body's JSON
    # parser (400), NUL by the variables' check (a request error, no data).
    assert response.status_code in (200, 400), response.text
    answer = response.json()
    assert answer.get("data") is None
    assert [error["extensions"]["code"] for error in answer["errors"]] == ["INVALID_INPUT"]


@pytest.mark.parametrize("name", ["#8", "39", "#_", "\u0301abc"])
async def test_a_tag_needs_a_letter_and_cannot_start_with_a_mark(gql, name):
    body = await gql.raw(HASHTAG, name=name)

    assert body["errors"][0]["extensions"]["code"] == "INVALID_INPUT"


async def test_a_tag_with_a_zero_width_non_joiner_is_whole(gql, factory):
    author = await factory.user()
    post_id = await factory.ready_post(author, f"#{PERSIAN_TAG} #8 &#39;")

    assert (await gql(POST, id=gid(post_id)))["post"]["hashtags"] == [PERSIAN_TAG]
    page = await tag_page(gql, "#" + PERSIAN_TAG)
    assert (page["name"], page["postCount"], post_ids(page)) == (PERSIAN_TAG, 1, [gid(post_id)])


async def test_an_unused_tag_has_no_posts(gql):
    page = await tag_page(gql, "#nobodyusedthis")

    assert page == {
        "name": "nobodyusedthis",
        "postCount": 0,
        "posts": {
            "edges": [],
            "pageInfo": {"hasNextPage": False, "hasPreviousPage": False, "endCursor": None},
        },
    }


async def test_pages_are_newest_first_with_stable_cursors(gql, factory):
    author, other = await factory.users(2)
    posts = [await factory.ready_post((author, other)[i % 2], f"#sunset no. {i}") for i in range(5)]
    newest_first = [gid(p) for p in reversed(posts)]

    first = await tag_page(gql, "sunset", first=2)
    assert post_ids(first) == newest_first[:2]
    assert first["posts"]["pageInfo"]["hasNextPage"] is True
    assert first["posts"]["pageInfo"]["hasPreviousPage"] is False
    # A post arriving meanwhile goes on top; it shifts nothing after the cursor.
    await factory.ready_post(author, "#sunset again")
    second = await tag_page(gql, "sunset", first=2, after=first["posts"]["pageInfo"]["endCursor"])
    third = await tag_page(gql, "sunset", first=2, after=second["posts"]["pageInfo"]["endCursor"])

    assert post_ids(second) == newest_first[2:4]
    assert second["posts"]["pageInfo"]["hasPreviousPage"] is True
    assert post_ids(third) == newest_first[4:]
    assert third["posts"]["pageInfo"]["hasNextPage"] is False
    assert third["postCount"] == 6


async def test_bad_page_arguments_are_invalid_input(gql):
    for variables in ({"first": 0}, {"first": 101}, {"after": "not-a-cursor"}):
        body = await gql.raw(HASHTAG, name="sunset", **variables)
        assert body["errors"][0]["extensions"]["code"] == "INVALID_INPUT", variables


async def test_only_ready_posts_are_listed_and_counted(gql, factory):
    author = await factory.user()
    pending = (await gql(CREATE_POST, token=author.token, caption="#draft not yet"))["createPost"]
    assert pending["post"]["status"] == "PENDING"
    assert pending["post"]["hashtags"] == ["draft"]

    page = await tag_page(gql, "draft", author)  # not even the author's own, until READY
    assert (page["postCount"], post_ids(page)) == (0, [])

    ready = await factory.ready_post(author, "#draft done")
    page = await tag_page(gql, "draft", author)
    assert (page["postCount"], post_ids(page)) == (1, [gid(ready)])


async def test_a_deleted_post_leaves_the_page_and_the_count(gql, factory):
    author = await factory.user()
    kept = await factory.ready_post(author, "#tide low")
    deleted = await factory.ready_post(author, "#tide #moon high")

    await act(gql, DELETE_POST, author, id=gid(deleted))

    for viewer in (None, author):
        page = await tag_page(gql, "tide", viewer)
        assert (page["postCount"], post_ids(page)) == (1, [gid(kept)])
    moon = await tag_page(gql, "moon")
    assert (moon["postCount"], post_ids(moon)) == (0, [])


async def test_private_authors_posts_are_for_their_followers_but_counted(gql, factory):
    private = await factory.user(is_private=True)
    public, follower, stranger = await factory.users(3)
    hidden_post = await factory.ready_post(private, "#garden mine")
    public_post = await factory.ready_post(public, "#garden ours")
    await factory.follow(follower, private)

    assert post_ids(await tag_page(gql, "garden")) == [gid(public_post)]
    assert post_ids(await tag_page(gql, "garden", stranger)) == [gid(public_post)]
    both = [gid(public_post), gid(hidden_post)]
    assert post_ids(await tag_page(gql, "garden", follower)) == both
    assert post_ids(await tag_page(gql, "garden", private)) == both
    assert (await tag_page(gql, "garden", stranger))["postCount"] == 2


@pytest.mark.parametrize("direction", ["viewer blocked author", "author blocked viewer"])
async def test_a_block_hides_the_authors_posts_both_ways(gql, factory, direction):
    author, viewer, bystander = await factory.users(3)
    post = await factory.ready_post(author, "#harbour at dawn")
    blocker, blocked = (
        (viewer, author) if direction == "viewer blocked author" else (author, viewer)
    )

    await block(gql, blocker, blocked)

    assert post_ids(await tag_page(gql, "harbour", viewer)) == []
    assert post_ids(await tag_page(gql, "harbour", bystander)) == [gid(post)]
    if direction == "author blocked viewer":  # and the author sees nothing of the viewer
        theirs = await factory.ready_post(viewer, "#harbour at dusk")
        assert post_ids(await tag_page(gql, "harbour", author)) == [gid(post)]
        assert gid(theirs) in post_ids(await tag_page(gql, "harbour", bystander))


async def test_a_tag_page_costs_the_same_statements_whatever_its_size(server, gql, factory):
    authors = await factory.users(4)
    for i in range(12):
        await factory.ready_post(authors[i % 4], f"#river {i}")
    viewer = await factory.user()
    await gql(HASHTAG, token=viewer.token, name="river", first=2)  # warm the record caches

    with count_statements(server.engine) as small:
        await gql(HASHTAG, token=viewer.token, name="river", first=2)
    with count_statements(server.engine) as large:
        await gql(HASHTAG, token=viewer.token, name="river", first=12)

    # The count, the page, and the loaders' batches (media, authors) when not cached.
    assert large.count <= 4, large.statements
    assert large.count <= small.count + 2, (small.statements, large.statements)


async def test_caption_mentions_notify_the_accounts_named_once_ready(feed_server, gql, factory):
    author, bob, carol, blocker = await factory.users(4)
    await block(gql, blocker, author)
    caption = (
        f"with @{bob.username.upper()} and @{carol.username}, @{bob.username} again, "
        f"@{author.username} myself, @{blocker.username} and @nobody_here; "
        f"mail {carol.username}@example.com"
    )

    post_id = await factory.ready_post(author, caption)
    await deliver_notifications(feed_server)

    for user in (bob, carol):
        edges = (await gql(NOTIFICATIONS, token=user.token))["notifications"]["edges"]
        assert [e["node"] for e in edges] == [
            {
                "kind": "MENTION",
                "actor": {"username": author.username},
                "post": {"id": gid(post_id)},
            }
        ]
    for user in (author, blocker):
        assert (await gql(NOTIFICATIONS, token=user.token))["notifications"]["edges"] == []


async def test_a_post_that_never_becomes_ready_notifies_nobody(feed_server, gql, factory):
    author, bob = await factory.users(2)
    await gql(CREATE_POST, token=author.token, caption=f"soon with @{bob.username}")

    await deliver_notifications(feed_server)

    assert (await gql(NOTIFICATIONS, token=bob.token))["notifications"]["edges"] == []


# --- Tags in the post author's own comments (Instagram's rule)

DELETE_COMMENT = "mutation ($id: ID!) { deleteComment(id: $id) { deletedId errors { code } } }"


async def synced(server: Server, post_id: int) -> None:
    """What the comment and post writes do in their transaction, here once more."""
    async with server.engine.begin() as conn:
        await sync_post_tags(conn=conn, post_id=post_id)


async def counts(gql: GraphQLClient, *names: str) -> dict[str, tuple[int, list[str]]]:
    pages = [await tag_page(gql, name) for name in names]
    return {page["name"]: (page["postCount"], post_ids(page)) for page in pages}


async def test_tags_in_the_authors_own_comments_are_the_posts(server, gql, factory):
    author, other = await factory.user("author"), await factory.user("other")
    post_id = await factory.ready_post(author, "Morning #sun")
    post = [gid(post_id)]

    # The author's comments add their tags; anyone else's do not.
    first = await comment(gql, author, post_id, "and #sea #SUN")
    await comment(gql, other, post_id, "#sky")
    assert await counts(gql, "sun", "sea", "sky") == {
        "sun": (1, post),
        "sea": (1, post),
        "sky": (0, []),
    }
    # Deleting the comment takes its tags away, but not one the caption has too, nor
    # one another of the author's comments still has.
    second = await comment(gql, author, post_id, "#sea again")
    await act(gql, DELETE_COMMENT, author, id=first)
    assert await counts(gql, "sun", "sea") == {"sun": (1, post), "sea": (1, post)}
    await act(gql, DELETE_COMMENT, author, id=second)
    assert await counts(gql, "sun", "sea") == {"sun": (1, post), "sea": (0, [])}
    # Syncing again changes nothing (the writes above synced in their transactions);
    # a deleted post leaves every page.
    await comment(gql, author, post_id, "#sea")
    await synced(server, post_id)
    await synced(server, post_id)
    assert await counts(gql, "sea") == {"sea": (1, post)}
    await act(gql, DELETE_POST, author, id=gid(post_id))
    assert await counts(gql, "sun", "sea") == {"sun": (0, []), "sea": (0, [])}
