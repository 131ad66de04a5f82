# medtrail — developer entry points. Everything installs itself into .venv and node_modules.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run demo test lint format contracts bench bench-quick install node clean

## run: serve medtrail on the embedded default (in-process chain, SQLite file, new log)
run: $(BIN)/.installed
	$(BIN)/medtrail serve --reset

## demo: tell medtrail's story on the embedded chain, step by step
demo: $(BIN)/.installed
	$(BIN)/medtrail demo

## test: the whole test suite (what CI runs)
test: $(BIN)/.installed node_modules/.installed
	$(BIN)/pytest

## lint: ruff (lint + format check) and mypy --strict
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy ledger api wallets scripts

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## contracts: recompile the Solidity sources into ledger/artifacts (needs Node)
contracts: node_modules/.installed
	node contracts/build.mjs

## bench: every benchmark at full size (< 15 min on 2 cores); records docs/benchmarks.md
bench: $(BIN)/.installed node_modules/.installed
	$(BIN)/python -m benchmarks -o docs/benchmarks.md

## bench-quick: every benchmark at small sizes (a few minutes, for CI); prints the tables
.PHONY: bench-quick
bench-quick: $(BIN)/.installed node_modules/.installed
	$(BIN)/python -m benchmarks --quick

install: $(BIN)/.installed
node: node_modules/.installed

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# `npm ci` refuses npm 11's own lock file (it omits anvil's binaries for other platforms), so
# install from the lock without rewriting it; package.json pins every direct version exactly.
node_modules/.installed: package.json package-lock.json
	npm install --no-audit --no-fund --no-save
	touch $@

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache *.egg-info
