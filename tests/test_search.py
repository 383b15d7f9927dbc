"""searchUsers (issue 8, point 4): the exact username first, then prefix matches of the
username or the display name, then fuzzy (trigram) matches, each by similarity then
follower count; never an account hidden by a block; nothing for 0 or 1 character."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update

from models import User, table_of
from tests.conftest import GraphQLClient, count_statements
from tests.factories import Factory, MadeUser
from tests.social_factories import block

SEARCH = """
query ($text: String!, $first: Int) {
  searchUsers(query: $text, first: $first) { id username displayName followerCount }
}
"""
users = table_of(User)


async def person(
    factory: Factory, username: str, display_name: str | None = None, followers: int = 0
) -> MadeUser:
    """An account with a display name and a follower count (set directly: the counts
    are what ranking reads, and 10,000 follow rows would only slow the test down)."""
    made = await factory.user(username)
    async with factory.engine.begin() as conn:
        await conn.execute(
            update(users)
            .where(users.c.id == made.pk)
            .values(display_name=display_name, follower_count=followers)
        )
    return made


async def search(
    gql: GraphQLClient, query: str, viewer: MadeUser | None = None, first: int | None = None
) -> list[str]:
    variables: dict[str, Any] = {"text": query}
    if first is not None:
        variables["first"] = first
    data = await gql(SEARCH, token=viewer.token if viewer else None, **variables)
    return [found["username"] for found in data["searchUsers"]]


async def test_exact_then_prefix_then_fuzzy(gql, factory):
    await person(factory, "anna.k", "Anna Karenina", followers=500)
    await person(factory, "leo99", "Anna Lee", followers=20)
    await person(factory, "annabelle_lee", followers=90_000)
    await person(factory, "hanna", "Hanna Schmidt", followers=1_000_000)
    await person(factory, "anna", followers=0)
    await person(factory, "bob", "Bob", followers=5_000)

    found = await search(gql, "anna")

    # "anna" exactly; then prefixes by the share of the name typed (anna.k 0.67,
    # "Anna Lee" 0.5, annabelle_lee 0.31) whatever their followers; then "hanna", a
    # fuzzy match, although it has the most followers of all.
    assert found == ["anna", "anna.k", "leo99", "annabelle_lee", "hanna"]


async def test_followers_order_matches_of_equal_similarity(gql, factory):
    await person(factory, "grace_a", followers=10)
    await person(factory, "grace_b", followers=3_000)
    await person(factory, "grace_c", followers=200)

    assert await search(gql, "grace") == ["grace_b", "grace_c", "grace_a"]


@pytest.mark.parametrize(
    "typo",
    [
        "gregroy",  # two letters swapped in the display name's first name
        "gregory.huose",  # and in the username
        "gregry house",  # a letter dropped
        "Gregory Housse",  # one doubled
    ],
)
async def test_a_typo_finds_the_user(gql, factory, typo):
    await person(factory, "gregory.house", "Gregory House")
    await person(factory, "unrelated", "Someone Else")

    assert await search(gql, typo) == ["gregory.house"]


async def test_display_names_match_in_any_case_and_script(gql, factory):
    await person(factory, "zu_1", "Zoë Ünal")
    await person(factory, "yamada", "山田太郎")
    await person(factory, "ivanov", "Иван Иванов")

    assert await search(gql, "ZOË ü") == ["zu_1"]
    assert await search(gql, "山田") == ["yamada"]
    assert await search(gql, "иван") == ["ivanov"]
    assert await search(gql, "ИВАНОВ") == ["ivanov"]


async def test_a_leading_at_sign_and_spaces_are_ignored(gql, factory):
    await person(factory, "frank")

    assert await search(gql, "  @Frank ") == ["frank"]


@pytest.mark.parametrize("query", ["", " ", "a", " a ", "@a", "@", "%", "_"])
async def test_an_empty_or_one_character_query_finds_nothing(gql, factory, query):
    await person(factory, "alice")
    await person(factory, "a_b")

    assert await search(gql, query) == []


async def test_two_characters_match_by_prefix(gql, factory):
    await person(factory, "alice")
    await person(factory, "alan")
    await person(factory, "bob", "Al Bundy")
    await person(factory, "xal")

    assert sorted(await search(gql, "AL")) == ["alan", "alice", "bob"]


@pytest.mark.parametrize("query", ["%%", "a_%", "\\\\", "'; --", "a" * 1000, "#café", "🙂🙂🙂"])
async def test_any_text_is_a_query_never_an_error(gql, factory, query):
    await person(factory, "a_user")

    assert isinstance(await search(gql, query), list)


# JSON escapes, sent as such: `\u0000` (NUL) and a lone surrogate are valid JSON, but
# not text PostgreSQL can take: INVALID_INPUT before any query (issue 10; the body
# parser refuses the lone surrogate, the schema the NUL: tests/test_input_hardening.py).
@pytest.mark.parametrize(
    "escaped", ["an\\u0000na", "\\u0000\\u0000", "an\\ud800na", "\\udfff\\ud800"]
)
async def test_a_nul_or_a_lone_surrogate_is_invalid_input_never_a_driver_error(
    http, factory, escaped
):
    await person(factory, "anna")
    body = (
        '{"query": "query ($text: String!) { searchUsers(query: $text) { username } }",'
        f' "variables": {{"text": "{escaped}"}}}}'
    )

    response = await http.post(
        "/graphql", content=body.encode(), headers={"Content-Type": "application/json"}
    )

    assert response.status_code in (200, 400), response.text
    body = response.json()
    assert body.get("data") is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["INVALID_INPUT"]


async def test_wildcards_are_literal(gql, factory):
    await person(factory, "a_b")
    await person(factory, "axb")

    assert await search(gql, "a_") == ["a_b"]


@pytest.mark.parametrize("first", [0, -1, 101])
async def test_first_is_1_to_100(gql, first):
    body = await gql.raw(SEARCH, text="anyone", first=first)

    assert body["errors"][0]["extensions"]["code"] == "INVALID_INPUT"


async def test_first_limits_the_list(gql, factory):
    for i in range(5):
        await person(factory, f"maria{i}", followers=i)

    assert await search(gql, "maria", first=3) == ["maria4", "maria3", "maria2"]


@pytest.mark.parametrize("direction", ["viewer blocked them", "they blocked viewer"])
async def test_blocked_users_never_appear_either_way(gql, factory, direction):
    viewer = await person(factory, "victor_viewer", "Victor")
    other = await person(factory, "victoria", "Victoria")
    bystander = await person(factory, "bystander")
    blocker, blocked = (viewer, other) if direction == "viewer blocked them" else (other, viewer)

    await block(gql, blocker, blocked)

    assert await search(gql, "victor", viewer) == ["victor_viewer"]
    assert await search(gql, "victor", other) == ["victoria"]
    assert await search(gql, "victor", bystander) == ["victor_viewer", "victoria"]
    assert await search(gql, "victor") == ["victor_viewer", "victoria"]  # anonymous


async def test_a_search_is_at_most_two_statements(server, gql, factory):
    for i in range(30):
        await person(factory, f"sam{i}", f"Sam {i}", followers=i)
    viewer = await factory.user()

    with count_statements(server.engine) as prefix_only:
        await search(gql, "sa", viewer)
    with count_statements(server.engine) as fuzzy:
        await search(gql, "smuel", viewer, first=50)
    with count_statements(server.engine) as nothing:
        await search(gql, "s", viewer)

    assert prefix_only.count == 1, prefix_only.statements
    # The similarity threshold for the transaction, then the search itself.
    assert fuzzy.count == 2, fuzzy.statements
    assert nothing.count == 0
