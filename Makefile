# Everything a fresh machine needs: `make demo` and `make test` create the virtualenv,
# install the pinned dependencies and run. Nothing here needs anything but python3 >= 3.11.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# The miner and operator pages draw their charts with uPlot, taken at build time from the npm
# registry (npm's configured registry; pinned version, tarball checked against its SHA-256) into
# api/static/vendor/ (gitignored, shipped as package data). Nothing is fetched at run time.
UPLOT_VERSION := 1.6.32
UPLOT_SHA256  := 4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d
VENDOR        := api/static/vendor
UPLOT_STAMP   := $(VENDOR)/.uplot-$(UPLOT_VERSION)

.PHONY: install demo test bench lint fuzz clean vendor browser

$(UPLOT_STAMP):
	@command -v npm >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get install -y -q npm >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q npm >/dev/null)); } || { echo "npm is needed once to vendor uPlot (charts)"; exit 1; }
	@tmp=$$(mktemp -d) && (cd $$tmp && npm pack --silent uplot@$(UPLOT_VERSION) >/dev/null) \
	  && echo "$(UPLOT_SHA256)  $$tmp/uplot-$(UPLOT_VERSION).tgz" | sha256sum -c --quiet - \
	  && mkdir -p $(VENDOR) && rm -f $(VENDOR)/.uplot-* \
	  && tar -xzf $$tmp/uplot-$(UPLOT_VERSION).tgz -C $$tmp package/dist/uPlot.iife.min.js package/dist/uPlot.min.css package/LICENSE \
	  && cp $$tmp/package/dist/uPlot.iife.min.js $$tmp/package/dist/uPlot.min.css $(VENDOR)/ \
	  && cp $$tmp/package/LICENSE $(VENDOR)/uPlot.LICENSE && rm -rf $$tmp && touch $@

vendor: $(UPLOT_STAMP)

# Debian's chromium and chromedriver for the browser tests (tests/browser), installed when
# missing (root only; quiet; nothing happens when both are there).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null)); } || echo "chromium/chromedriver not installed: browser tests skip (outside CI)"

$(STAMP): pyproject.toml $(UPLOT_STAMP)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (found %s)" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/payouts demo

test: install browser
	$(BIN)/pytest -n 2 -q

bench: install
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get install -y -q wrk >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null)); } || echo "wrk not installed: API read benchmarks fall back to httpx"
	$(BIN)/python -m benchmarks

fuzz: install
	$(BIN)/python -m benchmarks.fuzz_codec --frames 1000000
	$(BIN)/python -m benchmarks.fuzz_server --frames 1000000
	$(BIN)/python -m benchmarks.fuzz_mining --frames 100000
	$(BIN)/python -m benchmarks.attack_jds --connections 2000
	$(BIN)/python -m benchmarks.fuzz_api --examples 100
	$(BIN)/python -m benchmarks.crash_serve --kills 5 --rounds 2

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy payouts sv2 api

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(VENDOR)
