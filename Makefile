# The two commands: `make demo` runs the whole loop on generated traffic, `make test` runs the tests.
# Each creates .venv and installs what it needs on a fresh machine. Dev and CI use the pinned CPU stack.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install docs clean

$(STAMP): pyproject.toml constraints-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints-dev.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/curate demo $(DEMO_ARGS)

# The suite must not depend on the CPU it runs on, so the embedding backend is forced, never `auto`:
# pass 1, the whole suite on SQLite with OpenVINO int8; pass 2, the tests that embed with the default backend (marked
# `embeds`) again with ONNX Runtime int8; pass 3, every test that touches the store again on a real PostgreSQL, with
# ONNX. PostgreSQL is CURATE_TEST_DATABASE_URL if set, else a throwaway server from Debian's packages, started before
# pass 1 (the Ray tests there use it, on a local Ray cluster they start and stop themselves) and stopped after pass 3
# if this target started it; without either, the PostgreSQL pass and the Ray tests are skipped with a notice.
TEST_ENV := HF_HUB_OFFLINE=1
test: $(STAMP)
	@url="$${CURATE_TEST_DATABASE_URL:-$$(./scripts/test-postgres.sh)}"; \
	trap './scripts/test-postgres.sh --stop' EXIT; set -e; \
	export CURATE_TEST_DATABASE_URL="$$url"; \
	echo "pass 1: the whole suite, SQLite store, OpenVINO int8"; \
	$(TEST_ENV) CURATE_EMBED_BACKEND=openvino $(BIN)/python -m pytest -q $(PYTEST_ARGS); \
	echo "pass 2: the tests marked embeds, ONNX Runtime int8"; \
	$(TEST_ENV) CURATE_EMBED_BACKEND=onnx $(BIN)/python -m pytest -q -m embeds $(PYTEST_ARGS); \
	if [ -z "$$url" ]; then echo "PostgreSQL pass skipped: apt-get install -y postgresql to run it"; \
	else echo "pass 3: the store tests on PostgreSQL"; \
	  $(TEST_ENV) CURATE_EMBED_BACKEND=onnx CURATE_TEST_BACKEND=postgresql $(BIN)/python -m pytest -q $(PYTEST_ARGS); fi

# Lint with the rules in pyproject.toml ([tool.ruff]); it reports, it never reformats.
lint: $(STAMP)
	$(BIN)/ruff check .

docs: $(STAMP)
	$(BIN)/python -m curation.cli.docs > docs/cli.md

clean:
	rm -rf $(VENV) .curate
