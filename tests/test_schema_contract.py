"""schema.graphql is the server's real SDL, and it honours ../shared/API.graphql."""

from __future__ import annotations

from pathlib import Path

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    build_schema,
)

from schema.export import SCHEMA_PATH, sdl

CONTRACT = Path(__file__).resolve().parents[2] / "shared" / "API.graphql"

# The parts of the contract implemented so far; each issue extends this list.
COVERED = [
    "Node",
    "PageInfo",
    "ErrorCode",
    "UserError",
    "DateTime",
    "User.id",
    "User.username",
    "User.displayName",
    "User.bio",
    "User.isPrivate",
    "User.createdAt",
    "User.followerCount",
    "User.followingCount",
    "User.postCount",
    "User.viewerIsFollowing",
    "User.followsViewer",
    "User.followers",
    "User.following",
    "UserEdge",
    "UserConnection",
    "AuthPayload",
    "UserPayload",
    "Query.node",
    "Query.viewer",
    "Query.user",
    "Query.searchUsers",
    "Mutation.signUp",
    "Mutation.logIn",
    "Mutation.updateProfile",
    "Mutation.follow",
    "Mutation.unfollow",
    "Mutation.approveFollowRequest",
    "Mutation.declineFollowRequest",
    "Mutation.block",
    "Mutation.unblock",
    # Issue 3: posts and media.
    "UnsignedInt64",
    "User.posts",
    "Post.id",
    "Post.author",
    "Post.caption",
    "Post.hashtags",
    "Post.createdAt",
    "Post.status",
    "Post.failureReason",
    "Post.media",
    "PostEdge",
    "PostConnection",
    "PostStatus",
    "Media",
    "MediaKind",
    "ImageSize",
    "ImageFormat",
    "HttpField",
    "UploadTarget",
    "MediaInput",
    "CreatePostInput",
    "CreatePostPayload",
    "PostPayload",
    "DeletePayload",
    "Query.post",
    "Mutation.createPost",
    "Mutation.completeUpload",
    "Mutation.deletePost",
    # Issue 4: the home feed.
    "Query.feed",
    "Subscription.feedItemAdded",
]


def elements(source: str) -> dict[str, str]:
    """Every type, field, argument, enum value and input field, with its type."""
    schema = build_schema(source)
    found: dict[str, str] = {}
    for name, graphql_type in schema.type_map.items():
        if name.startswith("__"):
            continue
        found[name] = type(graphql_type).__name__
        if isinstance(graphql_type, GraphQLObjectType | GraphQLInterfaceType):
            for field_name, field in graphql_type.fields.items():
                found[f"{name}.{field_name}"] = str(field.type)
                for arg_name, arg in field.args.items():
                    found[f"{name}.{field_name}({arg_name})"] = str(arg.type)
        elif isinstance(graphql_type, GraphQLInputObjectType):
            for field_name, field in graphql_type.fields.items():
                found[f"{name}.{field_name}"] = str(field.type)
        elif isinstance(graphql_type, GraphQLEnumType):
            for value in graphql_type.values:
                found[f"{name}.{value}"] = "enum value"
    return found


def covered(element: str) -> bool:
    head = element.split("(")[0]
    return any(head == part or head.startswith(part + ".") for part in COVERED)


def test_committed_schema_is_up_to_date():
    assert SCHEMA_PATH.read_text() == sdl(), "schema.graphql is stale: run `make schema`"


@pytest.mark.skipif(not CONTRACT.exists(), reason="../shared/API.graphql is not beside the repo")
def test_schema_implements_the_covered_contract():
    contract = elements(CONTRACT.read_text())
    server = elements(SCHEMA_PATH.read_text())
    in_scope = [e for e in contract if covered(e)]
    assert len(in_scope) > 50
    problems = [
        f"{e}: contract {contract[e]}, server {server.get(e, 'missing')}"
        for e in in_scope
        if server.get(e) != contract[e]
    ]
    assert problems == []


def test_every_field_has_a_description():
    schema = build_schema(SCHEMA_PATH.read_text())
    undocumented = [
        f"{name}.{field_name}"
        for name, graphql_type in schema.type_map.items()
        if not name.startswith("__") and isinstance(graphql_type, GraphQLObjectType)
        for field_name, field in graphql_type.fields.items()
        if not field.description
    ]
    assert undocumented == []
