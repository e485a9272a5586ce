#!/usr/bin/env bash
# Installs the built vigil packages into a throwaway root and uses them as
# an operator would: an overlay of / on a tmpfs (the host's files are never
# written), in a mount and network namespace of its own (loopback only).
# There it checks what the packages install (modes, the vigil user, units
# enabled, `systemd-analyze verify`), runs the control plane and the agent
# the way their units say (ExecStart, User, EnvironmentFile,
# CapabilityBoundingSet, NoNewPrivileges: this machine's PID 1 is not
# systemd), enrolls the agent with a join token, sees its findings, upgrades
# both packages and checks the spool and identity survived, then revokes the
# agent's certificate and sees its stream refused.
#
#   install-in-throwaway-root.sh PACKAGES_V1_DIR PACKAGES_V2_DIR
#
# Prints "ok: ..." after each check and "FAIL: ..." (exit 1) at the first
# that does not hold. Needs root.
set -euo pipefail

phase=${VIGIL_INSTALL_PHASE:-outer}
case "$phase" in
outer)
  [ "$(id -u)" = 0 ] || { echo "FAIL: needs root"; exit 1; }
  v1=$(realpath "$1") v2=$(realpath "$2")
  work=$(mktemp -d /tmp/vigil-install.XXXXXX)
  trap 'rmdir "$work" 2>/dev/null || true' EXIT
  VIGIL_INSTALL_PHASE=namespace unshare --mount --net --fork --propagation private \
    bash "$(realpath "$0")" "$v1" "$v2" "$work"
  ;;
namespace)
  v1=$1 v2=$2 work=$3
  ip link set lo up
  mount -t tmpfs -o mode=0700 tmpfs "$work"
  mkdir "$work/upper" "$work/work" "$work/root"
  mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/work" "$work/root"
  root=$work/root
  mount -t proc proc "$root/proc"
  mount --rbind /sys "$root/sys" && mount --make-rslave "$root/sys"
  mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev"
  mount -t tmpfs tmpfs "$root/run"
  mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
  mkdir -p "$root/tmp/packages/v1" "$root/tmp/packages/v2"
  cp "$v1"/*.deb "$root/tmp/packages/v1/"
  cp "$v2"/*.deb "$root/tmp/packages/v2/"
  cp "$0" "$root/tmp/install-steps.sh"
  VIGIL_INSTALL_PHASE=steps exec chroot "$root" /bin/bash /tmp/install-steps.sh
  ;;
steps) ;;
*) echo "FAIL: unknown phase $phase"; exit 1 ;;
esac
[ "$phase" = steps ] || exit 0

# ---- inside the throwaway root, as the operator (root) ----
cd /tmp
export DEBIAN_FRONTEND=noninteractive
logs=/tmp/logs
mkdir -p "$logs"
pids=()
ok() { echo "ok: $*"; }
fail() {
  echo "FAIL: $*"
  for f in "$logs"/*; do
    [ -s "$f" ] && { echo "--- $f (last 30 lines)"; tail -n 30 "$f"; }
  done
  exit 1
}
cleanup() { for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_for() { # SECS DESCRIPTION COMMAND...
  local secs=$1 what=$2
  shift 2
  for _ in $(seq $((secs * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  fail "waited ${secs}s for $what"
}
mode_of() { stat -c '%a %U:%G' "$1"; }
expect_mode() { # PATH "MODE USER:GROUP"
  [ "$(mode_of "$1")" = "$2" ] || fail "$1 is $(mode_of "$1"), not $2"
}
install_packages() { # DIR
  apt-get install -y -q -o Dpkg::Use-Pty=0 \
    "$1"/vigilctl_*.deb "$1"/vigil-controlplane_*.deb "$1"/vigil-agent_*.deb \
    > "$logs/apt-$(basename "$1").log" 2>&1 || fail "apt install of $1 failed"
}
unit_file() { dpkg -L "$1" | grep -E "/systemd/system/$2\$" | head -n 1; }
unit_values() { sed -n "s/^$2=//p" "$1"; }

# Starts a service as its installed unit says: its environment files in
# order ('-' = optional), its user, a capability bounding set of exactly
# the unit's CapabilityBoundingSet, no new privileges, its resource
# limits, its ExecStart.
start_unit() { # PACKAGE UNIT LOGNAME
  local unit
  unit=$(unit_file "$1" "$2")
  [ -n "$unit" ] || fail "$1 installs no $2"
  local exec user caps bounding=-all
  exec=$(unit_values "$unit" ExecStart)
  user=$(unit_values "$unit" User)
  caps=$(unit_values "$unit" CapabilityBoundingSet)
  for cap in $caps; do bounding+=",+$(echo "${cap#CAP_}" | tr '[:upper:]' '[:lower:]')"; done
  [ "$(unit_values "$unit" NoNewPrivileges)" = yes ] || fail "$unit does not set NoNewPrivileges=yes"
  local priv=(setpriv --bounding-set "$bounding" --inh-caps=-all --no-new-privs)
  [ -n "$user" ] && priv+=(--reuid "$user" --regid "$user" --init-groups)
  # The unit's limits, as far as this sandbox lets root raise them (it may
  # run without CAP_SYS_RESOURCE; systemd would set them in full).
  local limits=(prlimit) value hard
  value=$(unit_values "$unit" LimitNOFILE)
  if [ -n "$value" ]; then
    hard=$(ulimit -H -n)
    [ "$hard" != unlimited ] && [ "$value" -gt "$hard" ] && value=$hard
    limits+=("--nofile=$value")
  fi
  value=$(unit_values "$unit" LimitMEMLOCK)
  if [ "$value" = infinity ] && prlimit --memlock=unlimited -- true 2>/dev/null; then
    limits+=(--memlock=unlimited)
  fi
  (
    set -a
    for file in $(unit_values "$unit" EnvironmentFile); do
      if [ "${file#-}" != "$file" ]; then
        file=${file#-}
        [ -f "$file" ] || continue
      fi
      # shellcheck disable=SC1090
      . "$file"
    done
    set +a
    exec "${limits[@]}" -- "${priv[@]}" $exec
  ) > "$logs/$3.out" 2> "$logs/$3.err" &
  started=$!
  pids+=("$started")
}
stop_pid() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
status_field() { sed -n "s/^$2:[[:space:]]*//p" "/proc/$1/status"; }

