# vigil: two commands on a fresh Debian 12 root machine: `make run`, `make test`.
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo

.PHONY: run test deps build lint deny bench soak package clean

## Install what is missing, build release binaries, run a control plane and a local agent.
run: deps build
	./scripts/run-local.sh

## Every test: unit, property, storage suite, eBPF and end-to-end (root needed for eBPF).
test: deps
	@./scripts/install-deps.sh --with-cargo-deb
	$(CARGO) build --workspace --bins --locked
	$(CARGO) test --workspace --locked

deps:
	@./scripts/install-deps.sh

build:
	$(CARGO) build --release --workspace --bins --locked

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## Supply chain (deny.toml): licenses, duplicate versions, sources; advisories
## when a RustSec database is on this machine (it cannot be fetched here).
deny:
	@./scripts/install-deps.sh --with-cargo-deny
	./scripts/check-supply-chain.sh

## Debian packages (cargo-deb) for the agent, the control plane and vigilctl, in target/debian/.
package: deps
	./scripts/package.sh

## Benchmarks: writes BENCHMARKS.md and bench/results.json (ratios against baselines from the same run).
bench: deps build
	./bench/run.sh

## Long fault runs: 100 rounds of nodes killed during writes and 100
## linearizability runs under kills and partitions (make test runs 10 and 5),
## and 2,000,000 mutated files per model parser (make test runs 20,000).
soak: deps
	$(CARGO) build --workspace --bins --locked
	VIGIL_CRASH_ROUNDS=100 $(CARGO) test --locked -p vigil-integration --test cluster_crash -- --nocapture
	VIGIL_LINEARIZABILITY_RUNS=100 $(CARGO) test --locked -p vigil-integration --test cluster_linearizability -- --nocapture
	VIGIL_FUZZ_ITERS=2000000 $(CARGO) test --locked -p vigil-modelinspect fuzz -- --nocapture

clean:
	$(CARGO) clean
	rm -rf .vigil
