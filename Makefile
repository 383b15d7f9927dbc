# Two commands on a fresh machine: `make run` and `make test`.
# Everything installs into a project-local .venv; nothing is installed globally.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: run test fuzz lint schema documents codegen migrate worker bench bench-media soak profile seed clean help

help:
	@echo "make run      start PostgreSQL, Redis, the API and the worker: web client on http://127.0.0.1:8000/app/, GraphiQL on http://127.0.0.1:8000/graphql"
	@echo "make test     run the test suite against real embedded PostgreSQL, Redis and S3 (moto server)"
	@echo "make fuzz     a long schema-driven fuzz run of /graphql (FUZZ_EXAMPLES=2000; make test runs a short one)"
	@echo "make lint     ruff and mypy"
	@echo "make schema   export the server's SDL to schema.graphql"
	@echo "make documents  web/app/documents.js and web/trusted-documents.json from web/graphql/*.graphql"
	@echo "make codegen  the TypeScript example's typed documents (GraphQL Code Generator; needs npm), then make documents"
	@echo "make bench    run the benchmarks (media, feed, like burst, user search); results in bench/results/"
	@echo "make soak     a mixed open-loop load against the whole stack for 10 minutes (SOAK_ARGS=\"--duration 120\")"
	@echo "make profile  where one feed page's time goes, stage by stage (docs/benchmarks.md)"
	@echo "make seed     after make run: demo users, follows and posts through the real API"

# Re-install only when pyproject.toml changes: the second run is instant.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(PY) run.py

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The fuzz tests of `make test` with a longer budget (tests/test_fuzz.py's docstring).
FUZZ_EXAMPLES ?= 2000
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/test_fuzz.py $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

schema: $(STAMP)
	$(PY) -m schema.export

# The web client's persisted documents and the server's default trusted-documents
# manifest (which also takes in the TypeScript example's persisted documents).
documents: $(STAMP)
	$(PY) -m schema.manifest --web

# Typed document nodes for examples/typescript from schema.graphql and web/graphql/.
TS_EXAMPLE := examples/typescript
$(TS_EXAMPLE)/node_modules/.package-lock.json: $(TS_EXAMPLE)/package-lock.json
	cd $(TS_EXAMPLE) && npm ci --no-audit --no-fund

codegen: $(STAMP) $(TS_EXAMPLE)/node_modules/.package-lock.json
	cd $(TS_EXAMPLE) && npm run --silent codegen
	$(MAKE) --no-print-directory documents

migrate: $(STAMP)
	$(PY) run.py --migrate-only

worker: $(STAMP)
	$(BIN)/arq workers.WorkerSettings

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

bench-media: $(BENCH_STAMP)
	$(PY) bench/media.py

bench: bench-media
	$(PY) -m bench.feed $(BENCH_ARGS)
	$(PY) -m bench.likes
	$(PY) -m bench.search

soak: $(BENCH_STAMP)
	$(PY) bench/soak.py $(SOAK_ARGS)

profile: $(BENCH_STAMP)
	$(PY) bench/profile_feed.py $(BENCH_ARGS)

seed: $(STAMP)
	$(PY) bench/seed.py $(SEED_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
