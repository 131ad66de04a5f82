# medtrail — developer entry points. Everything installs itself into .venv and node_modules.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run demo test lint format contracts bench bench-quick install node clean anvil swagger-ui

## run: serve medtrail on the embedded default (in-process chain, SQLite file, new log)
run: $(BIN)/.installed
	$(BIN)/medtrail serve --reset

## anvil: a local JSON-RPC node on 127.0.0.1:8545 that mines a block every second (a
## checkpoint needs blocks after its own to be confirmed; anvil alone mines only on a transaction)
anvil: node_modules/.installed
	node_modules/.bin/anvil --host 127.0.0.1 --port 8545 --block-time 1

## demo: tell medtrail's story on the embedded chain, step by step
demo: $(BIN)/.installed
	$(BIN)/medtrail demo

## test: the whole test suite (what CI runs), one worker process per core (pytest-xdist)
test: $(BIN)/.installed node_modules/.installed
	$(BIN)/pytest -n auto

## lint: ruff (lint + format check) and mypy --strict
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy ledger api wallets scripts benchmarks

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

## swagger-ui: refresh the vendored API-docs assets (api/static/swagger-ui) from npm
SWAGGER_UI_VERSION ?= 5.35.0
swagger-ui:
	rm -rf .swagger-ui && mkdir .swagger-ui
	cd .swagger-ui && npm pack --silent swagger-ui-dist@$(SWAGGER_UI_VERSION) && tar xzf swagger-ui-dist-*.tgz
	cd .swagger-ui/package && cp LICENSE NOTICE swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt \
	    swagger-ui.css favicon-32x32.png ../../api/static/swagger-ui/
	cd api/static/swagger-ui && sha256sum LICENSE NOTICE favicon-32x32.png swagger-ui-bundle.js \
	    swagger-ui-bundle.js.LICENSE.txt swagger-ui.css > SHA256SUMS
	rm -rf .swagger-ui

## noble-hashes: refresh the patient page's vendored Keccak-256 (api/static/patient/vendor) from npm
NOBLE_HASHES_VERSION ?= 1.8.0
NOBLE_HASHES_FILES = LICENSE _u64.js crypto.js sha3.js utils.js
.PHONY: noble-hashes
noble-hashes:
	rm -rf .noble-hashes && mkdir .noble-hashes
	cd .noble-hashes && npm pack --silent @noble/hashes@$(NOBLE_HASHES_VERSION) && tar xzf noble-hashes-*.tgz
	cd .noble-hashes/package && cp LICENSE esm/_u64.js esm/crypto.js esm/sha3.js esm/utils.js \
	    ../../api/static/patient/vendor/noble-hashes/
	cd api/static/patient/vendor/noble-hashes && sha256sum $(NOBLE_HASHES_FILES) > SHA256SUMS
	rm -rf .noble-hashes

install: $(BIN)/.installed
node: node_modules/.installed

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[service,dev]'
	touch $@

# `npm ci` refuses npm 11's own lock file (it omits anvil's binaries for other platforms), so
# install from the lock without rewriting it; package.json pins every direct version exactly.
node_modules/.installed: package.json package-lock.json
	npm install --no-audit --no-fund --no-save
	touch $@

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache *.egg-info
