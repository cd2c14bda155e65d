# shopgate — everything installs from nothing: pip into .venv, apt for system tools.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PACKAGES_RUN := haproxy
APT_PACKAGES_TEST := haproxy chromium wrk docker.io debootstrap bind9-dnsutils

.PHONY: up demo test bench install system-run system-test engine-up engine-down compose-demo compose-ha-demo clean

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP) system-run

# apt installs only what is missing; without root it says what to install and stops.
define apt_install
	@missing=""; for pkg in $(1); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "shopgate needs these Debian packages:$$missing — run: sudo apt-get install -y$$missing" >&2; exit 1; fi; \
	  echo "installing:$$missing"; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
endef

system-run:
	$(call apt_install,$(APT_PACKAGES_RUN))

system-test:
	$(call apt_install,$(APT_PACKAGES_TEST))

up: install
	$(PY) -m shopgate up

demo: install
	$(PY) -m shopgate demo --chart artifacts/demo.png

test: $(STAMP) system-test
	$(PY) -m pytest

# A private Docker engine (state in .engine/, stopped by its pid) and the compose stack on it.
engine-up: $(STAMP) system-test
	@compose/engine.sh up

engine-down:
	@compose/engine.sh down

compose-demo: $(STAMP) system-test
	compose/scale-demo.sh

# Two gateways behind the L4 balancer: graceful stop, controller SIGKILL, container SIGKILL under load.
compose-ha-demo: $(STAMP) system-test
	compose/ha-demo.sh

bench: install
	@for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .state artifacts .pytest_cache
