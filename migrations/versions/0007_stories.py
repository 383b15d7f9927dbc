"""stories

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 13:00:00

Safe on a live database: the new tables are created in the migration's transaction;
on the existing (large) `media` table that transaction only makes metadata changes
(a nullable column, DROP NOT NULL, constraints added NOT VALID), and the scans (the
constraints' VALIDATE, the story_id index built CONCURRENTLY) run after it committed,
under locks that let reads and writes of media go on. Re-runnable: a re-run skips the
committed part and finishes the rest.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The stories table exists only if this part committed (it commits as a whole when
    # the autocommit block below begins): a re-run skips it.
    if sa.inspect(op.get_bind()).has_table("stories"):
        _validate_media_owner()
        return
    op.create_table('stories',
    sa.Column('id', sa.BigInteger(), server_default=sa.text('next_snowflake()'), nullable=False),
    sa.Column('author_id', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='PENDING', nullable=False),
    sa.Column('failure_reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('status_changed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('ready_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('processing_attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.CheckConstraint("status IN ('PENDING', 'PROCESSING', 'READY', 'FAILED')", name=op.f('ck_stories_status_known')),
    sa.CheckConstraint("(status = 'READY') = (expires_at IS NOT NULL)", name=op.f('ck_stories_ready_expires')),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], name=op.f('fk_stories_author_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stories'))
    )
    op.create_index('ix_stories_live', 'stories', ['author_id', 'expires_at'], unique=False, postgresql_where=sa.text("status = 'READY'"))
    op.create_index('ix_stories_expires_at', 'stories', ['expires_at'], unique=False, postgresql_where=sa.text("status = 'READY'"))
    op.create_index('ix_stories_unfinished', 'stories', ['created_at'], unique=False, postgresql_where=sa.text("status <> 'READY'"))
    op.create_table('story_views',
    sa.Column('story_id', sa.BigInteger(), nullable=False),
    sa.Column('viewer_id', sa.BigInteger(), nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['story_id'], ['stories.id'], name=op.f('fk_story_views_story_id_stories'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['viewer_id'], ['users.id'], name=op.f('fk_story_views_viewer_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('story_id', 'viewer_id', name=op.f('pk_story_views'))
    )
    # A story's one media item is a media row owned by the story instead of a post.
    # Metadata only, no scan of media: a nullable column without a default, DROP NOT
    # NULL, and two constraints added NOT VALID (enforced for new rows from here on).
    op.alter_column('media', 'post_id', existing_type=sa.BigInteger(), nullable=True)
    op.add_column('media', sa.Column('story_id', sa.BigInteger(), nullable=True))
    op.execute(
        "ALTER TABLE media ADD CONSTRAINT fk_media_story_id_stories FOREIGN KEY (story_id)"
        " REFERENCES stories (id) ON DELETE CASCADE NOT VALID"
    )
    op.execute("ALTER TABLE media ADD CONSTRAINT ck_media_one_owner CHECK (num_nonnulls(post_id, story_id) = 1) NOT VALID")
    _validate_media_owner()


def _validate_media_owner() -> None:
    """The scans of media, after the transaction above committed: a VALIDATE in that
    same transaction would gain nothing (its ACCESS EXCLUSIVE lock from ADD CONSTRAINT
    is held to the end), while on its own it takes SHARE UPDATE EXCLUSIVE, which lets
    reads and writes go on; the unique index builds CONCURRENTLY for the same reason.
    Idempotent: validating a valid constraint is a no-op, and an index left INVALID by
    a failed build is dropped and built again."""
    with op.get_context().autocommit_block():
        op.execute("ALTER TABLE media VALIDATE CONSTRAINT fk_media_story_id_stories")
        op.execute("ALTER TABLE media VALIDATE CONSTRAINT ck_media_one_owner")
        valid = op.get_bind().scalar(
            sa.text(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE c.relname = 'uq_media_story_id'"
            )
        )
        if valid:
            return
        if valid is not None:
            op.execute("DROP INDEX CONCURRENTLY uq_media_story_id")
        op.execute(
            "CREATE UNIQUE INDEX CONCURRENTLY uq_media_story_id ON media (story_id)"
            " WHERE story_id IS NOT NULL"
        )


def downgrade() -> None:
    op.execute("DELETE FROM media WHERE story_id IS NOT NULL")
    op.drop_constraint(op.f('ck_media_one_owner'), 'media', type_='check')
    op.drop_index('uq_media_story_id', table_name='media', postgresql_where=sa.text('story_id IS NOT NULL'))
    op.drop_constraint(op.f('fk_media_story_id_stories'), 'media', type_='foreignkey')
    op.drop_column('media', 'story_id')
    op.alter_column('media', 'post_id', existing_type=sa.BigInteger(), nullable=False)
    op.drop_table('story_views')
    op.drop_index('ix_stories_unfinished', table_name='stories', postgresql_where=sa.text("status <> 'READY'"))
    op.drop_index('ix_stories_expires_at', table_name='stories', postgresql_where=sa.text("status = 'READY'"))
    op.drop_index('ix_stories_live', table_name='stories', postgresql_where=sa.text("status = 'READY'"))
    op.drop_table('stories')
