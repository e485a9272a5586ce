#!/usr/bin/env bash
# Runs a single-node control plane and a local agent from target/release,
# with their data under ./.vigil/, until Ctrl-C, which stops both cleanly.
# Everything speaks mutual TLS: a fleet CA is made in ./.vigil/pki on the
# first run (its key stays there, 0600), with certificates for the node,
# this host's agent and an admin operator; VIGIL_PLAINTEXT=1 runs the old
# plaintext lab instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${VIGIL_BIN_DIR:-target/release}
state=${VIGIL_STATE_DIR:-.vigil}
listen=${VIGIL_LISTEN:-127.0.0.1:7700}
metrics=${VIGIL_METRICS_LISTEN:-127.0.0.1:9464}
mkdir -p "$state"
host=$(hostname)
agent_id=${VIGIL_AGENT_ID:-$(cat /etc/machine-id 2>/dev/null || hostname)}
pki=$state/pki
cp_tls=() agent_tls=() scheme=http
# The admin signing key: policy bundles, workload approvals and unfreeze
# orders are signed with it (vigilctl ... --key $pki/admin.key).
mkdir -p "$pki" && chmod 700 "$pki"
if [ ! -f "$pki/admin.key" ]; then
  "$bin/vigilctl" policy keygen --out "$pki/admin.key" > "$pki/admin.pub"
fi
admin_pub=$(cat "$pki/admin.pub")
if [ "${VIGIL_PLAINTEXT:-0}" != 1 ]; then
  scheme=https
  if [ ! -f "$pki/ca.pem" ]; then
    "$bin/vigilctl" ca init --dir "$pki" --name "vigil local CA ($host)" >/dev/null
    "$bin/vigilctl" ca issue --ca-dir "$pki" --node local --ip 127.0.0.1 --dns localhost --out "$pki" -o json >/dev/null
    "$bin/vigilctl" ca issue --ca-dir "$pki" --agent "$agent_id" --out "$pki" -o json >/dev/null
    "$bin/vigilctl" ca issue --ca-dir "$pki" --operator "$(id -un)" --role admin --out "$pki" -o json >/dev/null
    cp "$pki/operator-$(id -un).pem" "$pki/operator.pem"
    cp "$pki/operator-$(id -un).key" "$pki/operator.key"
    chmod 600 "$pki/operator.key"
  fi
  cp_tls=(--tls-ca "$pki/ca.pem" --tls-cert "$pki/node-local.pem" --tls-key "$pki/node-local.key" --tls-ca-key "$pki/ca.key")
  agent_tls=(--tls-ca "$pki/ca.pem" --tls-cert "$pki/agent-$agent_id.pem" --tls-key "$pki/agent-$agent_id.key")
fi

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
  --metrics-listen "$metrics" --dashboard-listen 127.0.0.1:7780 --trusted-policy-key "$admin_pub" "${cp_tls[@]}" \
  > >(tee -a "$state/controlplane.out") 2> "$state/controlplane.log" &
pids+=($!)
for _ in $(seq 100); do
  grep -q "vigil-controlplane ready" "$state/controlplane.out" 2>/dev/null && break
  sleep 0.1
done

# The dashboard's first admin: made when the cluster has no admin user yet,
# its generated password printed here once (the cluster keeps only its
# argon2id hash). Retried while the new node elects itself.
ctl=("$bin/vigilctl" --endpoint "$scheme://$listen")
if [ "$scheme" = https ]; then
  ctl+=(--tls-ca "$pki/ca.pem" --tls-cert "$pki/operator.pem" --tls-key "$pki/operator.key")
fi
first_admin_line="users          an admin user exists (vigilctl user list)"
users=""
for _ in $(seq 50); do
  users=$("${ctl[@]}" user list -o json 2>/dev/null) && break
  users=""
  sleep 0.2
done
if [ -z "$users" ]; then
  first_admin_line="users          could not list users (see $state/controlplane.log); add one: vigilctl user add NAME --role admin"
elif ! grep -q '"role":"admin"' <<<"$users"; then
  if added=$("${ctl[@]}" user add admin --role admin 2>&1); then
    password=$(sed -n 's/^password (shown once): //p' <<<"$added")
    first_admin_line="first admin    user 'admin', password $password (shown once, not stored here; change it: vigilctl user set admin --password-stdin)"
  else
    first_admin_line="users          no admin user, and adding 'admin' failed: $added"
  fi
fi

if [ "$(id -u)" = 0 ]; then
  "$bin/vigil-agent" --control-plane "$scheme://$listen" --data-dir "$state/agent" \
    --agent-id "$agent_id" "${agent_tls[@]}" \
    > >(tee -a "$state/agent.out") 2> "$state/agent.log" &
  pids+=($!)
  agent_line="agent          eBPF sensors on this host, spool in $state/agent, log $state/agent.log"
else
  agent_line="agent          NOT started: loading eBPF needs root (run make run as root)"
fi
sleep 1

if [ "$scheme" = https ]; then
  env_line="export VIGIL_ENDPOINT=https://$listen VIGIL_TLS_CA=$pki/ca.pem VIGIL_TLS_CERT=$pki/operator.pem VIGIL_TLS_KEY=$pki/operator.key"
  tls_line="mutual TLS: CA, certificates and keys in $pki (the CA key too: it enrolls agents)"
else
  env_line="export VIGIL_ENDPOINT=http://$listen"
  tls_line="PLAINTEXT (VIGIL_PLAINTEXT=1): any local user can pose as an agent or an operator"
fi
cat <<INFO

vigil is running:
  control plane  gRPC on $listen (agents, vigilctl, SIEM export), raft + sled in $state/controlplane, log $state/controlplane.log
  transport      $tls_line
  metrics        Prometheus at http://$metrics/metrics
  $first_admin_line
  $agent_line
  dashboard      $scheme://127.0.0.1:7780/ (users: vigilctl user add)

Try, in another shell:
  $env_line
  $bin/vigilctl alerts --follow
  python3 -c "open('/tmp/model.onnx', 'wb').close()"
  $bin/vigilctl status
  curl -s http://$metrics/metrics | grep ^vigil_     # raft, alerts, agents
  $bin/vigilctl agents show \$(hostname)          # sensors, GPUs, policy version
  $bin/vigilctl policy check policies/default      # the default rule pack (README: sign and push)
  $bin/vigilctl workload approve --exe /usr/bin/python3 --key $pki/admin.key --note demo   # signed approval

Ctrl-C stops everything.
INFO
wait -n "${pids[@]}" || true
echo "a vigil process exited; see $state/*.log"
