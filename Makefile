# sensing-edge: `make demo` runs the whole system on embedded defaults; `make test` runs every test.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | md5sum | cut -c1-12)
UV_VERSION := 0.13.9
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-fast bench lint lock system-deps venv clean

# Every dependency, direct and transitive, at the version and hashes in requirements.lock; then the
# project itself (no dependency resolution, no build isolation: its build backend is in the lock too).
$(STAMP): pyproject.toml $(LOCK)
	@command -v $(PY) >/dev/null || { echo "need $(PY) (Python 3.11)"; exit 1; }
	@[ -x $(BIN)/python ] || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

# Re-resolve requirements.lock from pyproject.toml: `make lock` after editing pyproject.toml (pins kept
# where they still fit), `make lock PACKAGE=numpy` upgrades that package, `make lock UPGRADE=1` every
# package. Then `make test`, and commit both files.
lock:
	@[ -x .venv-lock/bin/uv ] || { $(PY) -m venv .venv-lock && .venv-lock/bin/python -m pip install -q uv==$(UV_VERSION); }
	printf 'setuptools>=68\nwheel\n' | .venv-lock/bin/uv pip compile pyproject.toml - --extra test --universal \
	  --python-version 3.11 --generate-hashes -o $(LOCK) \
	  $(if $(PACKAGE),--upgrade-package $(PACKAGE)) $(if $(UPGRADE),--upgrade)

# Mosquitto, InfluxDB 1.x, mbpoll, HAProxy (the JT/T 808 scale-out test), Chromium, a CJK font (dashboard
# screenshots) and faketime (the demo run at a later date: tests/e2e/test_demo.py) from Debian, only when missing.
system-deps:
	@missing=""; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto mosquitto-clients"; \
	command -v influxd >/dev/null || missing="$$missing influxdb influxdb-client"; \
	command -v mbpoll >/dev/null || missing="$$missing mbpoll"; \
	command -v chromium >/dev/null || missing="$$missing chromium chromium-driver"; \
	[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || missing="$$missing fonts-wqy-microhei"; \
	command -v faketime >/dev/null || missing="$$missing faketime"; \
	command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing="$$missing haproxy"; \
	if [ -n "$$missing" ]; then \
	  echo "installing from Debian:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

demo: $(STAMP)
	$(BIN)/edge demo

# The whole suite. Exit code 5 (no test collected) fails like any other failure.
test: system-deps $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc = 5 ]; then echo "pytest collected no test: failing loudly"; fi; exit $$rc

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: system-deps $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/python -m pip install -q ruff
	$(BIN)/ruff check edge collector analytics api simulators tests bench

clean:
	rm -rf $(VENV) .venv-lock var build *.egg-info .pytest_cache
