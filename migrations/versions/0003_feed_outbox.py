"""feed outbox

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 03:51:45.137532
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('outbox',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox'))
    )
    op.create_index('ix_outbox_unsent', 'outbox', ['id'], unique=False, postgresql_where=sa.text('sent_at IS NULL'))


def downgrade() -> None:
    op.drop_index('ix_outbox_unsent', table_name='outbox', postgresql_where=sa.text('sent_at IS NULL'))
    op.drop_table('outbox')