# 1. Install, as the documented `apt install ./...deb`.
install_packages /tmp/packages/v1
for bin in vigil-agent vigil-controlplane vigilctl; do
  [ -x "/usr/bin/$bin" ] || fail "/usr/bin/$bin not installed"
done
ok "installed $(dpkg-query -W -f '${Package} ${Version}, ' vigil-agent vigil-controlplane vigilctl)"
getent passwd vigil > /dev/null || fail "no system user vigil"
expect_mode /etc/vigil/agent.env "600 root:root"
expect_mode /etc/vigil/controlplane.env "640 root:vigil"
expect_mode /etc/vigil/tls "750 root:vigil"
expect_mode /var/lib/vigil/agent "700 root:root"
expect_mode /var/lib/vigil/controlplane "700 vigil:vigil"
ok "modes: secrets 0600/0640, state directories 0700, the control plane's owned by vigil"
for unit in vigil-agent.path vigil-agent.service vigil-controlplane.service; do
  ls /etc/systemd/system/multi-user.target.wants/"$unit" > /dev/null 2>&1 \
    || fail "$unit is not enabled (no multi-user.target.wants link)"
done
ok "units enabled: vigil-agent.path, vigil-agent.service, vigil-controlplane.service"
units=("$(unit_file vigil-agent vigil-agent.service)" "$(unit_file vigil-agent vigil-agent.path)"
  "$(unit_file vigil-controlplane vigil-controlplane.service)")
if ! verify=$(systemd-analyze verify "${units[@]}" 2>&1); then
  fail "systemd-analyze verify: $verify"
fi
if echo "$verify" | grep -q vigil; then fail "systemd-analyze verify: $verify"; fi
ok "systemd-analyze verify: ${units[*]}"

# 2. The operator's PKI: a CA, the node's certificate, an admin.
vigilctl ca init --dir /etc/vigil/pki --name "vigil install-test CA" > /dev/null
vigilctl ca issue --ca-dir /etc/vigil/pki --node 1 --ip 127.0.0.1 --dns localhost \
  --out /etc/vigil/tls -o json > /dev/null
mv /etc/vigil/tls/node-1.pem /etc/vigil/tls/node.pem
mv /etc/vigil/tls/node-1.key /etc/vigil/tls/node.key
cp /etc/vigil/pki/ca.pem /etc/vigil/tls/ca.pem
chgrp vigil /etc/vigil/tls/node.key /etc/vigil/pki /etc/vigil/pki/ca.key
chmod 0640 /etc/vigil/tls/node.key /etc/vigil/pki/ca.key
chmod 0750 /etc/vigil/pki
sed -i 's|^#VIGIL_TLS_CA_KEY=|VIGIL_TLS_CA_KEY=|' /etc/vigil/controlplane.env
vigilctl ca issue --ca-dir /etc/vigil/pki --operator root --role admin --out /root/.vigil \
  -o json > /dev/null
export VIGIL_ENDPOINT=https://127.0.0.1:7700 VIGIL_TLS_CA=/etc/vigil/tls/ca.pem \
  VIGIL_TLS_CERT=/root/.vigil/operator-root.pem VIGIL_TLS_KEY=/root/.vigil/operator-root.key

cp_ready() { grep -q "vigil-controlplane ready" "$logs/controlplane.out"; }
start_unit vigil-controlplane vigil-controlplane.service controlplane
cp_pid=$started
wait_for 60 "the control plane" cp_ready
[ "$(stat -c %U "/proc/$cp_pid")" = vigil ] || fail "the control plane runs as $(stat -c %U "/proc/$cp_pid"), not vigil"
[ "$(status_field "$cp_pid" CapEff)" = 0000000000000000 ] || fail "the control plane has capabilities $(status_field "$cp_pid" CapEff)"
[ "$(status_field "$cp_pid" NoNewPrivs)" = 1 ] || fail "the control plane may gain privileges"
ok "control plane up as its unit runs it: user vigil, no capabilities, no new privileges"

