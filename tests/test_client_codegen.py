"""Generated client documents are up to date, and every hash a client sends is trusted.

- web/app/documents.js and web/trusted-documents.json match web/graphql/*.graphql
  (`make documents`), with no Node needed;
- the TypeScript example's GraphQL Code Generator output (examples/typescript/src/gql)
  matches schema.graphql and web/graphql (`make codegen`), and the example type-checks;
- every persisted-document hash the TypeScript client can send is in the server's default
  manifest, and the compiled example runs against a server that accepts nothing else,
  and against servers with no manifest (APQ on: it registers its texts; APQ off: it
  falls back to sending text).

Node and npm are needed for the TypeScript part: without them those tests skip, or fail
when REQUIRE_NODE is set (CI sets it). Every child process has a deadline.
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
    main,
    named_operations,
    web_client_files,
)
from settings import ROOT
from tests.conftest import Server, clean_state, serve, with_redis_db
from tests.factories import PASSWORD, Factory

EXAMPLE = ROOT / "examples" / "typescript"
GENERATED = EXAMPLE / "src" / "gql"
GENERATED_TYPES = GENERATED / "graphql.ts"
# How a generated document carries its hash: `{"__meta__":{"hash":"sha256:<hex>"},...}`.
META_HASH = re.compile(r'"__meta__":\{"hash":"(sha256:[0-9a-f]{64})"\}')
EXPORTED_DOCUMENT = re.compile(r"^export const (\w+)Document = ", re.MULTILINE)
# Deadlines (seconds): generous for a loaded CI machine; they only keep a hung child
# process (a registry that does not answer, a client waiting on a server) from hanging.
INSTALL_TIMEOUT = 600
TOOL_TIMEOUT = 300
RUN_TIMEOUT = 60
NODE_REASON = "node and npm are needed to run GraphQL Code Generator and tsc"


def run(
    *command: str, cwd: Path = EXAMPLE, timeout: float = TOOL_TIMEOUT, **env: str
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(  # noqa: S603 - fixed commands, no shell
            command,
            cwd=cwd,
            capture_output=True,
            text=True,
            env={**os.environ, "NODE_NO_WARNINGS": "1", **env},
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:  # run() has killed it
        pytest.fail(f"{' '.join(command)} did not finish within {timeout} s:\n{exc.output}")


async def run_async(
    *command: str, cwd: Path = EXAMPLE, deadline: float = RUN_TIMEOUT
) -> tuple[int, str, str]:
    """`run` without blocking the event loop the test's server runs in."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), deadline)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{' '.join(command)} did not finish within {deadline} s")
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


def test_fragments_are_printed_in_the_order_of_the_first_manifests(tmp_path):
    """The printed text, so every `--per-operation` hash, is what the tool printed before
    fragments could live in other files: a node's fragments in name order, searched last
    added first. Shipped clients send those hashes; a rebuilt manifest must keep them."""
    (tmp_path / "q.graphql").write_text(
        "query Q { viewer { ...B ...A } }\n"
        "fragment A on User { id ...C }\n"
        "fragment B on User { username ...D }\n"
    )
    (tmp_path / "shared.graphql").write_text(
        "fragment C on User { bio }\nfragment D on User { id ...C }\n"
    )
    text = (
        "query Q {\n  viewer {\n    ...B\n    ...A\n  }\n}\n\n"
        "fragment A on User {\n  id\n  ...C\n}\n\n"
        "fragment B on User {\n  username\n  ...D\n}\n\n"
        "fragment D on User {\n  id\n  ...C\n}\n\n"
        "fragment C on User {\n  bio\n}"
    )
    schema = build_schema(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert named_operations([tmp_path], schema=schema) == {"Q": text}
    # The hash the first tool gave this operation (its fragments in one file).
    digest = "9129b7fe09d3a15173bd5337f755b9611ce04005a0017b7e95a6f07daa1d6b95"
    assert hash_document(text) == digest
    assert build_manifest([tmp_path], schema=schema, per_operation=True) == {digest: text}


def test_a_fragment_defined_twice_in_one_file_is_reported(tmp_path):
    (tmp_path / "a.graphql").write_text(
        "query Me { viewer { ...Who } }\n"
        "fragment Who on User { id }\n"
        "fragment Who on User { username }\n"
    )
    with pytest.raises(ValueError) as problems:
        named_operations([tmp_path], schema=None)
    assert str(problems.value).splitlines() == [
        f"{tmp_path / 'a.graphql'}: fragment Who is defined twice"
    ]
    with pytest.raises(ValueError, match="fragment Who is defined twice"):
        build_manifest([tmp_path], schema=None, per_operation=True)


@pytest.mark.parametrize("validate", [True, False], ids=["with-schema", "no-validate"])
def test_an_included_manifest_with_an_unparsable_document_is_a_reported_problem(
    tmp_path, capsys, validate
):
    (tmp_path / "ops.graphql").write_text("query Me { viewer { id } }\n")
    broken = "query Broken { viewer { id "
    other = tmp_path / "other.json"
    other.write_text(json.dumps({hash_document(broken): broken}))
    with pytest.raises(ValueError) as problems:
        build_manifest(
            [tmp_path / "ops.graphql"],
            schema=build_schema(SCHEMA_PATH.read_text(encoding="utf-8")) if validate else None,
            per_operation=True,
            include=[other],
        )
    [problem] = str(problems.value).splitlines()
    assert problem.startswith(f"{other}: Syntax Error"), problem
    # The command line says the same, and exits 1 (no traceback).
    argv = [str(tmp_path / "ops.graphql"), "--per-operation", "--include", str(other)]
    assert main([*argv, *([] if validate else ["--no-validate"])]) == 1
    [message] = capsys.readouterr().err.splitlines()
    assert message == problem


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
async def typescript_example() -> Path:
    """examples/typescript with its locked packages (`npm ci`, only when the lockfile
    changed since the last install; the servers' event loop runs on meanwhile).
    Skipped only when node or npm is not installed, and then failed if REQUIRE_NODE."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        if os.environ.get("REQUIRE_NODE", "") not in ("", "0"):  # CI: fail, never skip
            pytest.fail(NODE_REASON)
        pytest.skip(NODE_REASON)
    installed = EXAMPLE / "node_modules" / ".package-lock.json"
    lockfile = EXAMPLE / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lockfile.stat().st_mtime:
        code, stdout, stderr = await run_async(
            "npm", "ci", "--no-audit", "--no-fund", deadline=INSTALL_TIMEOUT
        )
        if code != 0:
            pytest.fail(f"npm ci failed in {EXAMPLE}:\n{stdout}\n{stderr}")
    return EXAMPLE


@pytest.fixture(scope="module")
async def compiled_example(
    typescript_example: Path, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """The example compiled to JavaScript (dist/example.js), outside the work tree,
    beside the example's package.json and packages."""
    out = tmp_path_factory.mktemp("typescript-example")
    shutil.copy(EXAMPLE / "package.json", out / "package.json")
    (out / "node_modules").symlink_to(EXAMPLE / "node_modules")
    code, stdout, stderr = await run_async(
        "npx", "--no-install", "tsc", "--outDir", str(out / "dist"), deadline=TOOL_TIMEOUT
    )
    assert code == 0, f"tsc failed:\n{stdout}\n{stderr}"
    return str(out / "dist" / "example.js")


async def reader_with_a_post(server: Server) -> str:
    """Empty tables, then ts_reader following ts_author, who has one READY post."""
    await clean_state(server)
    factory = Factory(server.engine, server.settings)
    author, reader = await factory.user("ts_author"), await factory.user("ts_reader")
    await factory.follow(reader, author)
    await factory.ready_post(author, "Typed from TypeScript #codegen")
    return reader.username


EXAMPLE_OUTPUT = [
    "logged in as ts_reader",
    "ts_author: Typed from TypeScript #codegen [photo 1080x1080] 0 likes, 0 comments",
    "1 posts; no more pages",
]


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
        redis_url=with_redis_db(settings.redis_url, 5),
        trusted_documents=WEB_MANIFEST,
        trusted_documents_only=True,
    )
    async with serve(configured) as running:
        yield running


