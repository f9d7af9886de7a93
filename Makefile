# Everything a fresh machine needs: `make demo` and `make test` create the virtualenv,
# install the pinned dependencies and run. Nothing here needs anything but python3 >= 3.11.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench lint fuzz clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (found %s)" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/payouts demo

test: install
	$(BIN)/pytest -n 2 -q

bench: install
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get install -y -q wrk >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null)); } || echo "wrk not installed: API read benchmarks fall back to httpx"
	$(BIN)/python -m benchmarks

fuzz: install
	$(BIN)/python -m benchmarks.fuzz_codec --frames 1000000
	$(BIN)/python -m benchmarks.fuzz_server --frames 1000000
	$(BIN)/python -m benchmarks.attack_jds --connections 2000
	$(BIN)/python -m benchmarks.fuzz_api --examples 100

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy payouts sv2 api

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
