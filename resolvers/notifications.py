"""Notifications: the viewer's connection, marking them read, and node(id:)."""

from __future__ import annotations

from domain import notifications as notification_domain
from resolvers.common import register_node
from schema.common import check_page_size, parse_cursor
from schema.context import Info
from schema.notifications import (
    Notification,
    NotificationConnection,
    build_notifications,
    notification_connection,
)


async def notifications(info: Info, first: int | None, after: str | None) -> NotificationConnection:
    """The viewer's notifications, newest first, keyset on the id (`after` is an id)."""
    viewer_id = info.context.require_viewer()
    size = check_page_size(first)
    cursor = parse_cursor(after, 1)
    async with info.context.engine.connect() as conn:
        records = await notification_domain.notification_page(
            conn=conn, recipient_id=viewer_id, first=size, before=cursor[0] if cursor else None
        )
    return await notification_connection(info, viewer_id, records, size, after=cursor is not None)


async def mark_notifications_read(info: Info) -> NotificationConnection:
    """Mark all the viewer's notifications read, then answer with the first page."""
    viewer_id = info.context.require_viewer()
    async with info.context.engine.begin() as conn:
        await notification_domain.mark_all_read(conn=conn, recipient_id=viewer_id)
    return await notifications(info, None, None)


async def load_notification(info: Info, notification_id: int) -> Notification | None:
    """node(id:) of a Notification: the viewer's own only, as the connection lists them."""
    viewer_id = info.context.viewer_id
    if viewer_id is None:
        return None
    async with info.context.engine.connect() as conn:
        record = await notification_domain.notification_by_id(
            conn=conn, recipient_id=viewer_id, notification_id=notification_id
        )
    if record is None:
        return None
    built = await build_notifications(info, [record])
    return built[0] if built else None


register_node("Notification", load_notification)
