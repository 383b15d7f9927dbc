"""Typed enqueue helpers: every job has a deterministic id, so a repeated enqueue of the
same work is a no-op (arq refuses a job id it already holds)."""

from __future__ import annotations

from arq.connections import ArqRedis


async def enqueue_process_post(jobs: ArqRedis, post_id: int, *, attempt: int) -> None:
    # One id per attempt: the sweeper's re-enqueue of a stuck post must not be refused
    # because the killed attempt's id is still held.
    await jobs.enqueue_job("process_post", post_id, _job_id=f"process_post:{post_id}:{attempt}")


async def enqueue_delete_post_objects(jobs: ArqRedis, post_id: int) -> None:
    await jobs.enqueue_job("delete_post_objects", post_id, _job_id=f"delete_post:{post_id}")
