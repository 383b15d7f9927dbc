"""users and follow graph

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 03:31:20.835689
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('users',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('username', sa.String(length=30), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('password_hash', sa.String(length=200), nullable=False),
    sa.Column('display_name', sa.String(length=64), nullable=True),
    sa.Column('bio', sa.String(length=150), nullable=True),
    sa.Column('is_private', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('follower_count', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('following_count', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('post_count', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_index('ix_users_username_prefix', 'users', ['username'], unique=False, postgresql_ops={'username': 'text_pattern_ops'})
    op.create_index('uq_users_email_lower', 'users', [sa.literal_column('lower(email)')], unique=True)
    op.create_table('blocks',
    sa.Column('blocker_id', sa.BigInteger(), nullable=False),
    sa.Column('blocked_id', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['blocked_id'], ['users.id'], name=op.f('fk_blocks_blocked_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['blocker_id'], ['users.id'], name=op.f('fk_blocks_blocker_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('blocker_id', 'blocked_id', name=op.f('pk_blocks'))
    )
    op.create_index('ix_blocks_blocked_id', 'blocks', ['blocked_id'], unique=False)
    op.create_table('follow_requests',
    sa.Column('requester_id', sa.BigInteger(), nullable=False),
    sa.Column('target_id', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['requester_id'], ['users.id'], name=op.f('fk_follow_requests_requester_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['target_id'], ['users.id'], name=op.f('fk_follow_requests_target_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('requester_id', 'target_id', name=op.f('pk_follow_requests'))
    )
    op.create_index('ix_follow_requests_target_id', 'follow_requests', ['target_id', sa.literal_column('created_at DESC')], unique=False)
    op.create_table('follows',
    sa.Column('follower_id', sa.BigInteger(), nullable=False),
    sa.Column('followee_id', sa.BigInteger(), nullable=False),
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('follower_id <> followee_id', name=op.f('ck_follows_no_self_follow')),
    sa.ForeignKeyConstraint(['followee_id'], ['users.id'], name=op.f('fk_follows_followee_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['follower_id'], ['users.id'], name=op.f('fk_follows_follower_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('follower_id', 'followee_id', name=op.f('pk_follows'))
    )
    op.create_index('ix_follows_followee_id_id', 'follows', ['followee_id', sa.literal_column('id DESC')], unique=False)
    op.create_index('ix_follows_follower_id_id', 'follows', ['follower_id', sa.literal_column('id DESC')], unique=False)


def downgrade() -> None:
    op.drop_index('ix_follows_follower_id_id', table_name='follows')
    op.drop_index('ix_follows_followee_id_id', table_name='follows')
    op.drop_table('follows')
    op.drop_index('ix_follow_requests_target_id', table_name='follow_requests')
    op.drop_table('follow_requests')
    op.drop_index('ix_blocks_blocked_id', table_name='blocks')
    op.drop_table('blocks')
    op.drop_index('uq_users_email_lower', table_name='users')
    op.drop_index('ix_users_username_prefix', table_name='users', postgresql_ops={'username': 'text_pattern_ops'})
    op.drop_table('users')
