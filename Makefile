# One command to try it, one to test it:
#   make demo   install what is missing, build site/, serve it on http://127.0.0.1:8000
#   make test   install what is missing, build site/ and the test build, run every test
#               (CPython and browser)
#   make lint   ruff (lint; format on py/durably), mypy --strict, Biome and tsc on the JS

PYTHON ?= python3
PORT ?= 8000
# apt-get needs root; elsewhere go through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint build test-site serve deps python-deps lint-deps chromium postgresql clean

demo: build
	$(PYTHON) scripts/serve.py --port $(PORT)

# The PostgreSQL and browser-bench tests fail rather than skip when deps could not install
# what they need.
test: deps build test-site
	DURABLY_REQUIRE_POSTGRES=1 DURABLY_REQUIRE_BROWSER=1 $(PYTHON) -m pytest

# The same checks as .pre-commit-config.yaml. Python: ruff everywhere (the package's rules
# in full, real errors only in tests, bench, scripts and web), ruff format and mypy --strict
# on py/durably. JS: Biome's linter (its formatter is off: the JS keeps its own layout),
# and tsc on the files that start with // @ts-check.
lint: lint-deps node_modules/.package-lock.json
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check py/durably
	$(PYTHON) -m mypy
	npx --no-install biome lint
	npx --no-install tsc -p tsconfig.json

lint-deps:
	@$(PYTHON) -c "import ruff, mypy" 2>/dev/null || $(PYTHON) -m pip install -e '.[lint]'

# The production site (what is deployed): no test page. The same command a user runs in their
# own project (docs/site.md), with this repository's [tool.durably.site] (the demo).
build: node_modules/.package-lock.json
	PYTHONPATH=py $(PYTHON) -m durably site build

# The tests' and benchmarks' build: the same site plus test.html, in .cache/test-site.
test-site: node_modules/.package-lock.json
	PYTHONPATH=py $(PYTHON) -m durably site build --test-page --out .cache/test-site

serve:
	$(PYTHON) scripts/serve.py --port $(PORT)

deps: python-deps node_modules/.package-lock.json bench/web/node_modules/.package-lock.json chromium postgresql

# Re-run when the lock file changes; npm ci gives exactly the committed versions.
node_modules/.package-lock.json: package-lock.json
	npm ci --no-audit --no-fund

# The browser benchmarks' contenders (@coji/durably, sqlocal) live apart from the site's
# packages; the bench smoke test runs them.
bench/web/node_modules/.package-lock.json: bench/web/package-lock.json
	cd bench/web && npm ci --ignore-scripts --no-audit --no-fund

python-deps:
	@$(PYTHON) -c "import durably, pytest, playwright, pytest_playwright, hypothesis, dbos, huey, psycopg" 2>/dev/null \
		|| $(PYTHON) -m pip install -e '.[test,bench,postgres]'

# Debian's Chromium: Playwright's own browser download cannot work on these machines.
chromium:
	@[ -x /usr/bin/chromium ] || { $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y chromium; }

# Debian's PostgreSQL server programs (initdb, pg_ctl): the tests start a throwaway cluster
# of their own on 127.0.0.1 and remove it afterwards (tests/pg_fixtures.py).
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y postgresql; }

clean:
	rm -rf site .cache