async def test_compiled_example_reads_the_feed_from_a_trusted_only_server(
    compiled_example, trusted_only_server
):
    example = compiled_example
    reader = await reader_with_a_post(trusted_only_server)

    code, stdout, stderr = await run_async(
        "node", example, trusted_only_server.base_url, reader, PASSWORD
    )

    assert code == 0, f"example failed:\n{stdout}\n{stderr}"
    assert stdout.splitlines() == EXAMPLE_OUTPUT
    # The server really refuses what is not in the manifest, so the example got its
    # answers by hashes the manifest has.
    async with httpx.AsyncClient(base_url=trusted_only_server.base_url, timeout=30) as http:
        outside = await http.post("/graphql", json={"query": "{ __typename }"})
    assert outside.status_code == 403
    assert outside.json()["errors"][0]["extensions"]["code"] == "QUERY_NOT_IN_SAFELIST"
    # A failed login comes back as the typed payload's errors, not an exception.
    code, stdout, stderr = await run_async(
        "node", example, trusted_only_server.base_url, reader, "wrong password"
    )
    assert code == 1
    assert stderr.startswith("cannot log in as ts_reader: "), stderr


@pytest.mark.parametrize("apq", [True, False], ids=["apq-on", "apq-off"])
async def test_compiled_example_reads_the_feed_from_a_server_without_a_manifest(
    compiled_example, settings, apq
):
    """No manifest: with APQ the server does not know the hashes
    (PERSISTED_QUERY_NOT_FOUND) and the client registers its texts; without APQ the
    server does no persisted queries at all (PERSISTED_QUERY_NOT_SUPPORTED) and the
    client sends text instead."""
    configured = replace(
        settings,
        redis_url=with_redis_db(settings.redis_url, 7),
        trusted_documents=None,
        trusted_documents_only=False,
        apq_enabled=apq,
    )
    async with serve(configured) as server:
        reader = await reader_with_a_post(server)
        # The server does what the client must cope with.
        hash_only = {
            "extensions": {"persistedQuery": {"version": 1, "sha256Hash": "0" * 64}},
        }
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            answer = await http.post("/graphql", json=hash_only)
        expected = "PERSISTED_QUERY_NOT_FOUND" if apq else "PERSISTED_QUERY_NOT_SUPPORTED"
        assert answer.json()["errors"][0]["extensions"]["code"] == expected

        code, stdout, stderr = await run_async(
            "node", compiled_example, server.base_url, reader, PASSWORD
        )

        assert code == 0, f"example failed:\n{stdout}\n{stderr}"
        assert stdout.splitlines() == EXAMPLE_OUTPUT
        # With APQ the texts were registered under their hashes; without, nothing was.
        registered = [key async for key in server.redis.scan_iter("apq:*")]
        assert (len(registered) == 2) if apq else (registered == []), registered
