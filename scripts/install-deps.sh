#!/usr/bin/env bash
# Installs what building and running vigil needs on Debian 12, skipping what
# is already there, and mounts the kernel filesystems the sensors use.
# Idempotent; needs root for apt and mounts. `--with-cargo-deny` (make deny)
# also installs cargo-deny, `--with-cargo-deb` (make package, make test)
# cargo-deb.
set -euo pipefail

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

have clang || need_apt+=(clang)
have llvm-strip || need_apt+=(llvm)
[ -f /usr/include/bpf/bpf_helpers.h ] || need_apt+=(libbpf-dev)
have bpftool || need_apt+=(bpftool)
have cc || need_apt+=(gcc)
have make || need_apt+=(make)
have pkg-config || need_apt+=(pkg-config)
have python3 || need_apt+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
have ip || need_apt+=(iproute2)
have curl || need_apt+=(curl ca-certificates)
pkg_installed linux-libc-dev || need_apt+=(linux-libc-dev)
# Packaging and its install test: dpkg-shlibdeps, systemd-analyze verify,
# setpriv (capability bounding sets as the units set them).
have dpkg-shlibdeps || need_apt+=(dpkg-dev)
have systemd-analyze || need_apt+=(systemd)
have setpriv || need_apt+=(util-linux)
# TPM attestation: the agent's TPM library (tss-esapi links libtss2-esys and
# loads the device and swtpm TCTIs), and for the tests software TPMs
# (swtpm, swtpm_setup with its local EK CA) and tpm2-tools (interop).
pkg_installed libtss2-dev || need_apt+=(libtss2-dev)
# The verifier's RSA fast path (the openssl crate links the system libcrypto).
pkg_installed libssl-dev || need_apt+=(libssl-dev)
pkg_installed libtss2-tcti-swtpm0 || need_apt+=(libtss2-tcti-swtpm0)
have swtpm || need_apt+=(swtpm)
have swtpm_setup || need_apt+=(swtpm-tools)
have tpm2_quote || need_apt+=(tpm2-tools)
# The dashboard's browser test: Debian's chromium driven through chromedriver.
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! have cargo && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! have cargo; then
  echo "install-deps: no Rust toolchain; installing rustup with Rust 1.95 (needs internet access)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal \
    --default-toolchain 1.95.0 --component clippy,rustfmt
fi

# cargo-deny, for `make deny` only (it passes --with-cargo-deny): a pinned
# release from crates.io, compiled here (several minutes on two cores), once.
if [ "${1:-}" = --with-cargo-deny ] && ! cargo deny --version >/dev/null 2>&1; then
  echo "install-deps: cargo install cargo-deny 0.20.2 (compiles for several minutes)"
  cargo install --locked --quiet cargo-deny --version 0.20.2
fi

# cargo-deb, for `make package` and the package install test in `make test`
# (they pass --with-cargo-deb): a pinned release, compiled here (about a
# minute and a half on two cores), once.
if [ "${1:-}" = --with-cargo-deb ] && ! cargo deb --version >/dev/null 2>&1; then
  echo "install-deps: cargo install cargo-deb 3.8.0 (compiles for a minute or two)"
  cargo install --locked --quiet cargo-deb --version 3.8.0
fi

# ONNX Runtime from its PyPI wheel: the real library for tests that load it
# (and, later, the sidecar). Into the repository, not the system.
ort_dir="$(cd "$(dirname "$0")/.." && pwd)/.vigil/deps/python"
if [ ! -d "$ort_dir/onnxruntime" ]; then
  echo "install-deps: onnxruntime 1.32.0 wheel into $ort_dir"
  extra=()
  python3 -m pip install --help 2>/dev/null | grep -q -- --break-system-packages && extra+=(--break-system-packages)
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "${extra[@]}" \
    --no-deps --target "$ort_dir" onnxruntime==1.32.0 numpy==2.4.6
fi

