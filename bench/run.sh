#!/usr/bin/env bash
# make bench: builds the baseline BPF object and runs vigil-bench as root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "bench: loading eBPF needs root" >&2
  exit 1
fi
command -v bpftrace >/dev/null || {
  echo "bench: installing bpftrace for the per-event-output comparison"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bpftrace >/dev/null
}
mkdir -p bench/out
arch=$(uname -m); [ "$arch" = x86_64 ] && tarch=x86 || tarch=arm64
clang -O2 -g -target bpf -D__TARGET_ARCH_$tarch -I/usr/include/$(uname -m)-linux-gnu \
  -c ebpf/empty.bpf.c -o bench/out/empty.bpf.o
cargo build --release -p vigil-bench -p vigil-sidecar --locked
VIGIL_ROOT=. target/release/vigil-bench
