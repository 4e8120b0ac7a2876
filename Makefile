# Two commands do everything on a fresh Debian 12 machine (as root):
#   make run   - set up, build, run the demo
#   make test  - set up, lint, run every test
# Both run scripts/setup first, which installs what is missing and reserves hugepages.

CARGO ?= cargo
SHELL := /bin/bash

.PHONY: all setup build run test lint fmt clean bench bench-core bench-agent fuzz

all: build

setup:
	@bash scripts/setup

build: setup
	$(CARGO) build --release --workspace --bins

run: build
	@bash scripts/run-demo

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	python3 scripts/import-cycles --self-test
	python3 scripts/import-cycles

# Process-level tests (tests/) run the workspace's binaries, which nextest does not build
# for other packages: build them first, in the same (debug) profile.
test: lint
	$(CARGO) build --workspace --bins
	$(CARGO) nextest run --workspace

# vrperf's standard set: every scenario through the real vrouter beside dpdk-testpmd and
# OVS-DPDK on the same vdevs, sweeps over frame size, flows and lcores, latency; writes
# perf/results/ (table, JSON, CSV, plots). About 7 minutes on 2 cores.
bench:
	@bash scripts/setup --bench
	$(CARGO) build --release --workspace --bins
	./target/release/vrperf standard --out perf/results

# Criterion benchmarks of the datapath core (no DPDK): ns per packet and packets/s.
bench-core: setup
	$(CARGO) bench -p vrouter --bench pipeline

# Configuration on its way to the vrouter: control-socket route update rates, then 10K
# interfaces, 1K service VIPs x 4 backends and 1K security groups through the agent, with
# the same interfaces programmed straight through the socket as the reference.
bench-agent: setup
	bash scripts/bench-agent

# Coverage-guided fuzzing of the wire parsers, the whole pipeline, the control-socket
# handler, kube-manager's manifest and configuration parsers, the cluster DNS's query
# handling and route values read from etcd (FUZZ_SECONDS each).
FUZZ_SECONDS ?= 60
fuzz: setup
	@command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz
	cd vrouter/fuzz && for t in wire pipeline control framing; do \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --sanitizer none $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done
	cd agent/fuzz && for t in manifest dns routes; do \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --sanitizer none $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
