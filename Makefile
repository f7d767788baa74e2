# Vigil: two commands on a fresh Debian / Ubuntu / Raspberry Pi OS machine.
#   make demo   Vigil end to end on its embedded defaults
#   make test   the whole suite
# Both run `make setup` first: system packages (Mosquitto, PostgreSQL, Node) where missing, a
# .venv with every Python dependency pinned, the MicroPython WebAssembly port from npm, and the
# micropython-lib modules the MicroPython unix port needs, and, where MicroPython's source
# tarball is present (MICROPYTHON_SRC), a 32-bit unix port with `bluetooth` and the firmware
# frozen in (.venv/mpy32/, rebuilt when a frozen source changes). Re-running it with nothing
# changed takes a moment.
# A gateway's machine takes `make setup-gateway` instead: what the gateway runs on, no test tools.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# MicroPython v1.28.0's source, checked against its sha256 (tools/vigil_tools/mpy32.py) and
# built with the build-micropython-unix.sh beside it.
MICROPYTHON_SRC ?= ../shared/vendor/micropython-src.tar.xz

.PHONY: setup setup-gateway mpy32 promtool test demo bench fuzz vectors clean

setup: $(STAMP) mpy32 promtool

$(STAMP): pyproject.toml requirements.lock package.json package-lock.json tests/mpy/mpy-requirements.txt \
		firmware/stubs-requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Vigil needs Python 3.11 or newer (found $$($(PYTHON) --version))"; exit 1; }
	@missing=""; \
	command -v mosquitto >/dev/null || missing="$$missing mosquitto mosquitto-clients"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
		missing="$$missing postgresql"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq $$missing; \
	fi
	@# Debian's chromium, for the responder console's browser tests (skipped without it)
	@command -v chromium >/dev/null || { echo "installing chromium (the console's browser tests)"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq chromium || \
		echo "chromium could not be installed: the console's browser tests will be skipped"; }
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e ".[test]"
	npm ci --no-audit --no-fund --loglevel=error
	$(BIN)/python tests/mpy/fetch_libs.py $(VENV)/mpy-lib
	$(BIN)/pip install -q --no-deps --upgrade --target $(VENV)/mpy-stubs -r firmware/stubs-requirements.txt
	@touch $(STAMP)
	@echo "setup done: the CLI is $(BIN)/vigil"

# The gateway's machine (gateway/README.md, "Deploying a site gateway"): Mosquitto and a .venv
# with what `vigil gateway` and `vigil provision` run on, each at its version in
# requirements.lock; none of the test tools (PostgreSQL, Node.js, Chromium, pytest, Playwright).
# `make setup` later on the same checkout adds them.
GATEWAY_STAMP := $(VENV)/.setup-gateway-done

setup-gateway: $(GATEWAY_STAMP)

$(GATEWAY_STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Vigil needs Python 3.11 or newer (found $$($(PYTHON) --version))"; exit 1; }
	@missing=""; \
	command -v mosquitto >/dev/null || missing="$$missing mosquitto mosquitto-clients"; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq $$missing; \
	fi
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c requirements.lock -e .
	@touch $(GATEWAY_STAMP)
	@echo "gateway setup done: the CLI is $(BIN)/vigil"

# Checked on every run (it hashes the frozen sources and returns at once when that build is
# cached): the stamp above does not see firmware changes.
mpy32: $(STAMP)
	@if $(BIN)/python -m vigil_tools.mpy32 needs-build --src "$(MICROPYTHON_SRC)"; then \
		missing=""; \
		{ command -v make && command -v gcc; } >/dev/null || missing="$$missing build-essential"; \
		command -v pkg-config >/dev/null || missing="$$missing pkg-config"; \
		command -v xz >/dev/null || missing="$$missing xz-utils"; \
		dpkg-query -W -f='$${Status}' gcc-multilib 2>/dev/null | grep -q 'ok installed' || \
			missing="$$missing gcc-multilib"; \
		if [ -n "$$missing" ]; then \
			echo "installing system packages:$$missing"; \
			$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq $$missing; \
		fi; \
	fi
	@$(BIN)/python -m vigil_tools.mpy32 build --src "$(MICROPYTHON_SRC)"

# promtool, for `promtool check rules` on the sample alert rules (tests/gateway/test_metrics.py):
# the one program taken out of Debian's prometheus package into .venv/bin (installing the
# package would also start a Prometheus server and pull in its web console's JavaScript).
# Checked on every run, as mpy32 is; where apt has no such package the test says it skipped.
promtool: $(STAMP)
	@command -v promtool >/dev/null || [ -x $(BIN)/promtool ] || { \
		echo "fetching promtool from the distribution's prometheus package"; \
		tmp=$$(mktemp -d) && cd $$tmp && \
		{ apt-get download -qq -o APT::Sandbox::User=root prometheus 2>/dev/null || \
			{ $(SUDO) apt-get update -qq && \
			apt-get download -qq -o APT::Sandbox::User=root prometheus; }; } && \
		dpkg-deb --fsys-tarfile prometheus_*.deb | tar -x -O ./usr/bin/promtool \
			> $(abspath $(BIN))/promtool.part && \
		chmod 755 $(abspath $(BIN))/promtool.part && \
		mv $(abspath $(BIN))/promtool.part $(abspath $(BIN))/promtool || { \
		rm -f $(abspath $(BIN))/promtool.part; \
		echo "promtool could not be fetched: the alert rules' promtool check will be skipped"; }; \
		rm -rf $$tmp; }

test: setup
	$(BIN)/python -m pytest

demo: setup
	$(BIN)/vigil demo

# Every benchmark (every `vigil bench` subcommand, at its defaults: tests/test_make_bench.py
# checks the list); each one's full output goes to .venv/bench-NAME.log, its key=value line
# here. One that fails does not stop the others: the target fails at the end, naming them.
BENCHES := protocol firmware taps ble ingest dc09 retention falls
bench: setup
	@failed=""; for b in $(BENCHES); do \
		if $(BIN)/vigil bench $$b > $(VENV)/bench-$$b.log 2>&1; then \
			echo "$$b: $$(tail -n 1 $(VENV)/bench-$$b.log)"; \
		else \
			tail -n 5 $(VENV)/bench-$$b.log; echo "bench $$b failed"; failed="$$failed $$b"; \
		fi; \
	done; \
	[ -z "$$failed" ] || { echo "benchmarks that failed:$$failed"; exit 1; }

# A long fuzz run of the decoder (CI runs a bounded one inside `make test`).
fuzz: setup
	VIGIL_FUZZ_EXAMPLES=200000 $(BIN)/python -m pytest tests/protocol/test_properties.py -q

# Regenerate protocol/vectors.json after a deliberate protocol change.
vectors: setup
	$(BIN)/python tests/protocol/make_vectors.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .hypothesis