# tritonclient[grpc], the unchanged Triton client the inference sidecar is
# tested with (integration/tests/sidecar_*.rs), with its dependencies; numpy
# held at the onnxruntime wheel's version above, so either directory can come
# first on PYTHONPATH. Into the repository, not the system.
triton_dir="$(cd "$(dirname "$0")/.." && pwd)/.vigil/deps/triton"
if [ ! -d "$triton_dir/tritonclient" ]; then
  echo "install-deps: tritonclient[grpc] 2.73.0 into $triton_dir"
  extra=()
  python3 -m pip install --help 2>/dev/null | grep -q -- --break-system-packages && extra+=(--break-system-packages)
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "${extra[@]}" \
    --target "$triton_dir" 'tritonclient[grpc]==2.73.0' numpy==2.4.6
fi

# picklescan and modelscan, the offline pickle scanners the model
# inspector is compared with, side by side (integration/tests/model_scanners.rs,
# make bench); and cyclonedx-python-lib, whose strict validator checks the
# inventory's ML-BOM against the CycloneDX 1.6 schema
# (integration/tests/model_intelligence.rs). Into the repository, not the system.
scan_dir="$(cd "$(dirname "$0")/.." && pwd)/.vigil/deps/scanners"
# flatbuffers and tflite: the TFLite reader's files are read back by the
# package TensorFlow generates (modelinspect/src/tflite_tests.rs).
if [ ! -d "$scan_dir/modelscan" ] || [ ! -d "$scan_dir/picklescan" ] || [ ! -d "$scan_dir/cyclonedx" ] || [ ! -d "$scan_dir/tflite" ]; then
  echo "install-deps: picklescan 1.0.5, modelscan 0.8.8, cyclonedx-python-lib 11.12.0, tflite 2.18.0 into $scan_dir"
  extra=()
  python3 -m pip install --help 2>/dev/null | grep -q -- --break-system-packages && extra+=(--break-system-packages)
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "${extra[@]}" \
    --target "$scan_dir" picklescan==1.0.5 modelscan==0.8.8 'cyclonedx-python-lib[json-validation]==11.12.0' \
    flatbuffers==25.2.10 tflite==2.18.0
fi

# The SIEM clients' Python side: grpcio, grpcio-tools (stubs generated from
# proto/ at run time by examples/python-siem) and protobuf, and the
# opentelemetry-proto package whose generated OTLP stubs the test receiver
# of `vigilctl siem otlp` is built on (integration/python/otlp_receiver.py,
# integration/tests/siem_clients.rs, make bench). Pinned with their
# dependencies. Into the repository, not the system.
siem_dir="$(cd "$(dirname "$0")/.." && pwd)/.vigil/deps/siem"
if [ ! -d "$siem_dir/grpc_tools" ] || [ ! -d "$siem_dir/opentelemetry/proto" ]; then
  echo "install-deps: grpcio 1.85.4, grpcio-tools 1.85.4, protobuf 7.36.2, opentelemetry-proto 1.45.2 into $siem_dir"
  extra=()
  python3 -m pip install --help 2>/dev/null | grep -q -- --break-system-packages && extra+=(--break-system-packages)
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "${extra[@]}" \
    --target "$siem_dir" grpcio==1.85.4 grpcio-tools==1.85.4 protobuf==7.36.2 \
    opentelemetry-proto==1.45.2 setuptools==84.2.1 typing_extensions==4.16.0
fi

# The sensors need tracefs (the agent also mounts it itself) and bpffs.
if [ "$(id -u)" = 0 ]; then
  if [ ! -d /sys/kernel/tracing/events ] && [ ! -d /sys/kernel/debug/tracing/events ]; then
    mount -t tracefs -o nosuid,nodev,noexec tracefs /sys/kernel/tracing && echo "install-deps: mounted tracefs"
  fi
  if ! mountpoint -q /sys/fs/bpf 2>/dev/null; then
    mkdir -p /sys/fs/bpf && mount -t bpf -o nosuid,nodev,noexec bpf /sys/fs/bpf && echo "install-deps: mounted bpffs"
  fi
fi
[ -e /sys/kernel/btf/vmlinux ] || echo "install-deps: warning: no /sys/kernel/btf/vmlinux; eBPF CO-RE needs a kernel with BTF" >&2
exit 0
