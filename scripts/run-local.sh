#!/usr/bin/env bash
# Runs a single-node control plane and a local agent from target/release,
# with their data under ./.vigil/, until Ctrl-C, which stops both cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
state=.vigil
listen=${VIGIL_LISTEN:-127.0.0.1:7700}
metrics=${VIGIL_METRICS_LISTEN:-127.0.0.1:9464}
mkdir -p "$state"

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping vigil..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped; data kept in $state/ (logs: $state/*.log)"
  exit 0
}
trap stop INT TERM EXIT

"$bin/vigil-controlplane" --listen "$listen" --data-dir "$state/controlplane" \
  --metrics-listen "$metrics" \
  > >(tee -a "$state/controlplane.out") 2> "$state/controlplane.log" &
pids+=($!)
for _ in $(seq 100); do
  grep -q "vigil-controlplane ready" "$state/controlplane.out" 2>/dev/null && break
  sleep 0.1
done

if [ "$(id -u)" = 0 ]; then
  "$bin/vigil-agent" --control-plane "http://$listen" --data-dir "$state/agent" \
    > >(tee -a "$state/agent.out") 2> "$state/agent.log" &
  pids+=($!)
  agent_line="agent          eBPF sensors on this host, spool in $state/agent, log $state/agent.log"
else
  agent_line="agent          NOT started: loading eBPF needs root (run make run as root)"
fi
sleep 1

cat <<INFO

vigil is running:
  control plane  gRPC on $listen (agents, vigilctl, SIEM export), raft + sled in $state/controlplane, log $state/controlplane.log
  metrics        Prometheus at http://$metrics/metrics
  $agent_line
  dashboard      not in this build yet (the SOC dashboard is a later milestone)

Try, in another shell:
  $bin/vigilctl alerts --follow
  python3 -c "open('/tmp/model.onnx', 'wb').close()"
  $bin/vigilctl status
  curl -s http://$metrics/metrics | grep ^vigil_     # raft, alerts, agents
  $bin/vigilctl agents show \$(hostname)          # sensors, GPUs, policy version
  $bin/vigilctl policy check policies/default      # the default rule pack (README: sign and push)

Ctrl-C stops everything.
INFO
wait -n "${pids[@]}" || true
echo "a vigil process exited; see $state/*.log"
