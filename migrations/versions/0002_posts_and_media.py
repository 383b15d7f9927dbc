"""posts and media

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 03:42:17.048173
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Milliseconds since 2025-01-01 UTC in the high 41 bits (good until 2094), a sequence
# in the low 12: time-ordered, unique per database up to 4,096 ids per millisecond, and
# below 2^53, so an id is exact as a Redis sorted-set score (a double) and in JavaScript.
SNOWFLAKE = """
CREATE FUNCTION next_snowflake() RETURNS bigint LANGUAGE sql VOLATILE AS $$
    SELECT ((floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint - 1735689600000) << 12)
           | (nextval('snowflake_seq') % 4096)
$$;
"""


def upgrade() -> None:
    op.execute("CREATE SEQUENCE snowflake_seq")
    op.execute(SNOWFLAKE)
    op.create_table('posts',
    sa.Column('id', sa.BigInteger(), server_default=sa.text('next_snowflake()'), nullable=False),
    sa.Column('author_id', sa.BigInteger(), nullable=False),
    sa.Column('caption', sa.Text(), nullable=True),
    sa.Column('hashtags', postgresql.ARRAY(sa.String(length=100)), server_default=sa.text("'{}'"), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='PENDING', nullable=False),
    sa.Column('failure_reason', sa.Text(), nullable=True),
    sa.Column('idempotency_key', sa.String(length=128), nullable=True),
    sa.Column('processing_attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('status_changed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('PENDING', 'PROCESSING', 'READY', 'FAILED')", name=op.f('ck_posts_status_known')),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], name=op.f('fk_posts_author_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_posts'))
    )
    op.create_index('ix_posts_author_id_id', 'posts', ['author_id', sa.literal_column('id DESC')], unique=False)
    op.create_index('ix_posts_unfinished', 'posts', ['status', 'status_changed_at'], unique=False, postgresql_where=sa.text("status IN ('PENDING', 'PROCESSING')"))
    op.create_index('uq_posts_author_id_idempotency_key', 'posts', ['author_id', 'idempotency_key'], unique=True, postgresql_where=sa.text('idempotency_key IS NOT NULL'))
    op.create_table('media',
    sa.Column('id', sa.BigInteger(), server_default=sa.text('next_snowflake()'), nullable=False),
    sa.Column('post_id', sa.BigInteger(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('content_type', sa.String(length=64), nullable=False),
    sa.Column('byte_size', sa.BigInteger(), nullable=False),
    sa.Column('original_key', sa.String(length=255), nullable=False),
    sa.Column('upload_id', sa.String(length=255), nullable=True),
    sa.Column('detected_type', sa.String(length=64), nullable=True),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('height', sa.Integer(), nullable=True),
    sa.Column('duration_seconds', sa.Float(), nullable=True),
    sa.Column('placeholder', sa.String(length=64), nullable=True),
    sa.Column('rendition_keys', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('video_key', sa.String(length=255), nullable=True),
    sa.CheckConstraint("kind IN ('PHOTO', 'VIDEO')", name=op.f('ck_media_kind_known')),
    sa.ForeignKeyConstraint(['post_id'], ['posts.id'], name=op.f('fk_media_post_id_posts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_media'))
    )
    op.create_index('uq_media_post_id_position', 'media', ['post_id', 'position'], unique=True)


def downgrade() -> None:
    op.drop_index('uq_media_post_id_position', table_name='media')
    op.drop_table('media')
    op.drop_index('uq_posts_author_id_idempotency_key', table_name='posts', postgresql_where=sa.text('idempotency_key IS NOT NULL'))
    op.drop_index('ix_posts_unfinished', table_name='posts', postgresql_where=sa.text("status IN ('PENDING', 'PROCESSING')"))
    op.drop_index('ix_posts_author_id_id', table_name='posts')
    op.drop_table('posts')
    op.execute("DROP FUNCTION next_snowflake()")
    op.execute("DROP SEQUENCE snowflake_seq")
