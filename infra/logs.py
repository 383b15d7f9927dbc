"""Logging for the API and the worker: one line per record, JSON by default in production,
and the id of the request that caused it on every line, jobs included.

The request id lives in a context variable: `RequestIdMiddleware` sets it for each HTTP
request and WebSocket; `workers.jobs` sends it along with every job it enqueues (and the
outbox rows carry it for the jobs the relay enqueues later), and `workers.settings`
restores it around each job. A record logged anywhere in between, by our code or a
library's, gets `request_id` from `RequestIdFilter`.

    LOG_FORMAT=json   {"time": ..., "level": "INFO", "logger": ..., "message": ...,
                       "request_id": "...", "job": "fan_out_post", ...}
    LOG_FORMAT=text   2026-12-01 18:00:00,000 INFO instagraph.feed [req 1a2b...] message
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
JOB: ContextVar[str | None] = ContextVar("job", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(context)s %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
JSON_RENAMES = {"asctime": "time", "levelname": "level", "name": "logger"}


def current_request_id() -> str | None:
    return REQUEST_ID.get()


@contextmanager
def request_context(request_id: str | None, job: str | None = None) -> Iterator[None]:
    """Within the block, log records carry this request id (and job name)."""
    request_token = REQUEST_ID.set(request_id)
    job_token = JOB.set(job)
    try:
        yield
    finally:
        JOB.reset(job_token)
        REQUEST_ID.reset(request_token)


class RequestIdFilter(logging.Filter):
    """Adds `request_id` and `job` to every record (None outside a request or a job), and
    `context`, their short form for the text format."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = REQUEST_ID.get()
        job = JOB.get()
        record.request_id = request_id
        record.job = job
        parts = ([f"job {job}"] if job else []) + ([f"req {request_id}"] if request_id else [])
        record.context = f" [{' '.join(parts)}]" if parts else ""
        return True


def formatter(kind: str) -> logging.Formatter:
    if kind == "json":
        # request_id and job are null outside a request or a job.
        return JsonFormatter(
            JSON_FIELDS,
            rename_fields=JSON_RENAMES,
            static_fields={},
            reserved_attrs=[*_RESERVED, "context"],
        )
    return logging.Formatter(TEXT_FORMAT)


_RESERVED = [
    "args", "created", "exc_info", "exc_text", "filename", "funcName", "levelno", "lineno",
    "module", "msecs", "msg", "pathname", "process", "processName", "relativeCreated",
    "stack_info", "thread", "threadName", "taskName",
]  # fmt: skip


OWN_HANDLERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "arq")


def configure_logging(kind: str, level: int = logging.INFO) -> None:
    """One handler on the root logger, to stderr, in `kind` ("json" or "text"), in place
    of any set before by this function or `logging.basicConfig`."""
    if kind not in ("json", "text"):
        raise ValueError(f"LOG_FORMAT must be json or text, got {kind!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(kind))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    # Ours from an earlier call, and logging.basicConfig's; others (a test runner's
    # capture handlers) stay.
    for old in list(root.handlers):
        if getattr(old, "instagraph", False) or type(old) is logging.StreamHandler:
            root.removeHandler(old)
    handler.instagraph = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn and arq configure their own loggers before our code runs: route them
    # through this handler instead, so every line has one format.
    for name in OWN_HANDLERS:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            if type(old) is logging.StreamHandler:
                logger.removeHandler(old)
        logger.propagate = True
