# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: setup run test lint format test-deps bench clean

setup: $(VENV)/.installed web/node_modules/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

web/node_modules/.installed: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: setup
	@echo "Open http://$(HOST):$(PORT)/ (in-memory rooms, history in ./data, open auth)"
	$(PY) -m signaling --host $(HOST) --port $(PORT)

# What the tests need beyond `setup`: Debian's Chromium for the browser tests, a
# redis-server binary (the tests start their own throwaway servers on free ports),
# PostgreSQL's initdb/pg_ctl (used when no PostgreSQL answers on 127.0.0.1:5432),
# iproute2 (`ip`, `tc`) and nftables (`nft`) for the shaped network namespaces of
# devtools/netns, and coturn (`turnserver`) for the TURN tests.
test-deps:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v redis-server >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium redis-server >/dev/null; \
	fi
	@if ! command -v ip >/dev/null 2>&1 || ! command -v tc >/dev/null 2>&1 || ! command -v nft >/dev/null 2>&1 || ! command -v turnserver >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 nftables coturn >/dev/null; \
	fi
	@if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	fi
	@if [ -f benchmarks/reference/package.json ] && [ ! -d benchmarks/reference/node_modules ]; then \
		cd benchmarks/reference && npm ci --no-audit --no-fund --loglevel=error; \
	fi

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	cd web && npx --no-install tsc -p jsconfig.json

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: setup test-deps lint
	$(PY) -m pytest -q

bench: setup test-deps
	$(PY) -m benchmarks.fanout --subscribers 1,2,4,8 --seconds 8 --json benchmarks/results/fanout.json --plot benchmarks/results/fanout.png
	$(PY) -m benchmarks.signaling --clients 100,400,1000 --seconds 10 --json benchmarks/results/signaling.json --plot benchmarks/results/signaling.png --markdown benchmarks/results/signaling.md
	$(PY) -m benchmarks.signaling --load chat --clients 100,400 --rate 2 --seconds 10 --rounds 3 --json benchmarks/results/chat.json --plot benchmarks/results/chat.png --markdown benchmarks/results/chat.md
	$(PY) -m benchmarks.mesh_vs_sfu --participants 2,3,4,5 --seconds 5 --json benchmarks/results/mesh_vs_sfu.json --plot benchmarks/results/mesh_vs_sfu.png --markdown benchmarks/results/mesh_vs_sfu.md
	$(PY) -m benchmarks.room --participants 4,8,12 --rounds 1 --seconds 5 --json benchmarks/results/room.json --plot benchmarks/results/room.png
	# the CPU cap needs a writable cgroup (root): without one this line fails and the rest stands
	-$(PY) -m benchmarks.room --participants 6 --rooms 3,6 --workers 1,2 --modes forward --rounds 1 --seconds 5 --worker-cpu 0.2 --json benchmarks/results/room-workers.json

clean:
	rm -rf $(VENV) web/node_modules benchmarks/reference/node_modules .mypy_cache .ruff_cache .pytest_cache
