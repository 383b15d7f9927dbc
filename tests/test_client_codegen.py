"""Generated client documents are up to date, and every hash a client sends is trusted.

- web/app/documents.js and web/trusted-documents.json match web/graphql/*.graphql
  (`make documents`), with no Node needed;
- the TypeScript example's GraphQL Code Generator output (examples/typescript/src/gql)
  matches schema.graphql and web/graphql (`make codegen`), and the example type-checks;
- every persisted-document hash the TypeScript client can send is in the server's default
  manifest, and the compiled example runs against a server that accepts nothing else.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from graphql import build_schema

from schema.documents import hash_document, load_manifest
from schema.export import SCHEMA_PATH
from schema.manifest import (
    CODEGEN_DOCUMENTS,
    WEB_DOCUMENTS,
    WEB_DOCUMENTS_JS,
    WEB_MANIFEST,
    build_manifest,
    documents_module,
    named_operations,
    web_client_files,
)
from settings import ROOT
from tests.conftest import Server, _with_redis_db, clean_state, serve
from tests.factories import PASSWORD, Factory

EXAMPLE = ROOT / "examples" / "typescript"
GENERATED = EXAMPLE / "src" / "gql"
GENERATED_TYPES = GENERATED / "graphql.ts"
# How a generated document carries its hash: `{"__meta__":{"hash":"sha256:<hex>"},...}`.
META_HASH = re.compile(r'"__meta__":\{"hash":"(sha256:[0-9a-f]{64})"\}')
EXPORTED_DOCUMENT = re.compile(r"^export const (\w+)Document = ", re.MULTILINE)


def run(*command: str, cwd: Path = EXAMPLE, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed commands, no shell
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "NODE_NO_WARNINGS": "1", **env},
        check=False,
    )


async def run_async(*command: str, cwd: Path = EXAMPLE) -> tuple[int, str, str]:
    """`run` without blocking the event loop the test's server runs in."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


# --- the web client's documents (Python only) ------------------------------------------


def test_web_documents_are_up_to_date():
    for path, expected in web_client_files().items():
        assert path.exists(), f"{path.relative_to(ROOT)} is missing: run `make documents`"
        assert path.read_text(encoding="utf-8") == expected, (
            f"{path.relative_to(ROOT)} is stale (web/graphql/*.graphql, schema.graphql or "
            "the TypeScript example's persisted documents changed): run `make documents`"
        )


def test_every_web_operation_is_trusted_under_its_hash():
    operations = named_operations([WEB_DOCUMENTS], schema=None)
    assert {"LogIn", "HomeFeed", "FeedItemAdded", "CreatePost"} <= operations.keys()
    module = WEB_DOCUMENTS_JS.read_text(encoding="utf-8")
    assert module.startswith("// Generated from web/graphql/*.graphql by `make documents`")
    exported = json.loads(module.split("export const documents = ", 1)[1].rstrip().rstrip(";"))
    assert list(exported) == list(operations)
    # The server's own loader accepts the manifest (it checks every hash).
    trusted = load_manifest(WEB_MANIFEST)
    for name, entry in exported.items():
        assert entry == {"text": operations[name], "hash": hash_document(operations[name])}
        assert trusted[entry["hash"]] == entry["text"], name


def test_operations_take_fragments_from_any_file_and_need_unique_names(tmp_path):
    (tmp_path / "a.graphql").write_text(
        "query Me { viewer { ...Who } }\nquery Them($u: String!) { user(username: $u) { ...Who } }\n"
    )
    (tmp_path / "b.graphql").write_text("fragment Who on User { id username }\n")
    schema = build_schema(SCHEMA_PATH.read_text(encoding="utf-8"))
    operations = named_operations([tmp_path], schema=schema)
    assert operations == {
        "Me": "query Me {\n  viewer {\n    ...Who\n  }\n}\n\nfragment Who on User {\n  id\n  username\n}",
        "Them": "query Them($u: String!) {\n  user(username: $u) {\n    ...Who\n  }\n}\n\n"
        "fragment Who on User {\n  id\n  username\n}",
    }
    manifest = build_manifest([tmp_path], schema=schema, per_operation=True)
    assert manifest == {hash_document(text): text for text in operations.values()}
    module = documents_module(operations, source="ops", command="a test")
    assert module.startswith("// Generated from ops by a test: do not edit.\n")
    assert json.loads(module.split(" = ", 1)[1].rstrip().rstrip(";")) == {
        name: {"text": text, "hash": hash_document(text)} for name, text in operations.items()
    }
    # Another tool's manifest is taken in, its hashes checked like the server checks them.
    other = tmp_path / "other.json"
    other.write_text(json.dumps({f"sha256:{hash_document('{ __typename }')}": "{ __typename }"}))
    merged = build_manifest([tmp_path], schema=schema, per_operation=True, include=[other])
    assert merged == {**manifest, hash_document("{ __typename }"): "{ __typename }"}
    other.write_text(json.dumps({f"sha256:{'0' * 64}": "{ __typename }"}))
    with pytest.raises(ValueError, match="not the SHA-256 of its document"):
        build_manifest([tmp_path], schema=schema, per_operation=True, include=[other])
    # What a client looking operations up by name cannot tell apart is refused, all at once.
    (tmp_path / "c.graphql").write_text(
        "query Me { __typename }\nfragment Who on User { id }\n{ viewer { id } }\n"
    )
    with pytest.raises(ValueError) as problems:
        named_operations([tmp_path], schema=schema)
    assert str(problems.value).splitlines() == [
        f"{tmp_path / 'c.graphql'}: fragment Who is also defined in {tmp_path / 'b.graphql'}",
        f"{tmp_path / 'c.graphql'}: operation Me is also defined in {tmp_path / 'a.graphql'}",
        f"{tmp_path / 'c.graphql'}: every operation needs a name",
    ]


