#!/usr/bin/env bash
# deny_gpu against a real NVIDIA driver (issue #19). For a machine with an
# NVIDIA GPU, as root, with cgroup v2 and eBPF:
#
#   scripts/gpu-deny-check.sh                 # builds release binaries first
#   VIGIL_BIN_DIR=DIR scripts/gpu-deny-check.sh
#
# A process (an interpreter copied under the name `deny-gpu-me`) opens
# /dev/nvidia0 and creates a CUDA context holding 64 MiB BEFORE the rule
# acts; then it opens a model file, which a signed policy answers with
# deny_gpu. Checks: the agent reports the action and says how many GPU
# descriptors were already open (a cgroup device program cannot revoke
# them); a NEW open of /dev/nvidia0 by the process is refused (EPERM); the
# descriptors it already had still work (a second allocation succeeds).
# Writes its report to stdout and bench/out/gpu-deny-check.txt; exit 0 when
# every check holds.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "gpu-deny-check: run as root" >&2; exit 1; }
[ -e /dev/nvidia0 ] || { echo "gpu-deny-check: no /dev/nvidia0" >&2; exit 1; }
if [ -n "${VIGIL_BIN_DIR:-}" ]; then
  bin=$VIGIL_BIN_DIR
else
  cargo build --release --locked -p vigil-agent -p vigil-controlplane -p vigilctl >&2
  bin=target/release
fi
work=$(mktemp -d)
out=bench/out/gpu-deny-check.txt
mkdir -p bench/out
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port=$((20000 + RANDOM % 20000))
ctl() { "$bin/vigilctl" --endpoint "http://127.0.0.1:$port" "$@"; }

mkdir -p "$work/policy"
cat >"$work/policy/rules.yaml" <<'YAML'
id: gpu-check.deny-gpu
description: this process loses the GPU when it loads a model
severity: high
when: [model_file]
condition: process.name == "deny-gpu-me"
action: deny_gpu
YAML
public=$(ctl policy keygen --out "$work/admin.key")
ctl policy sign "$work/policy" --key "$work/admin.key" --version 1 --out "$work/bundle.json" >/dev/null

"$bin/vigil-controlplane" --listen "127.0.0.1:$port" --data-dir "$work/cp" \
  >"$work/cp.out" 2>"$work/cp.log" &
pids+=($!)
for _ in $(seq 100); do grep -q ready "$work/cp.out" 2>/dev/null && break; sleep 0.1; done
"$bin/vigil-agent" --control-plane "http://127.0.0.1:$port" --data-dir "$work/agent" \
  --agent-id gpu-deny-check --trusted-policy-key "$public" --policy-bundle "$work/bundle.json" \
  >"$work/agent.out" 2>"$work/agent.log" &
pids+=($!)
for _ in $(seq 300); do grep -q ready "$work/agent.out" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$work/agent.out" || { cat "$work/agent.log" >&2; exit 1; }

python=$(readlink -f "$(command -v python3)")
cp "$python" "$work/deny-gpu-me"
touch "$work/model.onnx"
"$work/deny-gpu-me" - "$work/model.onnx" >"$work/workload.out" 2>&1 <<'PY' &
import ctypes, os, sys, time
cuda = ctypes.CDLL("libcuda.so.1")
def ok(r, what):
    if r != 0:
        print(f"{what} failed: CUresult {r}", flush=True); sys.exit(1)
held = os.open("/dev/nvidia0", os.O_RDWR)
ok(cuda.cuInit(0), "cuInit")
dev = ctypes.c_int()
ok(cuda.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
ctx = ctypes.c_void_p()
ok(cuda.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev), "cuCtxCreate")
ptr = ctypes.c_uint64()
ok(cuda.cuMemAlloc_v2(ctypes.byref(ptr), 64 << 20), "cuMemAlloc")
print("holding the GPU before the rule", flush=True)
open(sys.argv[1], "rb").close()          # the model open the rule answers
time.sleep(3)                             # the agent acts
try:
    fd = os.open("/dev/nvidia0", os.O_RDWR)
    os.close(fd)
    print("new open: allowed", flush=True)
except OSError as e:
    print(f"new open: refused errno {e.errno}", flush=True)
r = cuda.cuMemAlloc_v2(ctypes.byref(ptr), 64 << 20)
print(f"allocation on the context opened before: CUresult {r}", flush=True)
time.sleep(60)
PY
workload=$!
pids+=($workload)
for _ in $(seq 150); do grep -q "allocation on the context" "$work/workload.out" 2>/dev/null && break; sleep 0.1; done
sleep 1
alerts=$(ctl alerts --json)
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "gpu: $(nvidia-smi --query-gpu=name,uuid,driver_version --format=csv,noheader | head -1)"
  echo "kernel: $(uname -r)"
  echo "workload pid: $workload"
  echo "--- workload"
  cat "$work/workload.out"
  echo "--- alerts for the workload"
  grep "\"pid\":$workload" <<<"$alerts" | grep -o '"summary":"[^"]*"' || true
} | tee "$out"
fail() { echo "gpu-deny-check FAILED: $*" | tee -a "$out" >&2; tail -20 "$work/agent.log" >&2; exit 1; }
action=$(grep "\"pid\":$workload" <<<"$alerts" | grep -o '"summary":"action deny_gpu[^"]*"' || true)
[ -n "$action" ] || fail "no deny_gpu action reported for pid $workload"
grep -q "already open" <<<"$action" || fail "the action does not say which GPU descriptors were already open: $action"
grep -q "new open: refused errno 1$" "$work/workload.out" || fail "a new open of /dev/nvidia0 was not refused with EPERM"
grep -q "allocation on the context opened before: CUresult 0$" "$work/workload.out" \
  || fail "the descriptors opened before the rule stopped working (expected: they stay usable, and the action says so)"
echo "gpu-deny-check passed" | tee -a "$out"
