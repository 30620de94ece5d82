# ledgermq: `make run` starts a local cluster, `make test` installs everything and tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= ./data

.PHONY: run test lint unit integration interop venv interop-venv clean bench bench-recovery sim proto

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m ledgermq quickstart --data $(DATA) --dledger 3

lint: $(STAMP)
	$(PY) -m ruff check src tests
	$(PY) -m ruff format --check src tests

# Real published clients, each in its own virtualenv (their import names collide).
interop-venv:
	bash tests/interop/setup_venv.sh
	bash tests/interop/setup_venv_py5.sh

# Regenerate the committed gRPC modules of src/ledgermq/proxy/protocol/*.proto.
proto: $(STAMP)
	$(PY) -m ledgermq.proxy.protocol.generate

# pytest exits 5 when it collected nothing: that is a failure here, not a pass.
test: $(STAMP) interop-venv lint
	$(PY) -m pytest -q -p no:cacheprovider tests

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

integration: $(STAMP)
	$(PY) -m pytest -q tests/integration

interop: $(STAMP) interop-venv
	$(PY) -m pytest -q tests/interop

clean:
	rm -rf $(VENV) .venv-interop-cpp .venv-interop-py5 build dist src/*.egg-info

# Benchmarks: peers measured in the same run (needs nats-server: apt-get install nats-server).
bench: $(STAMP)
	$(PY) bench/compare.py

bench-recovery: $(STAMP)
	$(PY) bench/recovery.py

# Long seed sweep of the Raft simulation (CI runs 500 seeds x 2000 steps).
sim: $(STAMP)
	LEDGERMQ_SIM_SEEDS=10000 $(PY) -m pytest -q tests/sim -k sweep

# DLedger against etcd 3.4 and PySyncObj in the same run (needs etcd: apt-get install etcd-server).
.PHONY: bench-dledger
bench-dledger: $(STAMP)
	$(PY) bench/dledger_compare.py

# ledgermq bench produce on a DLedger broker group against NATS JetStream R3 (needs nats-server).
.PHONY: bench-dledger-broker
bench-dledger-broker: $(STAMP)
	$(PY) bench/dledger_broker_compare.py

# SendMessage through the gRPC proxy (cluster and local mode) against direct remoting
# sends to the same broker, same run (issue 5: proxy >= 70% of direct).
.PHONY: bench-proxy
bench-proxy: $(STAMP)
	$(PY) bench/proxy_compare.py
