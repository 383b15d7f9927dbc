"""A real S3 API for tests: moto's server on a free loopback port, in this process.

Import the fixtures into conftest (``from tests.s3_server import moto_server``) or
list this module in ``pytest_plugins``. moto accepts any credentials; they are
passed through Settings (``s3_settings``), never through os.environ.

moto does NOT enforce POST policy conditions, signatures or expiry: a test against
it can show that an upload works, never that the store refuses one.

moto's server answers every origin by default (flask-cors on the whole app); that is
switched off here, so a bucket's own CORS rules (`infra.storage.bucket_cors_rules`,
applied by `S3Storage.ensure_bucket`) decide, as on S3: the session's server also
answers a presigned POST with them, as S3 does (`answer_cors_on_form_uploads`).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

# Read once, when moto's server module is imported: set before the import below.
os.environ["MOTO_DISABLE_GLOBAL_CORS"] = "true"

from moto.moto_server import werkzeug_app
from moto.s3.responses import S3Response
from moto.server import ThreadedMotoServer

from settings import Settings

if not werkzeug_app.DISABLE_GLOBAL_CORS:
    raise RuntimeError(
        "moto was imported before tests/s3_server.py and answers CORS for every origin; "
        "import this module first (tests/conftest.py does)"
    )

FAKE_ACCESS_KEY_ID = "testing"
FAKE_SECRET_ACCESS_KEY = "testing"


@contextlib.contextmanager
def answer_cors_on_form_uploads() -> Iterator[None]:
    """While the block runs, moto answers a POST to a bucket (a browser's presigned POST
    form upload) with the bucket's CORS headers, as S3 answers any request whose Origin a
    rule allows. moto adds them to object GETs and PUTs (getmoto/moto#6376, for
    getmoto/moto#6371) and answers preflights, but not the bucket POST, so a browser
    would block the answer to an upload that succeeded. The headers come from moto's
    own rule matching (`_get_cors_headers_other`); its server runs in this process."""
    original = S3Response._bucket_response_post

    def with_cors(self: S3Response, request: Any, bucket_name: str) -> Any:
        status, headers, body = original(self, request, bucket_name)
        return status, {**self._get_cors_headers_other(), **headers}, body

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(S3Response, "_bucket_response_post", with_cors)
        yield


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """The endpoint URL (``http://127.0.0.1:<port>``) of a moto server for the session,
    answering CORS as S3 does (`answer_cors_on_form_uploads`)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    with answer_cors_on_form_uploads():
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
