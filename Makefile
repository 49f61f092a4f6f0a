# `make run`: set up and generate every target of the shipped example profile.
# `make test`: set up (Python packages; Debian packages when root) and run the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
CHECKOV_VENV ?= .venv-checkov
CHECKOV_VERSION := 3.3.30
PROFILE ?= profiles/aws-private-vpn.yaml
DEBIAN_PACKAGES := iptables nftables ipset iproute2 graphviz patch shellcheck chromium

.PHONY: run test setup tools bench format clean

run: setup
	$(VENV)/bin/rulegen plan $(PROFILE)
	$(VENV)/bin/rulegen generate $(PROFILE)

test: setup tools
	$(PY) -m black --check --quiet generator tests benchmarks scripts
	CHECKOV=$(CURDIR)/$(CHECKOV_VENV)/bin/checkov $(PY) -m pytest -q

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# Real consumers of the output: Debian's firewall tools (root only) and checkov,
# which needs a virtual environment of its own (it clashes with python-hcl2).
tools: $(CHECKOV_VENV)/.installed
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi; \
	fi

$(CHECKOV_VENV)/.installed:
	python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check checkov==$(CHECKOV_VERSION)
	touch $@

# Benchmarks (not tests): ratios against a bare import measured in the same run;
# Aerleon runs from its own venv for the side-by-side comparison.
bench: setup .venv-bench/.installed
	$(PY) benchmarks/plan.py
	$(PY) benchmarks/run.py

.venv-bench/.installed:
	python3 -m venv .venv-bench
	.venv-bench/bin/pip install --quiet --disable-pip-version-check aerleon==1.18.0
	touch $@

format: setup
	$(PY) -m black generator tests benchmarks scripts

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .venv-bench out/*/
