"""Typed enqueue helpers: every job has a deterministic id, so a repeated enqueue of the
same work is a no-op (arq refuses a job id it already holds). Nothing enqueues a job
except through these.

Work that must follow a committed change is in the outbox first (`domain.outbox`): the
relay (`workers.outbox.relay_outbox`) enqueues it with these helpers; a request may also
enqueue the same job at once, under the same id, best effort (the relay's enqueue is then
refused as a duplicate). docs/delivery.md lists every job and its guarantee."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, NoReturn

from arq import Retry
from arq.connections import ArqRedis

from infra.logs import current_request_id

log = logging.getLogger("instagraph.worker")


async def _enqueue(jobs: ArqRedis, function: str, *args: Any, **options: Any) -> None:
    """arq's enqueue_job, with the id of the request (or job) enqueuing it: the job logs
    under it (`workers.settings.observed`, infra/logs.py)."""
    request_id = current_request_id()
    if request_id is not None:
        options["request_id"] = request_id
    await jobs.enqueue_job(function, *args, **options)


# The effects of a committed change whose outbox row is already marked sent (clean-up
# after a deletion, a follow change, notifications): their job is the only carrier
# left, so it outlasts an outage of a dependency (S3, PostgreSQL, Redis) of about an
# hour: backoff min(2^try, PATIENT_BACKOFF_CAP) s over PATIENT_TRIES tries (2 + 4 + ...
# + 256 + 11 x 300 s, ~64 min). workers.settings gives these jobs PATIENT_TRIES.
PATIENT_TRIES = 20
PATIENT_BACKOFF_CAP = 300


def retry_later(
    ctx: dict[str, Any], error: Exception, what: str, *, patient: bool = False
) -> NoReturn:
    """A transient failure (storage, database, Redis) of an idempotent job: arq retries
    only on `Retry`, so raise one, backing off, until the last try, which re-raises.
    `patient`: a job registered with PATIENT_TRIES, backing off up to 5 minutes."""
    tries = PATIENT_TRIES if patient else ctx["max_tries"]
    if ctx["job_try"] >= tries:
        log.error("%s: giving up after %d tries: %r", what, ctx["job_try"], error)
        raise error
    log.warning("%s: transient failure, retrying: %r", what, error)
    defer = 2 ** ctx["job_try"]
    raise Retry(defer=min(defer, PATIENT_BACKOFF_CAP) if patient else defer) from error


def process_post_job_id(post_id: int, attempt: int) -> str:
    return f"process_post:{post_id}:{attempt}"


async def enqueue_process_post(jobs: ArqRedis, post_id: int, *, attempt: int) -> None:
    # One id per attempt: the sweeper's re-enqueue of a stuck post must not be refused
    # because the killed attempt's id is still held.
    await _enqueue(jobs, "process_post", post_id, _job_id=process_post_job_id(post_id, attempt))


async def enqueue_post_deleted(jobs: ArqRedis, post_id: int, author_id: int) -> None:
    # A post is deleted once: one clean-up (feeds, caches, then its objects) per post,
    # whether deletePost enqueued it at once or the outbox relay did.
    await _enqueue(jobs, "post_deleted", post_id, author_id, _job_id=f"post_deleted:{post_id}")


async def enqueue_follow_changed(jobs: ArqRedis, event_id: int, payload: dict[str, Any]) -> None:
    # One per outbox row (a follow, unfollow and follow again are three rows, three jobs).
    await _enqueue(jobs, "follow_changed", event_id, payload, _job_id=f"follow_changed:{event_id}")


async def enqueue_late_upload_sweep(jobs: ArqRedis, post_id: int, when: datetime) -> None:
    # Once per deleted post, when its last upload URL has expired (docs/uploads-hardening.md).
    await _enqueue(
        jobs, "delete_late_uploads", post_id, _job_id=f"late_uploads:{post_id}", _defer_until=when
    )


async def enqueue_stray_upload_sweep(jobs: ArqRedis, post_id: int, when: datetime) -> None:
    # Once per READY post (S3), when its upload URLs have expired: what a POST wrote to
    # its upload keys after READY goes (docs/uploads-hardening.md). Its own job id, so
    # a later deletion's `late_uploads` pass is still scheduled.
    await _enqueue(
        jobs, "delete_late_uploads", post_id, _job_id=f"stray_uploads:{post_id}", _defer_until=when
    )


async def enqueue_late_story_upload_sweep(jobs: ArqRedis, story_id: int, when: datetime) -> None:
    # Once per deleted story whose upload URL may outlive it (docs/uploads-hardening.md).
    await _enqueue(
        jobs,
        "delete_late_story_uploads",
        story_id,
        _job_id=f"late_story_uploads:{story_id}",
        _defer_until=when,
    )


async def enqueue_fan_out(jobs: ArqRedis, post_id: int, *, ready_at: float | None = None) -> None:
    # A post becomes READY once: one fan-out per post, however often the outbox relays it.
    await _enqueue(jobs, "fan_out_post", post_id, ready_at=ready_at, _job_id=f"fan_out:{post_id}")


async def enqueue_backfill_author(jobs: ArqRedis, author_id: int, *, crossing: int) -> None:
    # Named by the threshold crossing (the `follow_changed` outbox row that saw it): a
    # repeated or retried reaction to one crossing is one job, a later crossing of the
    # same author another.
    await _enqueue(
        jobs, "backfill_author", author_id, _job_id=f"backfill_author:{author_id}:{crossing}"
    )


async def enqueue_announce_celebrity(jobs: ArqRedis, author_id: int, *, crossing: int) -> None:
    await _enqueue(
        jobs,
        "announce_celebrity",
        author_id,
        _job_id=f"announce_celebrity:{author_id}:{crossing}",
    )


async def enqueue_deliver_notifications(
    jobs: ArqRedis, event_id: int, payload: dict[str, Any]
) -> None:
    # One delivery per outbox row, however often the relay sends it (the job is
    # idempotent too: a repeat inserts nothing and announces nothing).
    await _enqueue(jobs, "deliver_notifications", event_id, payload, _job_id=f"notify:{event_id}")


async def enqueue_process_story(jobs: ArqRedis, story_id: int, *, attempt: int) -> None:
    # One id per attempt, as for posts: the stories sweeper's re-enqueue of a stuck story
    # must not be refused because the failed attempt's id is still held.
    await _enqueue(jobs, "process_story", story_id, _job_id=f"process_story:{story_id}:{attempt}")
