"""Apply Alembic migrations programmatically (what `alembic upgrade head` does)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from settings import ROOT, Settings


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    # ConfigParser interpolates %, which URL-encoded passwords contain.
    url = Settings(database_url=database_url).sqlalchemy_url.replace("%", "%%")
    config.set_main_option("sqlalchemy.url", url)
    config.attributes["skip_logging"] = True
    return config


def upgrade_database(database_url: str) -> None:
    """Bring the database to the newest revision. Blocking: call it off the event loop."""
    command.upgrade(alembic_config(database_url), "head")
