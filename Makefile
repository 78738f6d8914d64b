# One-command set-up: every target below creates .venv and installs what it needs, idempotently.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint typecheck bench bench-peers clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The compiled trading core is rebuilt (by reinstalling) whenever its sources change.
CORE_SRC := setup.py $(wildcard envs/portfolio.py envs/broker.py envs/core.py envs/cursor.py envs/_fast.py envs/*.pxd)

# torch first, pinned: 2.13.0 is a CPU build; an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): $(PY) pyproject.toml $(CORE_SRC)
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev,live]"
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/slf demo

lint: setup
	$(BIN)/ruff check setup.py envs learning agents backtests experiments tests benchmarks
	$(BIN)/ruff format --check setup.py envs learning agents backtests experiments tests benchmarks

typecheck: setup
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest -q -p no:cacheprovider

$(VENV)/.bench-installed: $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,live,bench]"
	@touch $@

# The peer environments (gym-anytrading, gym-trading-env) get a virtual environment of their own:
# gym-trading-env pins ccxt==3.0.59, which would downgrade the project's ccxt (live trading needs 4.x).
# numpy, pandas and gymnasium are held at the project's versions so both sides run the same libraries.
# benchmarks/env_throughput.py runs each peer with $(PEERS)/bin/python.
PEERS      := .venv-peers
PEERS_PY   := $(PEERS)/bin/python
PEER_PKGS  := "gym-anytrading>=2.0" "gym-trading-env>=0.3.5"

$(PEERS)/.installed: $(STAMP)
	$(PYTHON) -m venv $(PEERS)
	$(PEERS_PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip freeze | grep -iE '^(numpy|pandas|gymnasium)==' > $(PEERS)/constraints.txt
	$(PEERS_PY) -m pip install --quiet -c $(PEERS)/constraints.txt $(PEER_PKGS)
	@touch $@

bench-peers: $(PEERS)/.installed

bench: $(VENV)/.bench-installed $(PEERS)/.installed
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) $(PEERS) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
