"""Who may do what to whose things, and who sees what, as tables.

Every row is one case: an actor in a relationship with an account (its owner), the
account's object the actor aims at, and the answer. Relationships to the account:

    anonymous   no token
    owner       the account itself
    stranger    no follow either way
    follower    follows the (public) account
    pending     asked to follow the private account; not approved
    approved    an approved follower of the private account
    blocked     the account blocked them
    blocker     they blocked the account
    commenter   wrote a comment on the account's post

Hidden (a block either way) answers as if the thing did not exist: NOT_FOUND, null,
absent. Someone else's object that the actor can see but not change: FORBIDDEN where
the code says so (deleteComment, and completeUpload / deletePost of a visible post).

Rows for fields that are not in schema.graphql yet are skipped (they land in parallel);
the last tests fail when a mutation or query has no row at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from graphql import GraphQLObjectType, OperationDefinitionNode, build_schema, parse

from tests.conftest import GraphQLClient, Server
from tests.factories import PASSWORD, Factory, MadeUser
from tests.social_factories import (
    block,
    comment,
    deliver_notifications,
    follow,
    post_gid,
    ready_story,
)

SCHEMA = build_schema((Path(__file__).parent.parent / "schema.graphql").read_text())


def fields_of(type_name: str) -> set[str]:
    root = SCHEMA.get_type(type_name)
    return set(root.fields) if isinstance(root, GraphQLObjectType) else set()


def needs(*coordinates: str) -> pytest.MarkDecorator:
    """Skip while a field this row uses is not in schema.graphql (another helper's work)."""
    missing = [c for c in coordinates if c.split(".")[1] not in fields_of(c.split(".")[0])]
    return pytest.mark.skipif(bool(missing), reason=f"not in schema.graphql yet: {missing}")


# -- Outcomes --------------------------------------------------------------------------

OK = "OK"
UNAUTHENTICATED = "UNAUTHENTICATED"
NOT_FOUND = "NOT_FOUND"
FORBIDDEN = "FORBIDDEN"
INVALID_INPUT = "INVALID_INPUT"
CONFLICT = "CONFLICT"

# -- Mutations: the document of each, with `$target` standing for the object aimed at --

NEW_MEDIA = '{contentType: "image/jpeg", byteSize: "1000"}'
DOCUMENTS = {
    "signUp": """mutation ($target: String!) {
      signUp(username: $target, email: "x@example.com", password: "long enough")
      { user { id } errors { code } } }""",
    "logIn": """mutation ($target: String!, $password: String!) {
      logIn(username: $target, password: $password) { token errors { code } } }""",
    "updateProfile": """mutation { updateProfile(bio: "hello") { user { id } errors { code } } }""",
    "follow": "mutation ($target: ID!) { follow(userId: $target) { user { id } errors { code } } }",
    "unfollow": "mutation ($target: ID!) { unfollow(userId: $target) { user { id } errors { code } } }",
    "approveFollowRequest": """mutation ($target: ID!) {
      approveFollowRequest(userId: $target) { user { id } errors { code } } }""",
    "declineFollowRequest": """mutation ($target: ID!) {
      declineFollowRequest(userId: $target) { user { id } errors { code } } }""",
    "block": "mutation ($target: ID!) { block(userId: $target) { user { id } errors { code } } }",
    "unblock": "mutation ($target: ID!) { unblock(userId: $target) { user { id } errors { code } } }",
    "createPost": f"""mutation {{ createPost(input: {{media: [{NEW_MEDIA}]}})
      {{ post {{ id }} errors {{ code }} }} }}""",
    "completeUpload": """mutation ($target: ID!) {
      completeUpload(postId: $target) { post { id } errors { code } } }""",
    "deletePost": "mutation ($target: ID!) { deletePost(id: $target) { deletedId errors { code } } }",
    "likePost": "mutation ($target: ID!) { likePost(postId: $target) { post { id } errors { code } } }",
    "unlikePost": """mutation ($target: ID!) {
      unlikePost(postId: $target) { post { id } errors { code } } }""",
    "addComment": """mutation ($target: ID!) {
      addComment(postId: $target, text: "hi") { comment { id } errors { code } } }""",
    "deleteComment": """mutation ($target: ID!) {
      deleteComment(id: $target) { deletedId errors { code } } }""",
    "createStory": f"""mutation {{ createStory(media: {NEW_MEDIA})
      {{ story {{ id }} errors {{ code }} }} }}""",
    "completeStoryUpload": """mutation ($target: ID!) {
      completeStoryUpload(storyId: $target) { story { id } errors { code } } }""",
    "markStorySeen": """mutation ($target: ID!) {
      markStorySeen(storyId: $target) { story { id } errors { code } } }""",
    "markNotificationsRead": "mutation { markNotificationsRead { unreadCount } }",
}


@dataclass
class Scene:
    """An account (the owner), the actor in a relationship with it, and the account's
    objects, each made when a row first asks for it."""

    gql: GraphQLClient
    factory: Factory
    server: Server
    private: bool = False
    owner: MadeUser = field(init=False)
    _made: dict[str, Any] = field(default_factory=dict)

    async def start(self) -> Scene:
        self.owner = await self.factory.user("owner", is_private=self.private)
        return self

    async def once(self, key: str, make: Any) -> Any:
        if key not in self._made:
            self._made[key] = await make()
        return self._made[key]

    async def post(self) -> int:
        return int(await self.once("post", lambda: self.factory.ready_post(self.owner)))

    async def commenter(self) -> MadeUser:
        async def make() -> MadeUser:
            commenter = await self.factory.user("commenter")
            await self.factory.follow(commenter, self.owner)  # may comment on a private one
            return commenter

        made: MadeUser = await self.once("commenter", make)
        return made

    async def requester(self, blocked_by_owner: bool = False, blocking: bool = False) -> str:
        requester = await self.factory.user("requester")
        await follow(self.gql, requester, self.owner)  # the owner is private: a request
        if blocked_by_owner:
            await block(self.gql, self.owner, requester)
        if blocking:
            await block(self.gql, requester, self.owner)
        return requester.id

    async def target(self, name: str) -> dict[str, Any]:
        """The variables that aim a mutation at the named object."""
        owner = self.owner
        if name == "nothing":
            return {}
        if name == "the account":
            return {"target": owner.id}
        if name == "a new username":
            return {"target": "newcomer"}
        if name == "its username":
            return {"target": owner.username}
        if name == "its username, a wrong password":
            return {"target": owner.username, "password": "not the password"}
        if name == "its username and password":
            return {"target": owner.username, "password": PASSWORD}
        if name == "a request to it":
            return {"target": await self.requester()}
        if name == "a request from one it blocked":
            return {"target": await self.requester(blocked_by_owner=True)}
        if name == "a request from one who blocked it":
            return {"target": await self.requester(blocking=True)}
        if name == "its post":
            return {"target": post_gid(await self.post())}
        if name == "its pending post":
            created = await self.gql(DOCUMENTS["createPost"], token=owner.token)
            return {"target": created["createPost"]["post"]["id"]}
        if name == "its comment":
            return {"target": await comment(self.gql, owner, await self.post())}
        if name == "a comment on its post":
            return {"target": await comment(self.gql, await self.commenter(), await self.post())}
        if name == "its story":
            return {"target": await ready_story(self.server, owner)}
        if name == "its pending story":
            created = await self.gql(DOCUMENTS["createStory"], token=owner.token)
            return {"target": created["createStory"]["story"]["id"]}
        raise AssertionError(f"no such target: {name}")

    async def actor(self, role: str) -> MadeUser | None:
        """The actor, in its relationship with the account (made after the target, so a
        block comes after the things it must hide)."""
        if role == "anonymous":
            return None
        if role == "owner":
            return self.owner
        if role == "commenter":
            return await self.commenter()
        actor = await self.factory.user(role)
        if role in ("follower", "approved", "blocked", "blocker"):
            await self.factory.follow(actor, self.owner)
        elif role == "pending":
            await follow(self.gql, actor, self.owner)
        if role == "blocked":
            await block(self.gql, self.owner, actor)
        elif role == "blocker":
            await block(self.gql, actor, self.owner)
        return actor


@dataclass(frozen=True)
class Case:
    mutation: str
    actor: str
    target: str
    expected: str
    private: bool = False  # the account is private

    @property
    def id(self) -> str:
        account = " (private account)" if self.private else ""
        return f"{self.mutation}: {self.actor} -> {self.target}{account} = {self.expected}"


def cases(mutation: str, target: str, private: bool = False, **expected: str) -> list[Case]:
    """One row per actor: cases("likePost", "its post", stranger=OK, blocked=NOT_FOUND)."""
    return [Case(mutation, actor, target, outcome, private) for actor, outcome in expected.items()]


# The table. Read a line as: <mutation> by <actor> on <the account's object> answers <outcome>.
MUTATION_CASES = [
    *cases("signUp", "a new username", anonymous=OK),
    *cases("signUp", "its username", anonymous=CONFLICT),
    *cases("logIn", "its username and password", anonymous=OK),
    *cases("logIn", "its username, a wrong password", anonymous=INVALID_INPUT, stranger=INVALID_INPUT),
    # updateProfile names no account: only ever the viewer's own.
    *cases("updateProfile", "nothing", anonymous=UNAUTHENTICATED, owner=OK),
    *cases("follow", "the account", anonymous=UNAUTHENTICATED, owner=INVALID_INPUT, stranger=OK,
           follower=OK, blocked=NOT_FOUND, blocker=NOT_FOUND),
    *cases("follow", "the account", private=True, stranger=OK, pending=OK, approved=OK,
           blocked=NOT_FOUND, blocker=NOT_FOUND),
    *cases("unfollow", "the account", anonymous=UNAUTHENTICATED, stranger=OK, follower=OK,
           blocked=NOT_FOUND, blocker=NOT_FOUND),
    *cases("unfollow", "the account", private=True, pending=OK, approved=OK),
    # Only the account answers requests to it; none survives a block either way.
    *cases("approveFollowRequest", "a request to it", private=True, anonymous=UNAUTHENTICATED,
           owner=OK, stranger=NOT_FOUND, approved=NOT_FOUND),
    *cases("approveFollowRequest", "a request from one it blocked", private=True, owner=NOT_FOUND),
    *cases("approveFollowRequest", "a request from one who blocked it", private=True,
           owner=NOT_FOUND),
    *cases("declineFollowRequest", "a request to it", private=True, anonymous=UNAUTHENTICATED,
           owner=OK, stranger=NOT_FOUND, approved=NOT_FOUND),
    *cases("declineFollowRequest", "a request from one it blocked", private=True, owner=NOT_FOUND),
    *cases("declineFollowRequest", "a request from one who blocked it", private=True,
           owner=NOT_FOUND),
    # Blocking one who blocked you would tell you they exist: NOT_FOUND, as for nobody.
    *cases("block", "the account", anonymous=UNAUTHENTICATED, owner=INVALID_INPUT, stranger=OK,
           follower=OK, blocker=OK, blocked=NOT_FOUND),
    *cases("unblock", "the account", anonymous=UNAUTHENTICATED, stranger=OK, blocker=OK,
           blocked=NOT_FOUND),
    *cases("createPost", "nothing", anonymous=UNAUTHENTICATED, owner=OK),
    # completeUpload / deletePost: the author's alone; FORBIDDEN to others who can see it.
    *cases("completeUpload", "its post", anonymous=UNAUTHENTICATED, owner=OK, stranger=FORBIDDEN,
           follower=FORBIDDEN, blocked=NOT_FOUND, blocker=NOT_FOUND),
    *cases("completeUpload", "its pending post", owner=INVALID_INPUT, stranger=FORBIDDEN,
           blocked=NOT_FOUND),
    *cases("completeUpload", "its post", private=True, pending=FORBIDDEN, approved=FORBIDDEN),
    *cases("deletePost", "its post", anonymous=UNAUTHENTICATED, owner=OK, stranger=FORBIDDEN,
           follower=FORBIDDEN, blocked=NOT_FOUND, blocker=NOT_FOUND),
    *cases("deletePost", "its post", private=True, pending=FORBIDDEN, approved=FORBIDDEN),
    *cases("likePost", "its post", anonymous=UNAUTHENTICATED, owner=OK, stranger=OK, follower=OK,
           blocked=NOT_FOUND, blocker=NOT_FOUND),
    *cases("likePost", "its post", private=True, stranger=NOT_FOUND, pending=NOT_FOUND,
           approved=OK),
    *cases("likePost", "its pending post", stranger=NOT_FOUND),
    *cases("unlikePost", "its post", anonymous=UNAUTHENTICATED, owner=OK, stranger=OK,
           blocked=NOT_FOUND, blocker=NOT_FOUND),
    *cases("unlikePost", "its post", private=True, pending=NOT_FOUND, approved=OK),
    *cases("addComment", "its post", anonymous=UNAUTHENTICATED, owner=OK, stranger=OK,
           follower=OK, blocked=NOT_FOUND, blocker=NOT_FOUND),
    *cases("addComment", "its post", private=True, stranger=NOT_FOUND, pending=NOT_FOUND,
           approved=OK),
    *cases("addComment", "its pending post", stranger=NOT_FOUND),
    # A comment: its author's and the post author's to delete; FORBIDDEN to others.
    *cases("deleteComment", "its comment", anonymous=UNAUTHENTICATED, owner=OK,
           stranger=FORBIDDEN, follower=FORBIDDEN, blocked=NOT_FOUND, blocker=NOT_FOUND),
    *cases("deleteComment", "a comment on its post", owner=OK, commenter=OK, stranger=FORBIDDEN),
    *cases("deleteComment", "its comment", private=True, pending=NOT_FOUND, approved=FORBIDDEN),
    *cases("createStory", "nothing", anonymous=UNAUTHENTICATED, owner=OK),
    # Stories: the author's alone to complete; anyone else, as if it did not exist.
    *cases("completeStoryUpload", "its story", anonymous=UNAUTHENTICATED, owner=OK,
           stranger=NOT_FOUND, follower=NOT_FOUND, blocked=NOT_FOUND, blocker=NOT_FOUND),
    *cases("completeStoryUpload", "its pending story", owner=INVALID_INPUT, follower=NOT_FOUND),
    *cases("markStorySeen", "its story", anonymous=UNAUTHENTICATED, owner=OK, stranger=OK,
           follower=OK, blocked=NOT_FOUND, blocker=NOT_FOUND),
    *cases("markStorySeen", "its story", private=True, pending=NOT_FOUND, approved=OK),
    *cases("markStorySeen", "its pending story", follower=NOT_FOUND),
    # markNotificationsRead names nothing: only ever the viewer's own.
    *cases("markNotificationsRead", "nothing", anonymous=UNAUTHENTICATED, owner=OK),
]  # fmt: skip

TARGET_FIELDS = {  # what each target needs besides the mutation itself
    "its comment": ("Mutation.addComment",),
    "a comment on its post": ("Mutation.addComment",),
    "its story": ("Mutation.createStory",),
    "its pending story": ("Mutation.createStory",),
}


def _param(case: Case) -> Any:
    needed = (f"Mutation.{case.mutation}", *TARGET_FIELDS.get(case.target, ()))
    return pytest.param(case, id=case.id, marks=needs(*needed))


def outcome_of(body: dict[str, Any], mutation: str) -> str:
    """OK, a payload error's code, or a top-level error's code. A refusal must give
    nothing away: every other field of its payload is empty."""
    if body.get("errors"):
        [error] = body["errors"]
        return str(error["extensions"]["code"])
    payload = body["data"][mutation]
    errors = payload.pop("errors", [])
    if not errors:
        return OK
    assert all(not value for value in payload.values()), payload
    return str(errors[0]["code"])


@pytest.mark.parametrize("case", [_param(c) for c in MUTATION_CASES])
async def test_mutation(case: Case, gql: GraphQLClient, factory: Factory, server: Server) -> None:
    scene = await Scene(gql, factory, server, private=case.private).start()
    variables = await scene.target(case.target)
    actor = await scene.actor(case.actor)
    body = await gql.raw(
        DOCUMENTS[case.mutation], token=actor.token if actor else None, **variables
    )
    assert outcome_of(body, case.mutation) == case.expected, body


@needs("Mutation.addComment", "Query.notifications")
@pytest.mark.parametrize("role", ["blocked", "blocker"])
async def test_mentioning_a_hidden_user_is_mentioning_nobody(
    role: str, gql: GraphQLClient, factory: Factory, feed_server: Server
) -> None:
    scene = await Scene(gql, factory, feed_server).start()
    third = await factory.user("third")
    third_post = await factory.ready_post(third)
    actor = await scene.actor(role)
    assert actor is not None
    # The comment is posted, as one naming an account that does not exist would be...
    await comment(gql, actor, third_post, "@owner @nobody look")
    await deliver_notifications(feed_server)
    # ...and the account hears nothing of it (the post's author does).
    owners = await gql(NOTIFICATIONS, token=scene.owner.token)
    assert owners["notifications"]["edges"] == []
    thirds = await gql(NOTIFICATIONS, token=third.token)
    assert [e["node"]["kind"] for e in thirds["notifications"]["edges"]] == ["COMMENT"]


# -- Queries: what a viewer in each relationship sees of the account's things ----------

SEEN, GONE = "sees it", "does not see it"
COLUMNS = ("anonymous", "stranger", "follower", "pending", "approved", "blocked", "blocker")
PRIVATE_COLUMNS = {"pending", "approved"}  # the account is private in these columns

#                                             anonymous   stranger follower pending approved blocked blocker
VISIBILITY: dict[str, tuple[str, ...]] = {
    "user(username)":                          (SEEN,            SEEN, SEEN, SEEN, SEEN, GONE, GONE),
    "node(User)":                              (SEEN,            SEEN, SEEN, SEEN, SEEN, GONE, GONE),
    "post(id)":                                (SEEN,            SEEN, SEEN, GONE, SEEN, GONE, GONE),
    "node(Post)":                              (SEEN,            SEEN, SEEN, GONE, SEEN, GONE, GONE),
    "node(Media)":                             (SEEN,            SEEN, SEEN, GONE, SEEN, GONE, GONE),
    "User.posts":                              (SEEN,            SEEN, SEEN, GONE, SEEN, GONE, GONE),
    "User.followers":                          (SEEN,            SEEN, SEEN, GONE, SEEN, GONE, GONE),
    "User.following":                          (SEEN,            SEEN, SEEN, GONE, SEEN, GONE, GONE),
    "in a third party's followers":            (SEEN,            SEEN, SEEN, SEEN, SEEN, GONE, GONE),
    "in a third party's following":            (SEEN,            SEEN, SEEN, SEEN, SEEN, GONE, GONE),
    "its comment on a third party's post":     (SEEN,            SEEN, SEEN, SEEN, SEEN, GONE, GONE),
    "node(Comment)":                           (SEEN,            SEEN, SEEN, SEEN, SEEN, GONE, GONE),
    "hashtag posts":                           (SEEN,            SEEN, SEEN, GONE, SEEN, GONE, GONE),
    "searchUsers":                             (SEEN,            SEEN, SEEN, SEEN, SEEN, GONE, GONE),
    "node(Story)":                             (SEEN,            SEEN, SEEN, GONE, SEEN, GONE, GONE),
    "storiesTray":                             (UNAUTHENTICATED, GONE, SEEN, GONE, SEEN, GONE, GONE),
    "feed":                                    (UNAUTHENTICATED, GONE, SEEN, GONE, SEEN, GONE, GONE),
    "its comment in the feed's first comments": (UNAUTHENTICATED, SEEN, SEEN, SEEN, SEEN, GONE, GONE),
    "notifications":                           (UNAUTHENTICATED, SEEN, SEEN, SEEN, SEEN, GONE, GONE),
    "node(Notification)":                      (GONE,            SEEN, SEEN, SEEN, SEEN, GONE, GONE),
}  # fmt: skip
# Likes: the contract shows only counts (likeCount) and the viewer's own (viewerHasLiked),
# never who liked; a hidden account's like stays counted, as Instagram's counts do.

LISTS = "{ edges { node { username } } }"
PROBES: dict[str, tuple[str, tuple[str, ...]]] = {
    # name: (document, the fields it needs); `$post`, `$story`... are `World.variables`
    "user(username)": ("query { user(username: \"owner\") { id } }", ()),
    "node(User)": ("query ($owner: ID!) { node(id: $owner) { id } }", ()),
    "post(id)": ("query ($post: ID!) { post(id: $post) { id } }", ()),
    "node(Post)": ("query ($post: ID!) { node(id: $post) { id } }", ()),
    "node(Media)": ("query ($media: ID!) { node(id: $media) { id } }", ()),
    "User.posts": ("query { user(username: \"owner\") { posts { edges { node { id } } } } }", ()),
    "User.followers": (f"query {{ user(username: \"owner\") {{ followers {LISTS} }} }}", ()),
    "User.following": (f"query {{ user(username: \"owner\") {{ following {LISTS} }} }}", ()),
    "in a third party's followers": (
        f"query {{ user(username: \"third\") {{ followers {LISTS} }} }}", ()),
    "in a third party's following": (
        f"query {{ user(username: \"third\") {{ following {LISTS} }} }}", ()),
    "its comment on a third party's post": (
        "query ($thirdPost: ID!) { post(id: $thirdPost) { comments { edges { node { id } } } } }",
        ("Mutation.addComment", "Post.comments")),
    "node(Comment)": ("query ($comment: ID!) { node(id: $comment) { id } }",
                      ("Mutation.addComment",)),
    "hashtag posts": (
        "query { hashtag(name: \"golden\") { posts { edges { node { id } } } } }",
        ("Query.hashtag",)),
    "searchUsers": ("query { searchUsers(query: \"owner\") { username } }", ("Query.searchUsers",)),
    "node(Story)": ("query ($story: ID!) { node(id: $story) { id } }", ("Mutation.createStory",)),
    "storiesTray": ("query { storiesTray { author { username } } }", ("Query.storiesTray",)),
    "feed": ("query { feed { edges { node { id } } } }", ()),
    "its comment in the feed's first comments": (
        "query { feed { edges { node { comments(first: 2) { edges { node { id } } } } } } }",
        ("Mutation.addComment", "Post.comments")),
    "notifications": (
        "query { notifications { edges { node { actor { username } } } } }",
        ("Query.notifications", "Mutation.likePost")),
    "node(Notification)": (
        "query ($notification: ID!) { node(id: $notification) { id } }",
        ("Query.notifications", "Mutation.likePost")),
}  # fmt: skip
NOTIFICATIONS = "query { notifications { edges { node { kind actor { username } } } } }"
LIKE = "mutation ($id: ID!) { likePost(postId: $id) { errors { code } } }"
NOTIFICATION_IDS = "query { notifications { edges { node { id } } } }"
MEDIA = "query ($post: ID!) { post(id: $post) { media { id } } }"
READ_FEED = "query { feed { edges { cursor } } }"


def ready(probe: str) -> bool:
    """Whether every field the probe uses is in schema.graphql (see `needs`)."""
    _, needed = PROBES[probe]
    return all(c.split(".")[1] in fields_of(c.split(".")[0]) for c in needed)


@dataclass
class World:
    """The account's things, all made before the viewer's relationship with it (so a
    block comes after them): a post tagged #golden, a story, a third party it follows
    and is followed by (and the viewer follows), its comment on the third party's post,
    and its like of the viewer's post (a notification)."""

    viewer: MadeUser | None
    variables: dict[str, str]

    @classmethod
    async def make(cls, role: str, gql: GraphQLClient, factory: Factory, server: Server) -> World:
        scene = await Scene(gql, factory, server, private=role in PRIVATE_COLUMNS).start()
        owner = scene.owner
        viewer = None if role == "anonymous" else await factory.user("viewer")
        third = await factory.user("third")
        await factory.follow(third, owner)
        await factory.follow(owner, third)
        post = await factory.ready_post(owner, "sunset #golden")
        media = (await gql(MEDIA, token=owner.token, post=post_gid(post)))["post"]["media"]
        variables = {"owner": owner.id, "post": post_gid(post), "media": media[0]["id"]}
        if ready("node(Comment)"):
            third_post = await factory.ready_post(third)
            variables["thirdPost"] = post_gid(third_post)
            variables["comment"] = await comment(gql, owner, third_post)
        if ready("node(Story)"):
            variables["story"] = await ready_story(server, owner)
        if ready("notifications"):
            # Anonymous: someone's notification, by its id, is not for them.
            recipient = viewer or await factory.user("recipient")
            recipients_post = await factory.ready_post(recipient)
            await gql(LIKE, token=owner.token, id=post_gid(recipients_post))
            await deliver_notifications(server)
            [edge] = (await gql(NOTIFICATION_IDS, token=recipient.token))["notifications"]["edges"]
            variables["notification"] = edge["node"]["id"]
        if viewer is not None:
            # The third party's post, with the account's comment, is in the viewer's feed.
            await factory.follow(viewer, third)
            await relate(gql, factory, owner, viewer, role)
        return cls(viewer, variables)

    async def probe(self, gql: GraphQLClient, probe: str) -> str:
        """SEEN, GONE, or the code of the error that refused the query."""
        document, _ = PROBES[probe]
        variables = {k: v for k, v in self.variables.items() if f"${k}" in document}
        token = self.viewer.token if self.viewer else None
        body = await gql.raw(document, token=token, **variables)
        if body.get("errors"):
            [error] = body["errors"]
            return str(error["extensions"]["code"])
        # The account's own lists are seen when the third party shows in them; anything
        # else is seen when the account or one of its things does.
        if probe in ("User.followers", "User.following"):
            wanted = {"third"}
        else:
            wanted = {"owner", *self.variables.values()} - {self.variables.get("thirdPost")}
        return SEEN if wanted & ids_and_usernames(body["data"]) else GONE


async def relate(
    gql: GraphQLClient, factory: Factory, owner: MadeUser, viewer: MadeUser, role: str
) -> None:
    """Put the viewer in its relationship with the account."""
    if role in ("follower", "approved", "blocked", "blocker"):
        await factory.follow(viewer, owner)
        # The viewer's feed is in Redis before any block, so a block must clean it there.
        await gql(READ_FEED, token=viewer.token)
    elif role == "pending":
        await follow(gql, viewer, owner)
    if role == "blocked":
        await block(gql, owner, viewer)
    elif role == "blocker":
        await block(gql, viewer, owner)


def ids_and_usernames(data: Any) -> set[str]:
    """Every `id` and `username` anywhere in an answer."""
    if isinstance(data, list):
        return set().union(*(ids_and_usernames(item) for item in data))
    if not isinstance(data, dict):
        return set()
    found = {v for k, v in data.items() if k in ("id", "username") and isinstance(v, str)}
    return found.union(*(ids_and_usernames(v) for v in data.values()))


VIEWERS = {
    "anonymous": "an anonymous viewer",
    "stranger": "a stranger",
    "follower": "a follower",
    "pending": "a pending follower of the private account",
    "approved": "an approved follower of the private account",
    "blocked": "one the account blocked",
    "blocker": "one who blocked the account",
}


@pytest.mark.parametrize(
    "role", [pytest.param(role, id=f"what {VIEWERS[role]} sees") for role in COLUMNS]
)
async def test_what_each_viewer_sees(
    role: str, gql: GraphQLClient, factory: Factory, feed_server: Server
) -> None:
    # One column of VISIBILITY per case: the world is built once and every probe asked
    # (the diff names the probes that differ). The server has a worker: notifications.
    world = await World.make(role, gql, factory, feed_server)
    column = COLUMNS.index(role)
    probes = [probe for probe in VISIBILITY if ready(probe)]
    expected = {probe: VISIBILITY[probe][column] for probe in probes}
    seen = {probe: await world.probe(gql, probe) for probe in probes}
    assert seen == expected


# -- Coverage: nothing in the schema without rows ---------------------------------------

# Root fields that are about the viewer alone (nothing of anyone else's to see).
VIEWER_ONLY_QUERIES = {"viewer"}


def root_field(document: str) -> str:
    [operation] = parse(document).definitions
    assert isinstance(operation, OperationDefinitionNode)
    first = operation.selection_set.selections[0]
    return str(first.name.value)  # type: ignore[attr-defined]  # a field, in these documents


def test_every_mutation_in_the_schema_has_authorization_rows() -> None:
    # A new mutation without rows fails here: add its document and its cases above.
    covered = {case.mutation for case in MUTATION_CASES}
    assert fields_of("Mutation") - covered == set()
    assert {root_field(DOCUMENTS[name]) for name in covered} == covered


def test_every_query_in_the_schema_has_visibility_rows() -> None:
    covered = {root_field(document) for document, _ in PROBES.values()} | VIEWER_ONLY_QUERIES
    assert fields_of("Query") - covered == set()
    assert set(VISIBILITY) == set(PROBES)


def test_every_mutation_has_an_anonymous_row() -> None:
    anonymous = {case.mutation for case in MUTATION_CASES if case.actor == "anonymous"}
    assert anonymous == set(DOCUMENTS)
