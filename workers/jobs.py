"""Typed enqueue helpers: every job has a deterministic id, so a repeated enqueue of the
same work is a no-op (arq refuses a job id it already holds). Nothing enqueues a job
except through these."""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from arq import Retry
from arq.connections import ArqRedis

log = logging.getLogger("instagraph.worker")


def retry_later(ctx: dict[str, Any], error: Exception, what: str) -> NoReturn:
    """A transient failure (storage, database, Redis) of an idempotent job: arq retries
    only on `Retry`, so raise one, backing off, until the last try, which re-raises."""
    if ctx["job_try"] >= ctx["max_tries"]:
        raise error
    log.warning("%s: transient failure, retrying: %r", what, error)
    raise Retry(defer=2 ** ctx["job_try"]) from error


async def enqueue_process_post(jobs: ArqRedis, post_id: int, *, attempt: int) -> None:
    # One id per attempt: the sweeper's re-enqueue of a stuck post must not be refused
    # because the killed attempt's id is still held.
    await jobs.enqueue_job("process_post", post_id, _job_id=f"process_post:{post_id}:{attempt}")


async def enqueue_delete_post_objects(jobs: ArqRedis, post_id: int) -> None:
    await jobs.enqueue_job("delete_post_objects", post_id, _job_id=f"delete_post:{post_id}")


async def enqueue_fan_out(jobs: ArqRedis, post_id: int) -> None:
    # A post becomes READY once: one fan-out per post, however often the outbox relays it.
    await jobs.enqueue_job("fan_out_post", post_id, _job_id=f"fan_out:{post_id}")


async def enqueue_backfill_author(jobs: ArqRedis, author_id: int, *, epoch: int) -> None:
    # Named by the threshold crossing (the celebrity epoch it bumped): a retried reaction
    # to the same crossing is one job, a later crossing of the same author another.
    await jobs.enqueue_job(
        "backfill_author", author_id, _job_id=f"backfill_author:{author_id}:{epoch}"
    )


async def enqueue_announce_celebrity(jobs: ArqRedis, author_id: int, *, epoch: int) -> None:
    await jobs.enqueue_job(
        "announce_celebrity", author_id, _job_id=f"announce_celebrity:{author_id}:{epoch}"
    )


async def enqueue_deliver_notifications(
    jobs: ArqRedis, event_id: int, payload: dict[str, Any]
) -> None:
    # One delivery per outbox row, however often the relay sends it (the job is
    # idempotent too: a repeat inserts nothing and announces nothing).
    await jobs.enqueue_job("deliver_notifications", event_id, payload, _job_id=f"notify:{event_id}")


async def enqueue_process_story(jobs: ArqRedis, story_id: int, *, attempt: int) -> None:
    # One id per attempt, as for posts: the stories sweeper's re-enqueue of a stuck story
    # must not be refused because the failed attempt's id is still held.
    await jobs.enqueue_job("process_story", story_id, _job_id=f"process_story:{story_id}:{attempt}")
