"""The compiled executor (schema/compiler) answers exactly as Strawberry does.

Every comparison runs the same document, variables and viewer through Strawberry's
normal path (`schema.execute` then the view's `process_result`) and through the compiled
plan, against the same rows in PostgreSQL and Redis, and compares the orjson bytes.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import strawberry
from graphql import (
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    NoSchemaIntrospectionCustomRule,
    get_named_type,
    is_leaf_type,
    is_non_null_type,
    parse,
    specified_rules,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strawberry.extensions import SchemaExtension
from strawberry.http import process_result
from strawberry.relay import GlobalID
from strawberry.schema.schema import validate_document

from domain.posts import MediaSpec, create_post
from infra.ids import encode_cursor, to_global_id
from schema.compiler import DocumentCompiler, FallBack, may_return_awaitable
from schema.compiler.operation import MAX_VARIANTS
from schema.context import Context
from schema.root import InstagraphSchema, create_schema
from tests.conftest import Server
from tests.factories import Factory, MadeUser

FEED = """
query {
  feed(first: 20) {
    edges { cursor node { id caption createdAt author { id username displayName }
      media { url width height placeholder } } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
DELETE = "mutation ($id: ID!) { deletePost(id: $id) { errors { code } } }"
# The feed page with its social fields (issue 8, point 9).
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
LIKE = "mutation ($id: ID!) { likePost(postId: $id) { errors { code } } }"
COMMENT = "mutation ($id: ID!, $text: String!) { addComment(postId: $id, text: $text) { errors { code } } }"
BLOCK = "mutation ($id: ID!) { block(userId: $id) { errors { code } } }"


@dataclass
class World:
    """Users, follows and posts in every state, and both executors over them."""

    server: Server
    schema: InstagraphSchema
    compiler: DocumentCompiler
    users: dict[str, MadeUser]
    posts: dict[str, int] = field(default_factory=dict)

    def context(self, viewer: str | None) -> Context:
        """A fresh request context, as the view builds one (loaders included)."""
        viewer_id = self.users[viewer].pk if viewer else None
        return Context(
            resources=self.server.resources, request_id="compiler-test", viewer_id=viewer_id
        )

    async def strawberry(
        self, query: str, variables: dict[str, Any] | None = None, viewer: str | None = None
    ) -> dict[str, Any]:
        result = await self.schema.execute(query, variables, self.context(viewer))
        return dict(process_result(result))

    async def compiled(
        self, query: str, variables: dict[str, Any] | None = None, viewer: str | None = None
    ) -> dict[str, Any] | None:
        """The compiled plan's answer; None when the document does not compile, FallBack
        raised when the plan hands this request to Strawberry."""
        operation = self.compiler.get(query, None)
        if operation is None:
            return None
        return await operation.execute(self.context(viewer), variables)

    async def act(self, document: str, viewer: str, **variables: Any) -> None:
        """A mutation through Strawberry (as the view runs it); it must succeed."""
        result = await self.schema.execute(document, variables, self.context(viewer))
        assert result.errors is None and result.data is not None, result.errors
        [payload] = result.data.values()
        assert payload["errors"] == [], payload["errors"]

    async def same(
        self, query: str, variables: dict[str, Any] | None = None, viewer: str | None = None
    ) -> dict[str, Any]:
        """Both answers, checked identical; the document must compile (and not fall
        back)."""
        expected = await self.strawberry(query, variables, viewer)
        got = await self.compiled(query, variables, viewer)
        assert got is not None, "the document did not compile"
        assert orjson.dumps(got) == orjson.dumps(expected)
        return got


@pytest.fixture
async def world(server: Server, factory: Factory) -> World:
    schema = create_schema(server.settings)
    users = {name: await factory.user(name) for name in ("alice", "bob", "dave")}
    users["carol"] = await factory.user("carol", is_private=True)
    built = World(server=server, schema=schema, compiler=DocumentCompiler(schema), users=users)
    await factory.follow(users["alice"], users["bob"])
    await factory.follow(users["alice"], users["carol"])
    await factory.follow(users["bob"], users["alice"])
    for author, count in (("bob", 3), ("carol", 2), ("alice", 2)):
        for index in range(count):
            built.posts[f"{author}{index}"] = await factory.ready_post(
                users[author], f"{author} post {index} #Tag{index}" if index else None
            )
    built.posts["deleted"] = await factory.ready_post(users["bob"], "soon gone")
    deleted = await schema.execute(
        DELETE, {"id": to_global_id("Post", built.posts["deleted"])}, built.context("bob")
    )
    assert deleted.errors is None and deleted.data == {"deletePost": {"errors": []}}
    async with server.engine.begin() as conn:
        pending = await create_post(
            conn=conn,
            author_id=users["dave"].pk,
            caption="waiting for bytes",
            items=[MediaSpec("image/jpeg", 1000)],
            idempotency_key=None,
        )
    built.posts["pending"] = int(pending.post.id)
    # Likes and comments (more on bob1 than a post carries), and a block: alice does not
    # see dave's comments.
    for liker, post in (("alice", "bob0"), ("bob", "bob0"), ("dave", "bob1"), ("alice", "carol0")):
        await built.act(LIKE, liker, id=to_global_id("Post", built.posts[post]))
    for author, post, text in (
        ("dave", "bob0", "first!"),
        ("bob", "bob0", "thanks"),
        *(("alice", "bob1", f"alice {index}") for index in range(6)),
        ("alice", "carol1", "nice"),
    ):
        await built.act(COMMENT, author, id=to_global_id("Post", built.posts[post]), text=text)
    await built.act(BLOCK, "alice", id=users["dave"].id)
    return built


# Focused cases


async def test_the_feed_page_compiles_and_matches(world: World) -> None:
    await world.strawberry(FEED, viewer="alice")  # the first read rebuilds the Redis feed
    data = (await world.same(FEED, viewer="alice"))["data"]["feed"]
    assert [edge["node"]["author"]["username"] for edge in data["edges"]] == [
        "alice", "alice", "carol", "carol", "bob", "bob", "bob",
    ]  # fmt: skip
    assert data["edges"][0]["node"]["media"][0]["url"].endswith(".jpg")


async def test_the_social_feed_page_compiles_and_matches(world: World) -> None:
    pages = {}
    for viewer in ("alice", "bob"):
        await world.strawberry(SOCIAL_FEED, viewer=viewer)  # rebuilds feeds, fills caches
        pages[viewer] = (await world.same(SOCIAL_FEED, viewer=viewer))["data"]["feed"]
    seen = {edge["node"]["caption"]: edge["node"] for edge in pages["alice"]["edges"]}
    bob0, bob1 = seen[None], seen["bob post 1 #Tag1"]
    assert (bob0["likeCount"], bob0["commentCount"], bob0["viewerHasLiked"]) == (2, 2, True)
    # dave's comment is hidden from alice (she blocked him); his like still counts.
    assert [edge["node"]["text"] for edge in bob0["comments"]["edges"]] == ["thanks"]
    assert (bob1["likeCount"], bob1["commentCount"], bob1["viewerHasLiked"]) == (1, 6, False)
    texts = [edge["node"]["text"] for edge in bob1["comments"]["edges"]]
    assert texts == ["alice 0", "alice 1"]
    # The plain page's plan stays as it was: no deferral code where nothing can defer.
    plain = world.compiler.get(FEED, None)
    social = world.compiler.get(SOCIAL_FEED, None)
    assert plain is not None and social is not None
    assert "DEFERRED" not in plain.source and "DEFERRED" in social.source


async def test_engagement_fields_in_fragments_are_read_too(world: World) -> None:
    query = """
    query { feed(first: 5) { edges { node { ...Social caption } } } }
    fragment Social on Post { likeCount ... on Post { viewerHasLiked comments { edges {
      node { text } } } } }
    """
    await world.strawberry(query, viewer="alice")
    edges = (await world.same(query, viewer="alice"))["data"]["feed"]["edges"]
    liked = [edge["node"]["viewerHasLiked"] for edge in edges]
    assert len(edges) == 5 and any(liked)


async def test_comments_past_what_a_post_carries_fall_back_to_strawberry(world: World) -> None:
    query = """
    query ($id: ID!, $first: Int, $after: String) { post(id: $id) {
      likeCount comments(first: $first, after: $after) {
        edges { cursor node { text } } pageInfo { hasNextPage endCursor } } } }
    """
    bob1 = to_global_id("Post", world.posts["bob1"])
    short = await world.same(query, {"id": bob1, "first": 2}, viewer="bob")
    assert short["data"]["post"]["comments"]["pageInfo"]["hasNextPage"] is True
    after = short["data"]["post"]["comments"]["pageInfo"]["endCursor"]
    answers = []
    for variables in (
        {"id": bob1, "first": 6},
        {"id": bob1, "first": 2, "after": after},
        {"id": bob1, "first": 0},
    ):
        with pytest.raises(FallBack):
            await world.compiled(query, variables, viewer="bob")
        answers.append(await world.strawberry(query, variables, viewer="bob"))
    longer, later, invalid = answers
    texts = [e["node"]["text"] for e in longer["data"]["post"]["comments"]["edges"]]
    assert texts == [f"alice {index}" for index in range(6)]
    texts = [e["node"]["text"] for e in later["data"]["post"]["comments"]["edges"]]
    assert texts == ["alice 2", "alice 3"]
    assert invalid["data"] == {"post": None}
    assert invalid["errors"][0]["extensions"]["code"] == "INVALID_INPUT"


async def test_the_anonymous_feed_is_unauthenticated_as_with_strawberry(world: World) -> None:
    response = await world.same(FEED)
    assert response == {
        "data": None,
        "errors": [
            {
                "message": "You need to log in.",
                "locations": [{"line": 3, "column": 3}],
                "path": ["feed"],
                "extensions": {"code": "UNAUTHENTICATED"},
            }
        ],
    }


async def test_bad_arguments_are_located_errors_with_aliases(world: World) -> None:
    query = """
    query { me: viewer { username } page: feed(first: 101) { edges { cursor } }
            found: searchUsers(query: "a", first: 0) { id } }
    """
    response = await world.same(query, viewer="alice")
    assert response["data"] is None
    assert [(e["path"], e["extensions"]["code"]) for e in response["errors"]] == [
        (["page"], "INVALID_INPUT"),
    ]


async def test_variables_with_defaults_and_skip_include(world: World) -> None:
    query = """
    query Page($first: Int = 2, $after: String, $withMedia: Boolean = false, $size: ImageSize = THUMB) {
      feed(first: $first, after: $after) {
        edges { cursor node { id media @include(if: $withMedia) { url(size: $size) kind } } }
        pageInfo @skip(if: $withMedia) { hasNextPage endCursor }
      }
    }
    """
    await world.strawberry(FEED, viewer="alice")
    first = await world.same(query, {}, viewer="alice")
    page = first["data"]["feed"]
    assert len(page["edges"]) == 2 and "media" not in page["edges"][0]["node"]
    after = page["pageInfo"]["endCursor"]
    second = await world.same(query, {"after": after, "withMedia": True}, viewer="alice")
    assert "pageInfo" not in second["data"]["feed"]
    assert second["data"]["feed"]["edges"][0]["node"]["media"][0]["url"].endswith("/thumb.jpg")
    third = await world.same(query, {"first": 3, "size": "FULL", "withMedia": True}, viewer="alice")
    assert third["data"]["feed"]["edges"][2]["node"]["media"][0]["url"].endswith("/full.jpg")


async def test_variable_errors_match_strawberry(world: World) -> None:
    query = "query ($first: Int!, $size: ImageSize) { feed(first: $first) { edges { node { media { url(size: $size) } } } } }"
    for variables in ({}, {"first": "many"}, {"first": 2, "size": "HUGE"}, {"first": 2**40}):
        response = await world.same(query, variables, viewer="alice")
        assert response["data"] is None
        assert {e["extensions"]["code"] for e in response["errors"]} == {"INVALID_INPUT"}


async def test_nulls_in_the_data_match(world: World) -> None:
    bob = to_global_id("Post", world.posts["bob0"])
    query = f"""
    query {{ post(id: "{bob}") {{ id caption author {{ username }} }}
             viewer {{ username }} }}
    """
    # bob0 has no caption: null is fine there; a deleted post is null at the root field.
    assert (await world.same(query, viewer="alice"))["data"]["post"]["caption"] is None
    gone = to_global_id("Post", world.posts["deleted"])
    response = await world.same(query.replace(bob, gone), viewer="alice")
    assert response == {"data": {"post": None, "viewer": {"username": "alice"}}}


async def test_documents_outside_the_subset_are_not_compiled(world: World) -> None:
    outside = [
        'mutation { logIn(username: "a", password: "b") { token } }',
        'query { node(id: "x") { id } }',
        "query { viewer { username viewerIsFollowing } }",
        "query { viewer { followers(first: 2) { edges { cursor } } } }",
        "query { __schema { queryType { name } } }",
        "subscription { feedItemAdded { id } }",
        "query { viewer { nope } }",  # invalid: Strawberry reports it
        "query { viewer { username",  # does not parse
        "{ viewer { id } } query B { viewer { username } }",  # which one?
    ]
    for query in outside:
        assert world.compiler.get(query, None) is None, query
    # Several operations and none named is a request error (issue 10: graphql-core's rule,
    # which Strawberry's path keeps too: schema/input_operations.py): never compiled.
    two = "query A { viewer { id } } query B { viewer { username } }"
    assert world.compiler.get(two, None) is None
    refused = await world.strawberry(two, None, "bob")
    assert refused["data"] is None
    assert refused["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
    assert world.compiler.get(two, "B") is not world.compiler.get(two, "A")
    assert world.compiler.get(two, "C") is None


async def test_the_cache_is_a_bounded_lru(world: World) -> None:
    compiler = DocumentCompiler(world.schema, maxsize=3)
    documents = [f"query {{ viewer {{ a{index}: username }} }}" for index in range(5)]
    compiled = [compiler.get(document, None) for document in documents]
    assert all(compiled)
    assert compiler.cache_info().currsize == 3
    assert compiler.get(documents[-1], None) is compiled[-1]  # a hit: the same object
    assert compiler.get(documents[0], None) is not compiled[0]  # evicted, compiled again
    assert compiler.get("query { node(id: 1) { id } }", None) is None  # negatives count too
    assert compiler.cache_info().currsize == 3


async def test_one_off_documents_are_not_compiled_and_known_ones_are_pinned(
    world: World,
) -> None:
    compiler = DocumentCompiler(world.schema, maxsize=2, compile_after=2)
    document = "query Me { viewer { username } }"
    assert compiler.get(document, None) is None  # first sight: Strawberry runs it
    operation = compiler.get(document, None)
    assert operation is not None
    assert compiler.get(document, None) is operation  # and stays compiled
    assert compiler.cache_info().misses == 1  # compiled once
    # Known documents compile at start under each operation name (and no name), pinned:
    # never evicted by other traffic, never waiting for a second sight.
    known = "query Feed { feed(first: 2) { edges { cursor } } }"
    assert compiler.pin(known) == 2
    for index in range(5):
        compiler.get(f"{{ a{index}: __typename }}", None)
        compiler.get(f"{{ a{index}: __typename }}", None)
    assert compiler.get(known, "Feed") is not None
    assert compiler.get(known, None) is not None
    assert compiler.is_valid(known)
    assert not compiler.is_valid("{ nope }")
    assert not compiler.is_valid("{")


async def test_directive_variants_are_bounded() -> None:
    query = " ".join(f"$v{i}: Boolean!" for i in range(5))
    fields = " ".join(f"a{i}: name @include(if: $v{i})" for i in range(5))
    operation = TORTURE_COMPILER.get(f"query ({query}) {{ thing {{ {fields} }} }}", None)
    assert operation is not None
    served = fell_back = 0
    for bits in range(32):  # 32 combinations: the first MAX_VARIANTS compile, then no more
        variables = {f"v{i}": bool(bits & (1 << i)) for i in range(5)}
        try:
            result = await operation.execute(None, variables)
        except FallBack:
            fell_back += 1
        else:
            served += 1
            assert len(result["data"]["thing"]) == bin(bits).count("1")
    assert (served, fell_back) == (MAX_VARIANTS, 32 - MAX_VARIANTS)


# The differential test: random documents over the real schema


ARGUMENT_VALUES: dict[str, list[Any]] = {
    "first": [1, 2, 3, 20, 100, 0, 101, -1, None],
    "size": ["THUMB", "FEED", "FULL", None],
    "format": ["JPEG", "WEBP", None],
}
# Async resolvers below the root (and permissions) make a document fall back to
# Strawberry; drawn rarely so most documents compile, yet the fallback is exercised.
RARE_FIELDS = frozenset(
    {"viewerIsFollowing", "followsViewer", "posts", "followers", "following", "node"}
    # Root fields with permissions, or whose types have async fields (issue 8).
    | {"notifications", "storiesTray", "hashtag"}
)
# The page this executor exists for, drawn more often.
FAVOURITES = ("feed", "feed", "post")
ENUM_ARGUMENTS = {"size", "format", "color"}


def world_values(world: World) -> Callable[[str], list[Any]]:
    """Argument values over the world's rows, valid and not."""
    posts = world.posts
    pools = {
        **ARGUMENT_VALUES,
        "after": [
            None,
            encode_cursor(posts["carol0"], posts["carol0"]),
            encode_cursor(posts["bob1"]),
            "not-a-cursor",
        ],
        "username": ["alice", "CAROL", "b", "nobody", ""],
        "query": ["alice", "CAROL", "b", "nobody", ""],
        "name": ["tag1", "TAG0", "#tag1", "nope", ""],
        "id": [
            to_global_id("Post", posts["bob0"]),
            to_global_id("Post", posts["carol1"]),
            to_global_id("Post", posts["deleted"]),
            to_global_id("Post", posts["pending"]),
            to_global_id("User", world.users["bob"].pk),
            "bad id",
        ],
    }
    return pools.__getitem__


class DocumentBuilder:
    """Draws one query over a schema: nested selections with aliases, __typename,
    inline and named fragments, @skip/@include, and arguments given as literals or as
    variables (with and without defaults), from the given pools of values."""

    def __init__(
        self,
        draw: Any,
        schema: GraphQLSchema,
        values: Callable[[str], list[Any]],
        *,
        rare: frozenset[str] = frozenset(),
        favourites: tuple[str, ...] = (),
    ) -> None:
        self.draw = draw
        self.schema = schema
        self.values = values
        self.rare = rare
        self.favourites = favourites
        self.variable_definitions: list[str] = []
        self.variables: dict[str, Any] = {}
        self.fragments: list[str] = []
        self.names: Iterator[int] = iter(range(10_000))

    def build(self) -> str:
        root = self.schema.query_type
        assert root is not None
        selection = self.selection_set(root, depth=0)
        header = f"({', '.join(self.variable_definitions)})" if self.variable_definitions else ""
        return "\n".join([f"query{header} {selection}", *self.fragments])

    def arguments(self, definition: GraphQLField) -> str:
        parts = []
        for name, argument in definition.args.items():
            required = is_non_null_type(argument.type)
            if not required and not self.draw(st.booleans()):
                continue
            value = self.draw(st.sampled_from(self.values(name)))
            if value is None and required:
                value = self.values(name)[0]
            if self.draw(st.integers(0, 2)) == 0:
                variable = f"v{next(self.names)}"
                declaration = f"${variable}: {argument.type}"
                if not required and self.draw(st.booleans()):
                    default = self.draw(st.sampled_from(self.values(name)))
                    declaration += f" = {self.literal(name, default)}"
                if self.draw(st.integers(0, 3)):  # else left out: the default applies
                    self.variables[variable] = value
                self.variable_definitions.append(declaration)
                parts.append(f"{name}: ${variable}")
            else:
                parts.append(f"{name}: {self.literal(name, value)}")
        return f"({', '.join(parts)})" if parts else ""

    @classmethod
    def literal(cls, name: str, value: Any) -> str:
        if value is None:
            return "null"
        if name in ENUM_ARGUMENTS:
            return str(value)
        if isinstance(value, dict):
            return "{" + ", ".join(f"{k}: {cls.literal(k, v)}" for k, v in value.items()) + "}"
        if isinstance(value, list):
            return "[" + ", ".join(cls.literal(name, item) for item in value) + "]"
        return orjson.dumps(value).decode()  # scalars: JSON's spelling is GraphQL's

    def directives(self) -> str:
        if self.draw(st.integers(0, 5)):
            return ""
        directive = self.draw(st.sampled_from(["skip", "include"]))
        if self.draw(st.booleans()):
            return f" @{directive}(if: {self.draw(st.sampled_from(['true', 'false']))})"
        variable = f"b{next(self.names)}"
        if self.draw(st.booleans()):
            self.variable_definitions.append(f"${variable}: Boolean!")
            self.variables[variable] = self.draw(st.booleans())
        else:
            default = self.draw(st.sampled_from(["true", "false"]))
            self.variable_definitions.append(f"${variable}: Boolean = {default}")
            if self.draw(st.booleans()):
                self.variables[variable] = self.draw(st.booleans())
        return f" @{directive}(if: ${variable})"

    def selection_set(self, parent: GraphQLObjectType | GraphQLInterfaceType, depth: int) -> str:
        count = self.draw(st.integers(1, 3))
        selections = [self.selection(parent, depth) for _ in range(count)]
        return "{ " + " ".join(selections) + " }"

    def selection(self, parent: GraphQLObjectType | GraphQLInterfaceType, depth: int) -> str:
        kind = self.draw(st.sampled_from(["field"] * 8 + ["typename", "inline", "spread"]))
        if kind == "typename":
            return f"__typename{self.directives()}"
        if kind in ("inline", "spread") and depth < 4:
            target = parent
            if isinstance(parent, GraphQLInterfaceType):
                target = self.draw(st.sampled_from(self.schema.get_possible_types(parent)))
            body = self.selection_set(target, depth)
            if kind == "inline":
                condition = f" on {target.name}" if self.draw(st.booleans()) else ""
                return f"...{condition}{self.directives()} {body}"
            name = f"F{next(self.names)}"
            self.fragments.append(f"fragment {name} on {target.name} {body}")
            return f"...{name}{self.directives()}"
        return self.field(parent, depth)

    def field(self, parent: GraphQLObjectType | GraphQLInterfaceType, depth: int) -> str:
        leaves: list[str] = []
        objects: list[str] = []
        for name, definition in parent.fields.items():
            if name in self.rare and self.draw(st.integers(0, 19)):
                continue
            is_leaf = is_leaf_type(get_named_type(definition.type))
            (leaves if is_leaf else objects).append(name)
        # Objects often enough to reach the feed's media four levels down.
        pick_object = objects and (not leaves or (depth < 5 and self.draw(st.integers(0, 2)) == 0))
        if depth == 0:
            objects += self.favourites
        name = self.draw(st.sampled_from(objects if pick_object else leaves))
        definition = parent.fields[name]
        arguments = self.arguments(definition)
        # A unique alias keeps fields with different arguments from conflicting.
        aliased = arguments or self.draw(st.integers(0, 5)) == 0
        alias = f"a{next(self.names)}: " if aliased else ""
        text = f"{alias}{name}{arguments}{self.directives()}"
        named = get_named_type(definition.type)
        if isinstance(named, (GraphQLObjectType, GraphQLInterfaceType)):
            text += " " + self.selection_set(named, depth + 1)
        return text


@dataclass
class Tally:
    compiled: int = 0
    fallback: int = 0
    invalid: int = 0


@pytest.fixture(scope="module")
def tally() -> Iterator[Tally]:
    counts = Tally()
    yield counts
    total = counts.compiled + counts.fallback + counts.invalid
    if total:  # the share check lives here so that it sees every example
        assert counts.compiled >= 0.5 * total, counts


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples on every run: no flaky share, no database
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_random_documents_answer_exactly_as_strawberry(
    world: World, tally: Tally, data: st.DataObject
) -> None:
    builder = DocumentBuilder(
        data.draw,
        world.schema._schema,
        world_values(world),
        rare=RARE_FIELDS,
        favourites=FAVOURITES,
    )
    query = builder.build()
    viewer = data.draw(st.sampled_from([None, "alice", "bob", "dave"]))
    variables = builder.variables
    # A first read settles what reads change (a rebuilt feed, stale ids dropped), so the
    # two executors below see the same state.
    await world.strawberry(query, variables, viewer)
    expected = await world.strawberry(query, variables, viewer)
    try:
        got = await world.compiled(query, variables, viewer)
    except FallBack:  # a resolver returned an awaitable: Strawberry answers this one
        tally.fallback += 1
        return
    if got is None:
        document = parse(query)
        if validate_document(world.schema._schema, document, world.compiler.validation_rules):
            tally.invalid += 1
        else:
            tally.fallback += 1
        return
    tally.compiled += 1
    assert orjson.dumps(got) == orjson.dumps(expected), query


# Semantics on a schema built to fail: nulls, exceptions, wrong types, error order


@strawberry.enum
class Color(Enum):
    RED = "red"
    BLUE = "blue"


@strawberry.type
class Thing:
    name: str
    nickname: str | None
    tags: list[str | None]
    strict_tags: list[str]

    @strawberry.field
    def must(self, fail: bool = False) -> str:
        if fail:
            raise ValueError(f"must failed on {self.name}")
        return self.name

    @strawberry.field
    def maybe(self, fail: bool = False) -> str | None:
        if fail:
            raise ValueError(f"maybe failed on {self.name}")
        return None

    @strawberry.field
    def children(self, broken: int = -1) -> list[Thing]:
        # A None where the schema forbids one, on purpose.
        children: list[Any] = [thing(f"{self.name}.{index}") for index in range(3)]
        if 0 <= broken < len(children):
            children[broken] = None
        return children

    @strawberry.field
    def loose_children(self, broken: int = -1) -> list[Thing | None] | None:
        return [
            None if index == broken else thing(f"{self.name}.{index}", tags=[None])
            for index in range(3)
        ]

    @strawberry.field
    def number(self, value: int = 1) -> int:
        return value * 2**31  # out of Int range past 0

    @strawberry.field
    def returned_error(self) -> str | None:
        return ValueError("returned, not raised")  # type: ignore[return-value]

    @strawberry.field
    def grow(self, ids: list[str]) -> list[str]:
        # Changes its argument: a list shared between calls would show it.
        ids.append(self.name)
        return ids

    @strawberry.field
    def echo(
        self,
        window: Window | None = None,
        key: GlobalID | None = None,
        color: Color | None = Color.BLUE,
    ) -> str:
        return orjson.dumps(
            {
                "window": [window.start, window.size] if window else None,
                "key": [key.type_name, key.node_id] if key else None,
                "color": color.name if color else None,
            }
        ).decode()


@strawberry.input
class Window:
    start: int = 0
    size: int | None = None


def thing(name: str, nickname: str | None = None, tags: list[str | None] | None = None) -> Thing:
    return Thing(name=name, nickname=nickname, tags=tags or [], strict_tags=["x"])


@strawberry.type
class TortureQuery:
    @strawberry.field
    async def thing(self, name: str = "t") -> Thing:
        return thing(name, tags=["a", None])

    @strawberry.field
    async def nullable_thing(self, fail: bool = False) -> Thing | None:
        if fail:
            raise ValueError("no thing")
        return thing("n", nickname="nick")

    @strawberry.field
    def sync_thing(self) -> Thing:
        return thing("s")

    @strawberry.field
    def wrong(self) -> Thing | None:
        return "not a thing"  # type: ignore[return-value]

    @strawberry.field
    def person(self, kind: str = "person") -> Person | None:
        values: dict[str, Any] = {
            "person": Person(name="ada", age=36),
            "thing": thing("t"),
            "error": ValueError("a person went missing"),
        }
        return values[kind]

    @strawberry.field
    def leaf(self, kind: str) -> Leaves:
        return Leaves(kind=kind)

    @strawberry.field
    def where(self, info: strawberry.Info, note: str = "") -> str:
        # Resolvers may read more than the context from info: all of it must match.
        return orjson.dumps(
            {
                "path": info.path.as_list(),
                "field": info.field_name,
                "python": info.python_name,
                "variables": info.variable_values,
                "selected": [getattr(f, "name", None) for f in info.selected_fields],
                "operation": info.operation.name.value if info.operation.name else None,
                "root": info.root_value,
                "return": str(info.return_type),
            }
        ).decode()

    @strawberry.field
    def generated(self) -> list[int]:
        return (n * n for n in range(3))  # type: ignore[return-value]

    @strawberry.field
    def not_a_list(self) -> list[int] | None:
        return 5  # type: ignore[return-value]

    @strawberry.field
    def nested(self) -> list[list[int | None] | None]:
        return [[1, None], None, [2**40], (3,)]  # type: ignore[list-item]


@strawberry.interface
class Named:
    name: str


@strawberry.type
class Person(Named):
    age: int


@strawberry.type
class Leaves:
    kind: strawberry.Private[str]

    def pick(self, good: Any, bad: dict[str, Any]) -> Any:
        return bad.get(self.kind, good)

    @strawberry.field
    def color(self) -> Color | None:
        return self.pick(Color.RED, {"name": "BLUE", "value": "red", "int": 5})

    @strawberry.field
    def when(self) -> datetime | None:
        return self.pick(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), {"str": "2025", "int": 5})

    @strawberry.field
    def ratio(self) -> float | None:
        return self.pick(0.5, {"inf": float("inf"), "nan": float("nan"), "int": 1, "str": "2.5"})

    @strawberry.field
    def ident(self) -> strawberry.ID | None:
        return self.pick(strawberry.ID("x"), {"int": 5, "float": 1.5, "object": object()})

    @strawberry.field
    def flag(self) -> bool | None:
        return self.pick(True, {"int": 1, "str": "true", "float": 0.0})

    @strawberry.field
    def count(self) -> int:
        return self.pick(3, {"float": 2.0, "bigger": 2**31, "str": "7", "bool": True, "none": None})

    @strawberry.field
    def text(self) -> str:
        return self.pick("t", {"int": 5, "bool": False, "float": 1.5, "list": [1], "none": None})


TORTURE = strawberry.Schema(query=TortureQuery)
TORTURE_COMPILER = DocumentCompiler(TORTURE)


@pytest.mark.parametrize(
    "query",
    [
        "{ thing { must(fail: true) name } }",
        "{ nullableThing { name must(fail: true) } thing { name } }",
        "{ thing { maybe(fail: true) a: maybe b: must(fail: false) } }",
        "{ thing { children(broken: 1) { name } } t2: nullableThing { name } }",
        "{ thing { looseChildren(broken: 1) { name must(fail: true) } } }",
        "{ thing { looseChildren { name tags strictTags maybe(fail: true) } } }",
        "{ thing { number(value: 0) } x: nullableThing { n: number } }",
        "{ thing { returnedError } nullableThing(fail: true) { name } }",
        "{ wrong { name } syncThing { name children { name } } }",
        '{ a: thing(name: "a") { must(fail: true) } b: nullableThing(fail: true) { name } }',
        '{ b: nullableThing(fail: true) { name } a: thing(name: "a") { must(fail: true) } }',
        "{ syncThing { must(fail: true) } thing { name } }",
        "{ __typename thing { __typename ... on Thing { name } ...F } } fragment F on Thing { name nickname }",
        '{ a: person { name age } b: person(kind: "thing") { name } c: person(kind: "error") { age } }',
        "{ generated notAList nested }",
        '{ thing { children { grow(ids: ["a"]) } } again: thing { grow(ids: []) } }',
        '{ thing { echo(window: {start: 2}, key: "VGhpbmc6MQ==", color: RED) e: echo } }',
        '{ thing { echo(key: "not a global id") } }',
        "query ($w: Window, $k: ID) { thing { echo(window: $w, key: $k) } }",
        'query Where($n: String = "x") { where(note: $n) w: where { } }'.replace("{ }", ""),
        *(
            f'{{ leaf(kind: "{kind}") {{ color when ratio ident flag }} }}'
            for kind in ("good", "name", "value", "int", "str", "inf", "nan", "float", "object")
        ),
        *(
            f'{{ leaf(kind: "{kind}") {{ {name} }} thing {{ name }} }}'
            for kind in ("good", "float", "bigger", "str", "bool", "none", "int", "list")
            for name in ("count", "text")
        ),
    ],
)
async def test_error_semantics_match_graphql_core(query: str) -> None:
    result = await TORTURE.execute(query)
    expected = dict(process_result(result))
    operation = TORTURE_COMPILER.get(query, None)
    assert operation is not None
    got = await operation.execute(None, None)
    assert orjson.dumps(got) == orjson.dumps(expected)


TORTURE_VALUES: dict[str, list[Any]] = {
    "fail": [True, False],
    "broken": [-1, 0, 1, 2],
    "kind": [
        *("person", "thing", "error", "good", "name", "value", "int", "str", "none"),
        *("float", "inf", "nan", "bigger", "bool", "object", "list"),
    ],
    "name": ["a", "b"],
    "value": [0, 1],
    "note": ["x", ""],
    "ids": [["a", "b"], [], ["c"]],
    "window": [{"start": 1}, {"start": 2, "size": 3}, {}, None],
    "key": [str(GlobalID("Thing", "1")), "not a global id", None],
    "color": ["RED", "BLUE", None],
}


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(data=st.data())
async def test_random_documents_on_a_failing_schema_match_graphql_core(
    data: st.DataObject,
) -> None:
    builder = DocumentBuilder(data.draw, TORTURE._schema, TORTURE_VALUES.__getitem__)
    query = builder.build()
    expected = dict(process_result(await TORTURE.execute(query, builder.variables)))
    operation = TORTURE_COMPILER.get(query, None)
    if operation is None:  # only documents that do not validate (conflicting fields)
        assert validate_document(TORTURE._schema, parse(query), specified_rules)
        return
    got = await operation.execute(None, builder.variables)
    assert orjson.dumps(got) == orjson.dumps(expected), query


async def test_a_null_directive_variable_falls_back_before_running_anything() -> None:
    query = "query ($b: Boolean = true) { thing { name @skip(if: $b) } }"
    operation = TORTURE_COMPILER.get(query, None)
    assert operation is not None
    assert await operation.execute(None, {"b": False}) == {"data": {"thing": {"name": "t"}}}
    with pytest.raises(FallBack):
        await operation.execute(None, {"b": None})
    # Strawberry, which the caller then runs, reports the error itself.
    result = await TORTURE.execute(query, {"b": None})
    assert result.data is None and result.errors


async def test_unexpected_errors_are_masked_the_same_way_in_production() -> None:
    schema = InstagraphSchema(query=TortureQuery, production=True)
    compiler = DocumentCompiler(schema)
    query = "{ thing { must(fail: true) } x: nullableThing { maybe(fail: true) } }"
    context = SimpleNamespace(request_id="req-1")
    expected = dict(process_result(await schema.execute(query, context_value=context)))
    operation = compiler.get(query, None)
    assert operation is not None
    got = await operation.execute(context, None)
    assert orjson.dumps(got) == orjson.dumps(expected)
    assert got["errors"][0] == {
        "message": "Unexpected error.",
        "locations": [{"line": 1, "column": 49}],
        "path": ["x", "maybe"],
        "extensions": {"code": "INTERNAL_SERVER_ERROR", "requestId": "req-1"},
    }


class Tracing(SchemaExtension):
    def resolve(self, _next: Any, root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
        return _next(root, info, *args, **kwargs)


def test_schemas_with_execution_hooks_or_over_the_limits_are_not_compiled(world: World) -> None:
    hooked = DocumentCompiler(strawberry.Schema(query=TortureQuery, extensions=[Tracing]))
    assert hooked.disabled == "schema extension Tracing"
    assert hooked.get("{ thing { name } }", None) is None
    deep = "query { viewer { " + "followers { edges { node { " * 4 + "id" + " } } }" * 4 + " } }"
    many = "query { viewer { " + " ".join(f"a{n}: id" for n in range(16)) + " } }"
    long = "query { viewer { " + " ".join(["id"] * 2001) + " } }"
    for query in (deep, many, long):
        assert world.compiler.get(query, None) is None
    # The limits are the schema's own, read from its extensions; production adds one.
    assert world.compiler.max_tokens == world.server.settings.max_tokens
    production = DocumentCompiler(create_schema(replace(world.server.settings, env="production")))
    assert world.compiler.get("{ __schema { queryType { name } } }", None) is None
    assert production.validation_rules[-1] is NoSchemaIntrospectionCustomRule
    assert world.compiler.get("query { viewer { " + " ".join(["id"] * 100) + " } }", None)


async def test_a_null_in_a_non_null_field_propagates_to_the_nearest_nullable_parent() -> None:
    # children: [Thing!]! inside nullableThing: Thing (nullable), beside thing: Thing!.
    query = "{ nullableThing { name children(broken: 1) { name } } thing { name } }"
    operation = TORTURE_COMPILER.get(query, None)
    assert operation is not None
    got = await operation.execute(None, None)
    assert got == {
        "data": {"nullableThing": None, "thing": {"name": "t"}},
        "errors": [
            {
                "message": "Cannot return null for non-nullable field Thing.children.",
                "locations": [{"line": 1, "column": query.index("children") + 1}],
                "path": ["nullableThing", "children", 1],
            }
        ],
    }
    assert got == dict(process_result(await TORTURE.execute(query)))


# Resolvers marked may_return_awaitable: answered in place, or handed to Strawberry

STARTED: list[Any] = []  # the awaitables marked resolvers returned
CANCELLED: list[str] = []


async def _waited(name: str) -> str:
    return f"{name} waited"


@strawberry.type
class Box:
    name: str

    @strawberry.field(graphql_type=str | None)
    @may_return_awaitable
    def label(self, wait: bool = False) -> str | Awaitable[str] | None:
        if not wait:
            return f"{self.name} at once"
        STARTED.append(awaiting := _waited(self.name))
        return awaiting


@strawberry.type
class BoxQuery:
    @strawberry.field
    async def boxes(self) -> list[Box | None]:
        return [Box(name="a"), Box(name="b")]

    @strawberry.field
    def sync_box(self) -> Box | None:
        return Box(name="s")

    @strawberry.field
    async def slow(self) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            CANCELLED.append("slow")
            raise
        return "late"


BOXES = strawberry.Schema(query=BoxQuery)
BOX_COMPILER = DocumentCompiler(BOXES)


@pytest.mark.parametrize(
    "query",
    [
        "{ boxes { name label } syncBox { label } }",
        "{ boxes { label(wait: false) } }",
    ],
)
async def test_a_marked_resolver_answering_at_once_is_compiled(query: str) -> None:
    operation = BOX_COMPILER.get(query, None)
    assert operation is not None
    expected = dict(process_result(await BOXES.execute(query)))
    assert orjson.dumps(await operation.execute(None, None)) == orjson.dumps(expected)


@pytest.mark.parametrize(
    "query",
    [
        # Under nullable parents, in a list: no error handling may turn it into a null.
        "{ boxes { name label(wait: true) } }",
        "{ syncBox { label(wait: true) } }",  # a sync root field
        "{ boxes { label(wait: true) } slow }",  # the other root field is cancelled
    ],
)
async def test_a_marked_resolver_returning_an_awaitable_falls_back(query: str) -> None:
    STARTED.clear()
    CANCELLED.clear()
    operation = BOX_COMPILER.get(query, None)
    assert operation is not None
    with pytest.raises(FallBack):
        await operation.execute(None, None)
    # What the resolver returned was closed unstarted (never awaited, no warning)...
    assert STARTED and inspect.getcoroutinestate(STARTED[0]) == inspect.CORO_CLOSED
    assert CANCELLED == (["slow"] if "slow" in query else [])
    # ...and Strawberry, which runs the request instead, awaits it.
    if "slow" not in query:
        result = await BOXES.execute(query)
        assert result.errors is None and "waited" in orjson.dumps(result.data).decode()
