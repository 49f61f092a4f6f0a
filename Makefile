# `make run`: set up rulegen alone (no test tools) and generate the example profile.
# `make test`: set up the test tools too (Python packages; Debian packages when root)
# and run every test (what CI runs).
# `make check`: the fast tier for the inner loop: the tests that need nothing beyond
# Python (tests/conftest.py leaves out the tiers marked in pyproject.toml).
VENV ?= .venv
PY := $(VENV)/bin/python
CHECKOV_VENV ?= .venv-checkov
CHECKOV_VERSION := 3.3.30
PROFILE ?= profiles/aws-private-vpn.yaml
# pytest-xdist workers (one per core); the slow tiers are handed out first and each
# module whose fixtures build something once (the wheel, Terraform) stays on one worker.
WORKERS ?= auto
PYTEST := $(PY) -m pytest -q -n $(WORKERS) --dist loadgroup
BLACK_CHECK := $(PY) -m black --check --quiet generator tests benchmarks scripts setup.py

# Debian packages the tests use, each with the reason (printed when installed).
DEBIAN_PACKAGES := iptables ipset iproute2 nftables shellcheck graphviz patch chromium \
  docker.io busybox-static
WHY_iptables := iptables-restore loads the iptables output in test network namespaces
WHY_ipset := ipset loads the iptables output's address sets
WHY_iproute2 := ip builds the network namespaces of the tests and of rulegen verify
WHY_nftables := nft checks and loads the nftables output
WHY_shellcheck := shellcheck lints the generated shell scripts
WHY_graphviz := dot lays out the report's diagram and reads plan --format dot back
WHY_patch := patch applies diff --files output to prove it is a real diff
WHY_chromium := the report tests open every report in headless Chromium
WHY_docker.io := a real Docker daemon runs next to the Nomad clients' rules in a test namespace
WHY_busybox-static := a static busybox is the test containers' whole image (nothing is pulled)

.PHONY: run test check setup runtime tools debian-packages bench format clean

run: runtime
	$(VENV)/bin/rulegen plan $(PROFILE)
	$(VENV)/bin/rulegen generate $(PROFILE)

test: setup tools
	$(BLACK_CHECK)
	CHECKOV=$(abspath $(CHECKOV_VENV))/bin/checkov $(PYTEST)

check: setup
	$(BLACK_CHECK)
	$(PYTEST) --tier check

# The runtime only: rulegen and its few dependencies, nothing the tests need.
runtime: $(VENV)/.runtime

$(VENV)/.runtime: pyproject.toml setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e .
	touch $@

# The runtime and the pinned test tools (what `make test` and development need).
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@ $(VENV)/.runtime

debian-packages:
	@$(foreach p,$(DEBIAN_PACKAGES),echo "$(p): $(WHY_$(p))";)

# Real consumers of the output: Debian's tools (installed when root; otherwise the
# tests that need them skip, saying why) and checkov, in a virtual environment of its
# own (it clashes with python-hcl2).
tools: $(CHECKOV_VENV)/.installed
	@missing=""; \
	for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "Not root: not installing the Debian packages$$missing (the tests that need them skip)"; \
	  exit 0; \
	fi; \
	echo "Installing Debian packages the tests use:"; \
	$(foreach p,$(DEBIAN_PACKAGES),case " $$missing " in (*" $(p) "*) echo "  $(p): $(WHY_$(p))";; esac;) \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null

$(CHECKOV_VENV)/.installed:
	python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check checkov==$(CHECKOV_VERSION)
	touch $@

# Benchmarks (not tests): ratios against a bare import measured in the same run;
# Aerleon runs from its own venv for the side-by-side comparison.
bench: setup .venv-bench/.installed
	rm -f out/bench/plan.json out/bench/run.json out/bench/stages.json
	$(PY) benchmarks/plan.py --json out/bench/plan.json
	$(PY) benchmarks/run.py --json out/bench/run.json
	$(PY) benchmarks/report.py
	$(PY) benchmarks/bench_audit.py
	$(PY) benchmarks/stages.py --linearity --json out/bench/stages.json
	$(PY) benchmarks/site_ports.py
	$(PY) benchmarks/goals.py out/bench

.venv-bench/.installed:
	python3 -m venv .venv-bench
	.venv-bench/bin/pip install --quiet --disable-pip-version-check aerleon==1.18.0
	touch $@

format: setup
	$(PY) -m black generator tests benchmarks scripts setup.py

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .venv-bench out/*/
