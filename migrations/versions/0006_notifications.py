"""notifications

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('notifications',
    sa.Column('id', sa.BigInteger(), server_default=sa.text('next_snowflake()'), nullable=False),
    sa.Column('recipient_id', sa.BigInteger(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('actor_id', sa.BigInteger(), nullable=False),
    sa.Column('post_id', sa.BigInteger(), nullable=True),
    sa.Column('comment_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('read_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("kind IN ('LIKE', 'COMMENT', 'FOLLOW', 'MENTION', 'FOLLOW_REQUEST')", name=op.f('ck_notifications_kind_known')),
    sa.CheckConstraint('recipient_id <> actor_id', name=op.f('ck_notifications_not_own_action')),
    sa.ForeignKeyConstraint(['recipient_id'], ['users.id'], name=op.f('fk_notifications_recipient_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], name=op.f('fk_notifications_actor_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['post_id'], ['posts.id'], name=op.f('fk_notifications_post_id_posts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['comment_id'], ['comments.id'], name=op.f('fk_notifications_comment_id_comments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications'))
    )
    op.create_index(
        'uq_notifications_once', 'notifications',
        ['recipient_id', 'kind', 'actor_id', sa.text('coalesce(post_id, 0)'), sa.text('coalesce(comment_id, 0)')],
        unique=True,
    )
    op.create_index('ix_notifications_recipient_id_id', 'notifications', ['recipient_id', sa.text('id DESC')], unique=False)
    op.create_index('ix_notifications_comment_id', 'notifications', ['comment_id'], unique=False, postgresql_where=sa.text('comment_id IS NOT NULL'))
    op.create_index('ix_notifications_unread', 'notifications', ['recipient_id'], unique=False, postgresql_where=sa.text('read_at IS NULL'))


def downgrade() -> None:
    op.drop_table('notifications')