# 3. Enroll with a one-time token, as the README says.
token=$(vigilctl agent token --ttl-secs 600 2> /dev/null) || fail "vigilctl agent token"
# The token on stdin, not on the command line (which any local user can read).
printf '%s\n' "$token" | vigil-agent enroll --token-file - --control-plane https://127.0.0.1:7700 \
  --tls-ca /etc/vigil/tls/ca.pem > "$logs/enroll.out" 2>&1 || fail "vigil-agent enroll"
expect_mode /etc/vigil/tls/agent.key "600 root:root"
expect_mode /etc/vigil/tls/enrollment.env "600 root:root"
if printf '%s\n' "$token" | vigil-agent enroll --token-file - --control-plane https://127.0.0.1:7700 \
  --tls-ca /etc/vigil/tls/ca.pem --out-dir /tmp/again > "$logs/reuse.out" 2>&1; then
  fail "a spent join token enrolled a second time"
fi
ok "enrolled; the same token refused a second time: $(tail -n 1 "$logs/reuse.out")"
agent_id=$(vigilctl ca show /etc/vigil/tls/agent.pem -o jsonl | sed -n 's|.*"identity_uri":"spiffe://[^"]*/agent/\([^"]*\)".*|\1|p')
[ "$agent_id" = "$(cat /etc/machine-id)" ] || fail "the enrolled certificate names agent '$agent_id', not this host's machine id"

agent_listed() { vigilctl agents list -o jsonl | grep -q "\"agent_id\":\"$agent_id\""; }
alert_for() { vigilctl alerts -o jsonl | grep -q "$1"; }
open_model() { # PATH: nobody writes a small GGUF file there (Debian's python3)
  setpriv --reuid nobody --regid nogroup --clear-groups /usr/bin/python3 \
    -c "import sys; open(sys.argv[1], 'wb').write(b'GGUF' + bytes(60))" "$1" \
    || fail "nobody could not write $1"
}
start_unit vigil-agent vigil-agent.service agent
agent_pid=$started
wait_for 90 "agent $agent_id on the control plane" agent_listed
vigilctl agents list -o jsonl | grep "\"agent_id\":\"$agent_id\"" | grep -q '"sensor_mode":"ebpf"' \
  || fail "the agent runs without its eBPF sensors under its unit's capabilities: $(vigilctl agents list -o jsonl)"
ok "agent $agent_id streams to the control plane with eBPF sensors, capabilities $(status_field "$agent_pid" CapEff) (its unit's bounding set)"
open_model /tmp/install-test-one.gguf
wait_for 60 "an alert for /tmp/install-test-one.gguf" alert_for install-test-one.gguf
ok "a model file opened by nobody is an alert"

# 4. Upgrade while findings wait in the spool: the identity and the spool survive.
stop_pid "$cp_pid"
open_model /tmp/install-test-two.gguf
sleep 3
stop_pid "$agent_pid"
identity_before=$(sha256sum /etc/vigil/tls/agent.pem /etc/vigil/tls/agent.key /etc/vigil/tls/enrollment.env)
install_packages /tmp/packages/v2
[ "$(dpkg-query -W -f '${Version}' vigil-agent)" != "$(dpkg-deb -f /tmp/packages/v1/vigil-agent_*.deb Version)" ] \
  || fail "the upgrade left vigil-agent at its old version"
[ "$identity_before" = "$(sha256sum /etc/vigil/tls/agent.pem /etc/vigil/tls/agent.key /etc/vigil/tls/enrollment.env)" ] \
  || fail "the upgrade changed the agent's identity files"
[ -n "$(ls -A /var/lib/vigil/agent)" ] || fail "the upgrade emptied the spool"
ok "upgraded to $(dpkg-query -W -f '${Version}' vigil-agent); identity files unchanged, spool kept"
: > "$logs/controlplane.out"
start_unit vigil-controlplane vigil-controlplane.service controlplane
cp_pid=$started
wait_for 60 "the control plane after the upgrade" cp_ready
start_unit vigil-agent vigil-agent.service agent
agent_pid=$started
wait_for 90 "the finding spooled before the upgrade" alert_for install-test-two.gguf
ok "the finding spooled across the upgrade arrived"

# 5. Revoke the agent's certificate: its stream is refused from then on.
vigilctl ca revoke --cert /etc/vigil/tls/agent.pem --reason "install test" > /dev/null \
  || fail "vigilctl ca revoke"
refused() { vigilctl audit list -o jsonl | grep "request.denied" | grep -q "is revoked"; }
wait_for 60 "the revoked agent's connection refused (audit request.denied)" refused
open_model /tmp/install-test-three.gguf
sleep 3
if alert_for install-test-three.gguf; then fail "a revoked agent's finding was accepted"; fi
ok "revoked: the agent's stream refused and audited, its findings no longer accepted"
stop_pid "$agent_pid"
stop_pid "$cp_pid"
ok "all"
