# aiosfu — every target sets up what it needs first.
PY       ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
HOST     ?= 127.0.0.1
PORT     ?= 8080
PYTEST_ARGS ?=
# Media tests run in a fresh network namespace that has only loopback, so no packet
# can leave the machine.
# Firefox gathers no ICE candidates at all without a default route, so the namespace's
# default route is loopback too.
LOOPBACK_ONLY := unshare --net sh -c 'ip link set lo up && ip route add default dev lo src 127.0.0.1 && exec "$$0" "$$@"'
# Interop peers (docs/interop.md): Firefox, GStreamer's webrtcbin driven from Debian's
# python3-gi (its RTSP server is the camera of tests/test_rtsp.py), and Node.js for
# protoo-client and puppeteer-core. Checked by package, since most of them install no
# command of their own.
INTEROP_PACKAGES := firefox-esr python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 \
	gir1.2-gst-plugins-bad-1.0 gstreamer1.0-tools gstreamer1.0-plugins-base \
	gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly \
	gstreamer1.0-libav gstreamer1.0-nice gir1.2-nice-0.1 \
	gir1.2-gst-rtsp-server-1.0
# The RTMP server that receives the composite worker's push in tests/test_composite.py.
COMPOSITE_PACKAGES := nginx libnginx-mod-rtmp

.PHONY: install system-deps run cluster test lint fuzz bench bench-callgrind bench-deps bench-storm clean proto

$(BIN)/aiosfu: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v ffmpeg >/dev/null 2>&1 || missing="$$missing ffmpeg"; \
	command -v turnserver >/dev/null 2>&1 || missing="$$missing coturn"; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v nft >/dev/null 2>&1 || missing="$$missing nftables"; \
	command -v unshare >/dev/null 2>&1 || missing="$$missing util-linux"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
	for pkg in $(INTEROP_PACKAGES) $(COMPOSITE_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "ok installed" || \
			missing="$$missing $$pkg"; \
	done; \
	command -v etcd >/dev/null 2>&1 || missing="$$missing etcd-server"; \
	command -v nats-server >/dev/null 2>&1 || missing="$$missing nats-server"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

# npm packages exactly as locked; puppeteer drives Debian's Firefox and never downloads one.
node_modules/.package-lock.json: package.json package-lock.json
	PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: system-deps $(BIN)/aiosfu node_modules/.package-lock.json

run: install
	$(BIN)/aiosfu serve --host $(HOST) --port $(PORT)

# etcd, NATS, Redis, two SFU nodes and two signal nodes on this machine (docs/cluster.md).
cluster: install
	$(BIN)/aiosfu cluster up --port $(PORT)

test: install
	$(BIN)/ruff check src tests bench fuzz
	$(BIN)/mypy
	$(LOOPBACK_ONLY) $(BIN)/pytest -q $(PYTEST_ARGS)

# At least a million inputs over every fuzz target (fuzz/); crashes are left as crash-*.
FUZZ_RUNS ?= 1000000
fuzz: install
	$(LOOPBACK_ONLY) $(BIN)/python -m fuzz all --runs $(FUZZ_RUNS)

lint: install
	$(BIN)/ruff check src tests bench fuzz
	$(BIN)/ruff format --check src tests bench fuzz
	$(BIN)/mypy

# The Janus baseline needs the Debian package; gcc builds its loopback shim and the
# callgrind client requests (valgrind's headers) at run time.
bench-deps: install
	@missing=""; \
	command -v janus >/dev/null 2>&1 || missing="$$missing janus"; \
	command -v gcc >/dev/null 2>&1 || missing="$$missing gcc"; \
	command -v valgrind >/dev/null 2>&1 || missing="$$missing valgrind"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
	$(BIN)/python -c 'import matplotlib' 2>/dev/null && [ -x $(BIN)/py-spy ] || \
		$(BIN)/pip install --quiet -e '.[test,bench]'

bench: bench-deps
	BENCH_FROM_MAKE=1 $(LOOPBACK_ONLY) $(BIN)/python -m bench --write
	BENCH_FROM_MAKE=1 $(LOOPBACK_ONLY) $(BIN)/python -m bench.callgrind --write
	$(LOOPBACK_ONLY) $(BIN)/python -m bench.storm --write
	$(LOOPBACK_ONLY) $(BIN)/python -m bench.connection_cost > bench/results/connection_cost.md
	$(LOOPBACK_ONLY) $(BIN)/python -m bench.flood --idle 500 --seconds 5 > bench/results/flood.json
	$(LOOPBACK_ONLY) $(BIN)/python -m bench.cluster --json bench/results/cluster.json
	$(LOOPBACK_ONLY) $(BIN)/python -m bench.congestion --write
	$(LOOPBACK_ONLY) $(BIN)/python -m bench.composite --json bench/results/composite.json

# Instructions per forwarded packet (valgrind), the figure that does not drift.
bench-callgrind: bench-deps
	BENCH_FROM_MAKE=1 $(LOOPBACK_ONLY) $(BIN)/python -m bench.callgrind --write

# Large rooms only: join storms and a subscribe storm (bench/storm.py, about 3 minutes).
bench-storm: bench-deps
	$(LOOPBACK_ONLY) $(BIN)/python -m bench.storm --write

# The cluster's gRPC service (docs/cluster.md): regenerate after editing sfu.proto.
proto: install
	$(BIN)/python -m grpc_tools.protoc -I src --python_out=src --grpc_python_out=src \
		--pyi_out=src src/aiosfu/cluster/proto/sfu.proto

clean:
	rm -rf $(VENV) node_modules test-artifacts .pytest_cache .mypy_cache
