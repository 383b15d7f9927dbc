"""A real S3 API for tests: moto's server on a free loopback port, in this process.

Import the fixtures into conftest (``from tests.s3_server import moto_server``) or
list this module in ``pytest_plugins``. moto accepts any credentials; they are
passed through Settings (``s3_settings``), never through os.environ.

moto does NOT enforce POST policy conditions, signatures or expiry: a test against
it can show that an upload works, never that the store refuses one.

moto's server answers every origin by default (flask-cors on the whole app); that is
switched off here, so a bucket's own CORS rules (`infra.storage.bucket_cors_rules`,
applied by `S3Storage.ensure_bucket`) decide, as on S3.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

# Read once, when moto's server module is imported: set before the import below.
os.environ["MOTO_DISABLE_GLOBAL_CORS"] = "true"

from moto.moto_server import werkzeug_app
from moto.server import ThreadedMotoServer

from settings import Settings

if not werkzeug_app.DISABLE_GLOBAL_CORS:
    raise RuntimeError(
        "moto was imported before tests/s3_server.py and answers CORS for every origin; "
        "import this module first (tests/conftest.py does)"
    )

FAKE_ACCESS_KEY_ID = "testing"
FAKE_SECRET_ACCESS_KEY = "testing"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """The endpoint URL (``http://127.0.0.1:<port>``) of a moto server for the session."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_settings(base: Settings, endpoint_url: str, **changes: Any) -> Settings:
    """``base`` pointed at the moto server, with fake credentials and a fresh bucket name."""
    values: dict[str, Any] = {
        "storage_backend": "s3",
        "s3_endpoint_url": endpoint_url,
        "s3_bucket": f"test-{uuid.uuid4().hex[:20]}",
        "s3_region": "us-east-1",
        "s3_access_key_id": FAKE_ACCESS_KEY_ID,
        "s3_secret_access_key": FAKE_SECRET_ACCESS_KEY,
    }
    values.update(changes)
    return replace(base, **values)
