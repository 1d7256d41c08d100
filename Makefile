# One entry point per chore; CI (.ci/run) calls `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
TESTBED := testbed/pyproject.toml
SYSPKG_STAMP := $(VENV)/.syspkgs

.PHONY: test lint demo bench mutation fuzz proto clean install syspkgs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Everything: the product with its test tools, and the test bed (testbed/: stand-ins,
# process harness, demo), which `pip install kiam` and the image never get.
$(STAMP): pyproject.toml $(TESTBED) | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]' -e ./testbed
	touch $(STAMP) $(DEMO_STAMP)

# What the demo and the benchmarks run: the product and the test bed, no test tools.
$(DEMO_STAMP): pyproject.toml $(TESTBED) | $(BIN)/python
	$(BIN)/pip install --quiet -e . -e ./testbed
	touch $(DEMO_STAMP)

install: $(STAMP)

# The end-to-end suite needs iproute2 and iptables, the kubectl tests a real kubectl
# (Debian's kubernetes-client), the replica benchmark wrk, the test bed's children
# setpriv (util-linux; essential in Debian, not in every slim image); install them from
# Debian when we are root and they are missing. As a normal user those tests skip and
# say why (setpriv: the test bed says so).
syspkgs:
	@if [ "$$(id -u)" = "0" ]; then \
	  missing=""; \
	  command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	  command -v iptables >/dev/null 2>&1 || missing="$$missing iptables"; \
	  command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	  command -v setpriv >/dev/null 2>&1 || missing="$$missing util-linux"; \
	  command -v kubectl >/dev/null 2>&1 || missing="$$missing kubernetes-client"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check kiam testbed tests bench tools
	$(BIN)/mypy

test: $(STAMP) syspkgs lint
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

demo: $(DEMO_STAMP) syspkgs
	$(BIN)/kiam demo $(DEMO_ARGS)

bench: $(DEMO_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# mutmut over the modules that decide who gets which role (docs/policy.md)
mutation: $(STAMP)
	$(BIN)/python -m tools.mutation $(MUTATION_ARGS)

# the randomised tests (tests/fuzzing.py) with FUZZ_SCALE times the examples of make test
# and a fresh seed for the hostile requests; about ten minutes at the default scale
FUZZ_SCALE ?= 20
fuzz: $(STAMP)
	KIAM_FUZZ_SCALE=$(FUZZ_SCALE) $(BIN)/pytest -q -p no:cacheprovider -m fuzz -s \
	  -o timeout=3600 $(PYTEST_ARGS)

proto: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m grpc_tools.protoc -I . \
	  --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. kiam/wire/kiam.proto

clean:
	rm -rf $(VENV) build *.egg-info testbed/*.egg-info .mypy_cache .ruff_cache
