"""The notification job: an outbox row of kind `notify` becomes notification rows, and
each new row is announced to its recipient's live subscriptions.

At least once, like the feed's jobs: the relay may enqueue a row again after a crash
(the deterministic job id usually refuses it), and a repeated run inserts nothing (the
unique index) and so announces nothing. The announcement is best effort: rows that
were committed but not announced (Redis failed just then) are in the `notifications`
connection all the same. A database failure is retried (arq `Retry`, backing off) up to
the worker's max tries: the outbox row was marked sent when the job was enqueued.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

from domain import notifications
from infra.pubsub import notification_channel, publish_if_live
from infra.resources import Resources
from workers.jobs import retry_later

log = logging.getLogger("instagraph.worker.notifications")


async def deliver_notifications(ctx: dict[str, Any], event_id: int, payload: dict[str, Any]) -> int:
    """Deliver one outbox row's notifications (`domain.notifications.deliver`); returns
    how many were new."""
    resources: Resources = ctx["resources"]
    event = notifications.NotificationEvent.from_payload(payload)
    try:
        async with resources.engine.begin() as conn:
            created = await notifications.deliver(conn=conn, event=event)
    except (DBAPIError, OSError, SQLAlchemyTimeoutError) as exc:
        # PostgreSQL unreachable, a failover, a pool timeout: the outbox row is already
        # marked sent, so this job is the notification's only way in. arq retries only
        # on Retry; any other exception would drop it for good. Nothing was committed,
        # and the job is idempotent, so another try is safe.
        retry_later(ctx, exc, f"outbox row {event_id}: delivery", patient=True)
    if created:
        try:
            await publish_if_live(
                resources.redis,
                [
                    (row.recipient_id, notification_channel(row.recipient_id), row.to_message())
                    for row in created
                ],
            )
        except Exception:  # the rows are committed; a retry would announce nothing anyway
            log.warning(
                "notifications of outbox row %d not announced live", event_id, exc_info=True
            )
    return len(created)