# --- the TypeScript example -------------------------------------------------------------


def test_every_hash_the_typescript_client_sends_is_trusted():
    """The client sends `document.__meta__.hash` and, on a miss, the text that
    persisted-documents.json holds for it: both must be in web/trusted-documents.json."""
    generated = GENERATED_TYPES.read_text(encoding="utf-8")
    sent = META_HASH.findall(generated)
    # Every operation document carries a hash (fragments are never sent alone).
    operations = named_operations([WEB_DOCUMENTS], schema=None)
    assert sorted(EXPORTED_DOCUMENT.findall(generated)) == sorted(operations)
    assert len(sent) == len(operations) == len(set(sent))
    persisted = json.loads(CODEGEN_DOCUMENTS.read_text(encoding="utf-8"))
    assert sorted(sent) == sorted(persisted)
    trusted = load_manifest(WEB_MANIFEST)
    untrusted = [key for key in sent if trusted.get(key.removeprefix("sha256:")) != persisted[key]]
    assert untrusted == [], "not in web/trusted-documents.json: run `make documents`"


@pytest.fixture(scope="session")
def typescript_example() -> Path:
    """examples/typescript with its locked packages (`npm ci`, only when the lockfile
    changed since the last install). Skipped only when node or npm is not installed."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed to run GraphQL Code Generator and tsc")
    installed = EXAMPLE / "node_modules" / ".package-lock.json"
    lockfile = EXAMPLE / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lockfile.stat().st_mtime:
        result = run("npm", "ci", "--no-audit", "--no-fund")
        if result.returncode != 0:
            pytest.fail(f"npm ci failed in {EXAMPLE}:\n{result.stdout}\n{result.stderr}")
    return EXAMPLE


def test_generated_types_are_up_to_date(typescript_example, tmp_path):
    output = tmp_path / "gql"
    result = run(
        "npx",
        "--no-install",
        "graphql-codegen",
        "--config",
        "codegen.ts",
        CODEGEN_OUTPUT=f"{output}/",
    )
    assert result.returncode == 0, f"codegen failed:\n{result.stdout}\n{result.stderr}"
    fresh = {p.relative_to(output): p.read_bytes() for p in output.rglob("*") if p.is_file()}
    committed = {
        p.relative_to(GENERATED): p.read_bytes() for p in GENERATED.rglob("*") if p.is_file()
    }
    assert "graphql.ts" in {str(name) for name in fresh}
    stale = sorted(
        str(name)
        for name in fresh.keys() | committed.keys()
        if fresh.get(name) != committed.get(name)
    )
    assert stale == [], (
        f"examples/typescript/src/gql is stale ({', '.join(stale)} differ from what GraphQL "
        "Code Generator makes of schema.graphql and web/graphql): run `make codegen`"
    )


def test_typescript_example_type_checks(typescript_example):
    result = run("npx", "--no-install", "tsc", "--noEmit")
    assert result.returncode == 0, f"tsc --noEmit failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
async def trusted_only_server(settings) -> AsyncIterator[Server]:
    """The API as in production with first-party clients: the default manifest, and
    nothing outside it."""
    configured = replace(
        settings,
        redis_url=_with_redis_db(settings.redis_url, 5),
        trusted_documents=WEB_MANIFEST,
        trusted_documents_only=True,
    )
    async with serve(configured) as running:
        yield running


async def test_compiled_example_reads_the_feed_from_a_trusted_only_server(
    typescript_example, trusted_only_server, tmp_path
):
    await clean_state(trusted_only_server)
    factory = Factory(trusted_only_server.engine, trusted_only_server.settings)
    author, reader = await factory.user("ts_author"), await factory.user("ts_reader")
    await factory.follow(reader, author)
    await factory.ready_post(author, "Typed from TypeScript #codegen")
    # Compiled outside the work tree, beside the example's package.json and packages.
    shutil.copy(EXAMPLE / "package.json", tmp_path / "package.json")
    (tmp_path / "node_modules").symlink_to(EXAMPLE / "node_modules")
    build = run("npx", "--no-install", "tsc", "--outDir", str(tmp_path / "dist"))
    assert build.returncode == 0, f"tsc failed:\n{build.stdout}\n{build.stderr}"
    example = str(tmp_path / "dist" / "example.js")

    code, stdout, stderr = await run_async(
        "node", example, trusted_only_server.base_url, reader.username, PASSWORD
    )

    assert code == 0, f"example failed:\n{stdout}\n{stderr}"
    assert stdout.splitlines() == [
        "logged in as ts_reader",
        "ts_author: Typed from TypeScript #codegen [photo 1080x1080] 0 likes, 0 comments",
        "1 posts; no more pages",
    ]
    # The server really refuses what is not in the manifest, so the example got its
    # answers by hashes the manifest has.
    async with httpx.AsyncClient(base_url=trusted_only_server.base_url, timeout=30) as http:
        outside = await http.post("/graphql", json={"query": "{ __typename }"})
    assert outside.status_code == 403
    assert outside.json()["errors"][0]["extensions"]["code"] == "QUERY_NOT_IN_SAFELIST"
    # A failed login comes back as the typed payload's errors, not an exception.
    code, stdout, stderr = await run_async(
        "node", example, trusted_only_server.base_url, reader.username, "wrong password"
    )
    assert code == 1
    assert stderr.startswith("cannot log in as ts_reader: "), stderr
