"""Error codes, typed payload errors, and the exception for GraphQL-level failures.

Expected failures inside a mutation come back as `UserError`s in its payload.
Failures outside a payload (auth on queries, bad arguments, limits) raise
`ApiError`, which becomes a GraphQL error with `extensions.code`.
"""

from __future__ import annotations

import strawberry

from domain.errors import DomainError, ErrorCode
from infra.metrics import ERRORS

# Registers the domain's enum as the GraphQL ErrorCode (the decorator returns the same class).
strawberry.enum(ErrorCode, description="Machine-readable reason for a failure.")


@strawberry.type(description="An expected failure of a mutation, about one input field or none.")
class UserError:
    field: str | None = strawberry.field(
        default=None, description="Input field the error is about, when there is one."
    )
    message: str = strawberry.field(description="Human-readable explanation.")
    code: ErrorCode = strawberry.field(description="Machine-readable reason.")

    @classmethod
    def from_error(cls, error: DomainError) -> UserError:
        ERRORS.labels(error.code.value, "payload").inc()
        return cls(field=error.field, message=error.message, code=error.code)


class ApiError(Exception):
    """A failure outside a payload; carries its code into `extensions.code`."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.extensions: dict[str, object] = {"code": code.value}


def invalid_input(message: str) -> ApiError:
    return ApiError(ErrorCode.INVALID_INPUT, message)
