# aiosfu — every target sets up what it needs first.
PY       ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
HOST     ?= 127.0.0.1
PORT     ?= 8080
PYTEST_ARGS ?=
# Media tests run in a fresh network namespace that has only loopback, so no packet
# can leave the machine.
LOOPBACK_ONLY := unshare --net sh -c 'ip link set lo up && exec "$$0" "$$@"'

.PHONY: install system-deps run test lint bench bench-deps clean

$(BIN)/aiosfu: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v ffmpeg >/dev/null 2>&1 || missing="$$missing ffmpeg"; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v unshare >/dev/null 2>&1 || missing="$$missing util-linux"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

install: system-deps $(BIN)/aiosfu

run: install
	$(BIN)/aiosfu serve --host $(HOST) --port $(PORT)

test: install
	$(BIN)/ruff check src tests bench
	$(LOOPBACK_ONLY) $(BIN)/pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

# The Janus baseline needs the Debian package; gcc builds its loopback shim at run time.
bench-deps: install
	@missing=""; \
	command -v janus >/dev/null 2>&1 || missing="$$missing janus"; \
	command -v gcc >/dev/null 2>&1 || missing="$$missing gcc"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
	$(BIN)/python -c 'import matplotlib' 2>/dev/null && [ -x $(BIN)/py-spy ] || \
		$(BIN)/pip install --quiet -e '.[test,bench]'

bench: bench-deps
	BENCH_FROM_MAKE=1 $(LOOPBACK_ONLY) $(BIN)/python -m bench --write
	$(LOOPBACK_ONLY) $(BIN)/python -m bench.congestion --write

clean:
	rm -rf $(VENV) test-artifacts .pytest_cache
