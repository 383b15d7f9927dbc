"""The root of the GraphQL schema: per-domain root fields assembled into one Schema.

`create_schema(settings)` adds the security extensions (depth, alias and token
limits; no introspection or field suggestions in production) and the bounded
parser and validation caches that make the hot path ~3x faster.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

import strawberry
from graphql import GraphQLError
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.permission import BasePermission
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.schema import DEFAULT_ALLOWED_OPERATION_TYPES, StreamResult
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from domain import limits
from infra.metrics import ERRORS
from infra.outages import UNAVAILABLE_MESSAGE, is_outage, log_outage
from resolvers import common as common_resolvers
from resolvers import feed as feed_resolvers
from resolvers import live as live_resolvers
from resolvers import posts as post_resolvers
from resolvers import users as user_resolvers
from schema import hashtags as hashtag_schema
from schema import notifications as notification_schema
from schema import social as social_schema
from schema import stories as story_schema
from schema.common import Node, scalar_map
from schema.context import VIEWER_GONE, IsAuthenticated, is_viewer_gone
from schema.cost import QueryCostExtension, QueryCosts
from schema.documents import DocumentRegistry, PersistedQueryError
from schema.errors import ErrorCode
from schema.graphql_http import is_request_error
from schema.input_operations import OperationContext
from schema.input_strings import SafeStringLiterals, unsafe_variables_error
from schema.posts import (
    CreatePostPayload,
    DeletePayload,
    Media,
    Post,
    PostConnection,
    PostPayload,
)
from schema.streaming import pre_execution_guard, refused_stream
from schema.users import AuthPayload, User, UserPayload
from settings import Settings

log = logging.getLogger("instagraph.errors")

PARSER_CACHE_SIZE = 512
VALIDATION_CACHE_SIZE = 512

auth: list[type[BasePermission]] = [IsAuthenticated]


@strawberry.type
class CoreQuery:
    node: Node | None = strawberry.field(
        resolver=common_resolvers.resolve_node, description="Any object by its global ID."
    )
    viewer: User | None = strawberry.field(
        resolver=user_resolvers.viewer, description="The logged-in user, or null."
    )
    user: User | None = strawberry.field(
        resolver=user_resolvers.user, description="A user by username (case-insensitive)."
    )
    post: Post | None = strawberry.field(
        resolver=post_resolvers.post,
        description="A post by ID: READY ones for everyone, any state for its author.",
    )
    feed: PostConnection = strawberry.field(
        resolver=feed_resolvers.feed,
        description=(
            "The viewer's home feed: READY posts by accounts they follow and their own, "
            "newest first."
        ),
    )
    search_users: list[User] = strawberry.field(
        resolver=user_resolvers.search_users,
        description=(
            "Accounts matching `query`: the exact username first, then usernames or display "
            "names starting with it, then similar names (typos allowed), each group by "
            "similarity then follower count; never an account hidden by a block. The query "
            "is trimmed, a leading @ is ignored, and it is capped at 64 characters. An empty "
            "or one-character query returns an empty list; a two-character query matches by "
            "prefix only."
        ),
    )


@strawberry.type
class CoreMutation:
    sign_up: AuthPayload = strawberry.mutation(
        resolver=user_resolvers.sign_up, description="Create an account and log in."
    )
    log_in: AuthPayload = strawberry.mutation(
        resolver=user_resolvers.log_in, description="Exchange credentials for a bearer token."
    )
    update_profile: UserPayload = strawberry.mutation(
        resolver=user_resolvers.update_profile,
        permission_classes=auth,
        description="Change the viewer's profile; omitted arguments stay as they are.",
    )
    follow: UserPayload = strawberry.mutation(
        resolver=user_resolvers.follow,
        permission_classes=auth,
        description="Idempotent. On a private account this files a follow request instead.",
    )
    unfollow: UserPayload = strawberry.mutation(
        resolver=user_resolvers.unfollow, permission_classes=auth, description="Idempotent."
    )
    approve_follow_request: UserPayload = strawberry.mutation(
        resolver=user_resolvers.approve_follow_request,
        permission_classes=auth,
        description="Let a user who asked to follow the viewer's private account follow it.",
    )
    decline_follow_request: UserPayload = strawberry.mutation(
        resolver=user_resolvers.decline_follow_request,
        permission_classes=auth,
        description="Refuse a pending follow request.",
    )
    block: UserPayload = strawberry.mutation(
        resolver=user_resolvers.block,
        permission_classes=auth,
        description=(
            "Block a user: follows and requests both ways end, and each is hidden from the "
            "other everywhere, as if the account did not exist, until unblock. Idempotent. "
            "NOT_FOUND for a user who blocked the viewer."
        ),
    )
    unblock: UserPayload = strawberry.mutation(
        resolver=user_resolvers.unblock, permission_classes=auth, description="Idempotent."
    )
    create_post: CreatePostPayload = strawberry.mutation(
        resolver=post_resolvers.create_post,
        permission_classes=auth,
        description="Creates a PENDING post and one upload target per media item.",
    )
    complete_upload: PostPayload = strawberry.mutation(
        resolver=post_resolvers.complete_upload,
        permission_classes=auth,
        description=(
            "Tells the server the bytes are uploaded. The server checks the blob store "
            "itself; it never trusts the client's word."
        ),
    )
    delete_post: DeletePayload = strawberry.mutation(
        resolver=post_resolvers.delete_post,
        permission_classes=auth,
        description="Author only. Hides the post everywhere at once; its files go soon after.",
    )


@strawberry.type
class CoreSubscription:
    feed_item_added: Post = strawberry.subscription(  # type: ignore[assignment]  # Strawberry declares a subscription by its item type
        resolver=live_resolvers.feed_item_added,
        permission_classes=auth,
        description="READY posts entering the viewer's home feed, as they arrive.",
    )


# One module per domain adds its own root fields (see each module's QUERIES...).
DOMAINS = (social_schema, hashtag_schema, story_schema, notification_schema)


def _root(name: str, core: type, part: str, description: str) -> type:
    """A root type: the core fields plus every domain's (Strawberry's `merge_types`, with
    a description)."""
    parts = tuple(extra for domain in DOMAINS for extra in getattr(domain, part))
    return strawberry.type(type(name, (core, *parts), {}), description=description)


Query = _root("Query", CoreQuery, "QUERIES", "Entry points for reading.")
Mutation = _root("Mutation", CoreMutation, "MUTATIONS", "Entry points for writing.")
Subscription = _root(
    "Subscription",
    CoreSubscription,
    "SUBSCRIPTIONS",
    "Live updates: WebSocket (graphql-transport-ws or the legacy graphql-ws) or "
    "multipart HTTP; see docs/subscriptions.md.",
)


_TOO_COMPLEX = re.compile(
    r"exceeds maximum operation depth|aliases found\. Allowed|more than \d+ tokens", re.I
)


class InstagraphSchema(strawberry.Schema):
    """Classifies every error once: expected ones keep their code, client mistakes get
    INVALID_INPUT or QUERY_TOO_COMPLEX, and anything else is a bug: logged with the
    request id and, in production, masked as `Unexpected error.`."""

    def __init__(self, *args: Any, production: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.production = production
        # Set by the app at start: every streamed operation (WebSocket, multipart HTTP)
        # names its document through it, so trusted-only mode holds on every transport.
        self.documents: DocumentRegistry | None = None
        # Cost functions and budget charging (schema/cost.py), set by create_schema.
        self.costs: QueryCosts | None = None

    def _create_execution_context(  # Strawberry's signature
        self,
        query: str | None,
        allowed_operation_types: Iterable[OperationType],
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionContext:
        """Strawberry's, except that several operations and no name is a request error
        (`schema.input_operations`), not the first one run."""
        return OperationContext(
            query=query,
            schema=self,
            allowed_operations=allowed_operation_types,
            context=context_value,
            root_value=root_value,
            variables=variable_values,
            provided_operation_name=operation_name,
            operation_extensions=operation_extensions,
        )

    async def execute(  # Strawberry's signature
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        """Strawberry's, for one answer: never a subscription. Streamed transports go
        through `stream` (multipart HTTP) and `subscribe` (WebSocket); a subscription
        over a plain GET or POST raises InvalidOperationTypeError before anything runs,
        which the view answers 405 or 400 (`schema.graphql_http`)."""
        allowed = set(
            DEFAULT_ALLOWED_OPERATION_TYPES
            if allowed_operation_types is None
            else allowed_operation_types
        )
        if refused := unsafe_variables_error(variable_values):
            return ExecutionResult(data=None, errors=[refused])
        return await super().execute(
            query,
            variable_values=variable_values,
            context_value=context_value,
            root_value=root_value,
            operation_name=operation_name,
            allowed_operation_types=allowed - {OperationType.SUBSCRIPTION},
            operation_extensions=operation_extensions,
        )

    async def stream(  # Strawberry's signature
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
    ) -> StreamResult:
        if refused := unsafe_variables_error(variable_values):
            return refused_stream(refused)
        if self.documents is not None:
            try:
                query = await self.documents.resolve(query, operation_extensions)
            except PersistedQueryError as error:
                return refused_stream(GraphQLError(error.message, extensions={"code": error.code}))
        # Every streamed transport (both WebSocket protocols, multipart HTTP; `subscribe`
        # comes here too): a document refused before it ran is a PreExecutionError.
        source = await super().stream(
            query,
            variable_values=variable_values,
            context_value=context_value,
            root_value=root_value,
            operation_name=operation_name,
            operation_extensions=operation_extensions,
            allowed_operation_types=allowed_operation_types,
        )
        return pre_execution_guard(source, self)

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        context = execution_context.context if execution_context else None
        request_id = getattr(context, "request_id", None)
        for error in errors:
            extensions = error.extensions if error.extensions is not None else {}
            error.extensions = extensions
            if "code" in extensions:
                continue
            if is_request_error(error.path):
                # Parse, validation or variable errors: the client sent something wrong.
                too_complex = _TOO_COMPLEX.search(error.message)
                code = ErrorCode.QUERY_TOO_COMPLEX if too_complex else ErrorCode.INVALID_INPUT
                extensions["code"] = code.value
                continue
            cause = error.original_error
            if cause is not None and is_outage(cause):
                # PostgreSQL or Redis down or stalled (docs/degradation.md): a fixed message,
                # never the driver's; the client may try again.
                log_outage(".".join(str(p) for p in error.path or ()), cause)
                extensions["code"] = ErrorCode.SERVICE_UNAVAILABLE.value
                extensions["requestId"] = request_id
                error.message = UNAVAILABLE_MESSAGE
                continue
            if is_viewer_gone(error.original_error, context):
                extensions["code"] = ErrorCode.UNAUTHENTICATED.value
                error.message = VIEWER_GONE
                continue
            log.error(
                "unexpected error in request %s at %s",
                request_id,
                ".".join(str(p) for p in error.path),
                exc_info=error.original_error or error,
            )
            extensions["code"] = "INTERNAL_SERVER_ERROR"
            extensions["requestId"] = request_id
            if self.production:
                error.message = "Unexpected error."
        for error in errors:
            ERRORS.labels(str((error.extensions or {}).get("code")), "graphql").inc()


def _limit_rules(settings: Settings) -> list[Any]:
    # Built once per schema, not per request: the limiters create a new rule class per
    # instance, which would make every request miss the validation cache.
    rules = [
        SafeStringLiterals,
        *QueryDepthLimiter(max_depth=settings.max_query_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.max_aliases).validation_rules,
    ]
    if settings.is_production:
        rules.append(NoSchemaIntrospectionCustomRule)
    return rules


def create_schema(settings: Settings) -> InstagraphSchema:
    rules = _limit_rules(settings)
    limits.check_settings(settings)  # a malformed RATE_LIMITS or TRUSTED_PROXIES stops the start
    costs = QueryCosts(settings)
    schema = InstagraphSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[User, Post, Media, *(t for domain in DOMAINS for t in domain.TYPES)],
        extensions=[
            lambda: MaxTokensLimiter(max_token_count=settings.max_tokens),
            lambda: AddValidationRules(rules),
            lambda: ParserCache(maxsize=PARSER_CACHE_SIZE),
            lambda: ValidationCache(maxsize=VALIDATION_CACHE_SIZE),
            lambda: QueryCostExtension(costs),
        ],
        config=StrawberryConfig(
            disable_field_suggestions=settings.is_production, scalar_map=scalar_map()
        ),
        production=settings.is_production,
    )
    costs.bind(schema._schema)
    schema.costs = costs
    return schema
