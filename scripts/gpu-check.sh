#!/usr/bin/env bash
# The GPU checks of the test suite, against a real NVIDIA driver. For a
# machine with an NVIDIA GPU (run as root, after `make deps`):
#
#   scripts/gpu-check.sh            # writes its report to stdout and bench/out/gpu-check.txt
#   VIGIL_BIN_DIR=DIR scripts/gpu-check.sh   # with binaries built elsewhere (no cargo needed)
#
# It starts a control plane and an agent that loads the real
# libnvidia-ml.so.1, then a real CUDA workload (a python process that calls
# the CUDA driver API through libcuda.so.1: cuInit, a context, a 256 MiB
# allocation, and a busy kernel-free loop holding them), and checks within
# one poll interval that the agent attributes it: its pid, on a GPU whose
# UUID NVML reports, with memory > 0, NOT APPROVED, and a gpu_use alert.
# Exit status 0 when every check holds.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "gpu-check: run as root (the agent loads eBPF)" >&2; exit 1; }
command -v nvidia-smi >/dev/null || { echo "gpu-check: no nvidia-smi: is the NVIDIA driver installed?" >&2; exit 1; }

poll_ms=${VIGIL_GPU_POLL_MS:-1000}
if [ -n "${VIGIL_BIN_DIR:-}" ]; then
  bin=$VIGIL_BIN_DIR
else
  cargo build --release --locked -p vigil-agent -p vigil-controlplane -p vigilctl >&2
  bin=target/release
fi
work=$(mktemp -d)
out=bench/out/gpu-check.txt
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

"$bin/vigil-controlplane" --listen "127.0.0.1:$port" --data-dir "$work/cp" \
  >"$work/cp.out" 2>"$work/cp.log" &
pids+=($!)
for _ in $(seq 100); do grep -q ready "$work/cp.out" 2>/dev/null && break; sleep 0.1; done
"$bin/vigil-agent" --control-plane "http://127.0.0.1:$port" --data-dir "$work/agent" \
  --agent-id gpu-check --gpu-poll-ms "$poll_ms" >"$work/agent.out" 2>"$work/agent.log" &
pids+=($!)
for _ in $(seq 300); do grep -q ready "$work/agent.out" 2>/dev/null && break; sleep 0.1; done

# A real CUDA context and allocation, held until killed.
python3 - >"$work/workload.out" 2>&1 <<'PY' &
import ctypes, sys, time
cuda = ctypes.CDLL("libcuda.so.1")
def ok(r, what):
    if r != 0:
        print(f"{what} failed: CUresult {r}", flush=True); sys.exit(1)
ok(cuda.cuInit(0), "cuInit")
dev = ctypes.c_int()
ok(cuda.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
ctx = ctypes.c_void_p()
ok(cuda.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev), "cuCtxCreate")
ptr = ctypes.c_uint64()
ok(cuda.cuMemAlloc_v2(ctypes.byref(ptr), 256 << 20), "cuMemAlloc")
print("holding 256 MiB on GPU 0", flush=True)
time.sleep(600)
PY
workload=$!
pids+=($workload)
for _ in $(seq 100); do grep -q holding "$work/workload.out" 2>/dev/null && break; sleep 0.1; done
grep -q holding "$work/workload.out" || { cat "$work/workload.out" >&2; exit 1; }
started=$(date +%s.%N)

# Within one poll interval (plus the trip to the control plane).
deadline=$(( $(date +%s) + 2 + poll_ms / 1000 ))
seen=""
while [ "$(date +%s)" -le "$deadline" ]; do
  show=$(ctl agents show gpu-check 2>/dev/null || true)
  if grep -q "pid $workload .*NOT APPROVED" <<<"$show"; then seen=$(date +%s.%N); break; fi
  sleep 0.05
done
alerts=$(ctl alerts --json)
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "gpu: $(nvidia-smi --query-gpu=name,uuid,driver_version --format=csv,noheader | head -1)"
  echo "poll interval: ${poll_ms} ms"
  echo "workload pid: $workload"
  echo "--- vigilctl agents show gpu-check"
  echo "$show"
  echo "--- gpu_use alerts"
  grep '"gpu_use"' <<<"$alerts" || true
} | tee "$out"
fail() { echo "gpu-check FAILED: $*" | tee -a "$out" >&2; exit 1; }
[ -n "$seen" ] || fail "the workload (pid $workload) was not attributed within one poll interval"
line=$(grep "pid $workload " <<<"$show")
grep -qE "compute [0-9.]+ MiB" <<<"$line" || fail "no memory figure for the workload: $line"
grep -qE "compute 0\.0 MiB" <<<"$line" && fail "memory reported as 0 for the workload: $line"
grep -q "\"pid\":$workload" <<<"$(grep '"gpu_use"' <<<"$alerts")" || fail "no gpu_use alert for pid $workload"
echo "attributed $(awk "BEGIN { printf \"%.2f\", $seen - $started }") s after the allocation" | tee -a "$out"
echo "gpu-check passed" | tee -a "$out"
