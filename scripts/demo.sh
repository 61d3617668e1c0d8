#!/usr/bin/env bash
# `make demo`: the whole story on this machine, no cloud and no real platform.
#
#   control plane (tests/harness) -> platform emulator -> operator -> namespace `odoo` with the
#   samples of deploy/samples (Secret, PVC, OdooUpgrade) pointed at the emulator -> a generated
#   dump in the PVC -> each phase as it happens -> Succeeded, the upgraded dump and its sha256.
#
# Runs unattended (no stdin, CI=true). Stops the operator and emulator it started, and the
# control plane if it started it; DEMO_KEEP=1 leaves everything running to look around.
# DEMO_TIMEOUT (seconds, default 300) bounds the wait for Succeeded.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

VPY=$ROOT/.venv/bin/python
KUBECTL=$ROOT/.venv/bin/kubectl
STATE=$ROOT/.cluster
DEMO=$ROOT/.demo
export KUBECONFIG=$STATE/kubeconfig
NAMESPACE=odoo
NAME=acme-to-18
CLAIM=odoo-backups
SOURCE_PATH=dumps/acme.dump
DESTINATION_PATH=upgraded/acme-18.dump
VOLUME=$STATE/volumes/$NAMESPACE/$CLAIM
CONTRACT=M123456-abcdef # the contract the emulator accepts
TIMEOUT=${DEMO_TIMEOUT:-300}
KEEP=${DEMO_KEEP:-0}

if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then
  BOLD=$'\e[1m' GREEN=$'\e[32m' RED=$'\e[31m' DIM=$'\e[2m' RESET=$'\e[0m'
else
  BOLD='' GREEN='' RED='' DIM='' RESET=''
fi
STEP=0
STEPS=7
step() { STEP=$((STEP + 1)); printf '\n%s[%d/%d] %s%s\n' "$BOLD" "$STEP" "$STEPS" "$*" "$RESET"; }
ok() { printf '  %s✔%s %s\n' "$GREEN" "$RESET" "$*"; }
info() { printf '  %s%s%s\n' "$DIM" "$*" "$RESET"; }
fail() { printf '\n%s✘ %s%s\n' "$RED" "$*" "$RESET" >&2; }
kc() { "$KUBECTL" "$@"; }

# Ports 0 = free ports; the emulator writes the ones it bound to ready.json.
free_port() { "$VPY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

tail_logs() {
  local file
  for file in "$DEMO/operator.log" "$DEMO/emulator/emulator.log"; do
    [ -f "$file" ] || continue
    printf '\n%s--- last lines of %s ---%s\n' "$BOLD" "${file#"$ROOT"/}" "$RESET" >&2
    tail -n 40 "$file" >&2
  done
  if ls "$STATE/logs/pods/${NAMESPACE}_"* >/dev/null 2>&1; then
    for file in "$STATE/logs/pods/${NAMESPACE}_"*; do
      printf '\n%s--- last lines of %s ---%s\n' "$BOLD" "${file#"$ROOT"/}" "$RESET" >&2
      tail -n 15 "$file" >&2
    done
  fi
}

# --- cleanup: only what this run started ----------------------------------------------------
STARTED_CLUSTER=0
EMULATOR_PID=
OPERATOR_PID=
stop_pid() { # pid, what
  [ -n "$1" ] || return 0
  kill -0 "$1" 2>/dev/null || return 0
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL "$1" 2>/dev/null || true
}
cleanup() {
  local status=$?
  if [ "$KEEP" = 1 ]; then
    printf '\n%sDEMO_KEEP=1: left running.%s\n' "$BOLD" "$RESET"
    [ -n "$OPERATOR_PID" ] && info "operator  pid $OPERATOR_PID  (log: .demo/operator.log)"
    [ -n "$EMULATOR_PID" ] && info "emulator  pid $EMULATOR_PID  (${EMULATOR_URL:-})"
    info "export KUBECONFIG=$KUBECONFIG"
    info "stop with: kill ${OPERATOR_PID:-} ${EMULATOR_PID:-}; make cluster-down"
    exit "$status"
  fi
  printf '\n%sCleaning up what the demo started%s (DEMO_KEEP=1 keeps it running)\n' "$BOLD" "$RESET"
  if [ -n "$OPERATOR_PID" ]; then stop_pid "$OPERATOR_PID"; ok "operator stopped"; fi
  if [ -n "$EMULATOR_PID" ]; then stop_pid "$EMULATOR_PID"; ok "emulator stopped"; fi
  if [ "$STARTED_CLUSTER" = 1 ]; then
    "$VPY" -m tests.harness.cluster down >/dev/null && ok "control plane stopped (logs kept in .cluster/logs/)"
  else
    info "the control plane was already running before the demo: left up"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$DEMO"
printf '%sodoo-upgrade-operator demo%s — an OdooUpgrade from deploy/samples/ to Succeeded\n' "$BOLD" "$RESET"

# --- 1. control plane ----------------------------------------------------------------------
step "Control plane (etcd, kube-apiserver, kube-controller-manager, pod runner)"
if [ -f "$STATE/pids.json" ] && kc get --raw /readyz >/dev/null 2>&1; then
  ok "already running: reusing it ($(kc config view -o jsonpath='{.clusters[0].cluster.server}'))"
else
  if [ -f "$STATE/pids.json" ]; then
    info "a stale control plane is recorded: stopping it first"
    "$VPY" -m tests.harness.cluster down >/dev/null
  fi
  "$VPY" -m tests.harness.cluster up | sed 's/^/  /'
  STARTED_CLUSTER=1
  ok "control plane up"
fi

# --- 2. emulator ---------------------------------------------------------------------------
step "Upgrade Platform emulator"
rm -rf "$DEMO/emulator"
mkdir -p "$DEMO/emulator"
"$VPY" -m odoo_upgrade.emulator --host 127.0.0.1 --port 0 --sftp-port 0 \
  --data-dir "$DEMO/emulator" --contract "$CONTRACT" --process-seconds 6 \
  >>"$DEMO/emulator/emulator.log" 2>&1 </dev/null &
EMULATOR_PID=$!
for _ in $(seq 1 150); do
  [ -s "$DEMO/emulator/ready.json" ] && break
  kill -0 "$EMULATOR_PID" 2>/dev/null || { fail "the emulator exited"; tail_logs; exit 1; }
  sleep 0.2
done
[ -s "$DEMO/emulator/ready.json" ] || { fail "the emulator did not start in 30 s"; tail_logs; exit 1; }
read -r HTTP_PORT SFTP_PORT < <("$VPY" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["http_port"], r["sftp_port"])' "$DEMO/emulator/ready.json")
EMULATOR_URL=http://127.0.0.1:$HTTP_PORT
ok "listening on $EMULATOR_URL (SFTP on port $SFTP_PORT), data in .demo/emulator/"

# --- 3. CRD and operator -------------------------------------------------------------------
step "CRD and operator"
kc apply -f crds/odooupgrades.upgrade.odoo-operator.io.yaml | sed 's/^/  /'
kc wait --for=condition=Established crd/odooupgrades.upgrade.odoo-operator.io --timeout=60s >/dev/null
ok "CRD established"
METRICS_PORT=$(free_port)
LIVENESS_PORT=$(free_port)
: >"$DEMO/operator.log"
# The operator contacts only the platform URLs it is told to trust: here, the emulator.
"$ROOT/.venv/bin/odoo-upgrade" operator --all-namespaces \
  --metrics-port "$METRICS_PORT" --liveness "http://127.0.0.1:$LIVENESS_PORT/healthz" \
  --allowed-platform-url "$EMULATOR_URL" \
  >>"$DEMO/operator.log" 2>&1 </dev/null &
OPERATOR_PID=$!
for _ in $(seq 1 200); do
  curl -fsS "http://127.0.0.1:$LIVENESS_PORT/healthz" >/dev/null 2>&1 && break
  kill -0 "$OPERATOR_PID" 2>/dev/null || { fail "the operator exited"; tail_logs; exit 1; }
  sleep 0.3
done
curl -fsS "http://127.0.0.1:$LIVENESS_PORT/healthz" >/dev/null 2>&1 ||
  { fail "the operator is not live after 60 s"; tail_logs; exit 1; }
ok "operator running, all namespaces (pid $OPERATOR_PID, log .demo/operator.log, metrics :$METRICS_PORT)"

# --- 4. namespace, dump ----------------------------------------------------------------------
step "Namespace '$NAMESPACE' and a generated sample dump in PVC $CLAIM"
kc create namespace "$NAMESPACE" --dry-run=client -o yaml | kc apply -f - | sed 's/^/  /'
if kc -n "$NAMESPACE" get odooupgrade "$NAME" >/dev/null 2>&1; then
  info "removing the OdooUpgrade of a previous demo run"
  kc -n "$NAMESPACE" delete odooupgrade "$NAME" --wait=true --timeout=60s >/dev/null
fi
if [ -e "$VOLUME/$DESTINATION_PATH" ]; then
  # The operator never overwrites a destination: clear the previous demo's output first.
  info "removing the upgraded dump of a previous demo run"
  rm -f "$VOLUME/$DESTINATION_PATH" "$VOLUME/$DESTINATION_PATH.sha256"
fi
mkdir -p "$VOLUME/$(dirname "$SOURCE_PATH")"
"$VPY" -c 'import sys
from pathlib import Path
from tests.support.scenario import fake_pg_dump
Path(sys.argv[1]).write_bytes(fake_pg_dump(512 * 1024, seed="demo"))' "$VOLUME/$SOURCE_PATH"
ok "$SOURCE_PATH: $(wc -c <"$VOLUME/$SOURCE_PATH") bytes, pg_dump custom format (${VOLUME#"$ROOT"/}/$SOURCE_PATH)"

# --- 5. samples ------------------------------------------------------------------------------
step "deploy/samples/, pointed at the emulator (overlay in .demo/overlay/)"
mkdir -p "$DEMO/overlay"
cat >"$DEMO/overlay/kustomization.yaml" <<EOF
# Generated by scripts/demo.sh: deploy/samples/ with only what must point at the local emulator.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../deploy/samples
patches:
  - target: {kind: OdooUpgrade, name: $NAME}
    patch: |-
      - op: replace
        path: /spec/platform
        value: {url: "$EMULATOR_URL", pollInterval: 5s}
  - target: {kind: Secret, name: odoo-contract}
    patch: |-
      - op: replace
        path: /stringData/contract
        value: "$CONTRACT"
EOF
kc apply -k "$DEMO/overlay" | sed 's/^/  /'
ok "applied: Secret odoo-contract, PVC $CLAIM, OdooUpgrade $NAME (target 18.0)"

# --- 6. watch --------------------------------------------------------------------------------
step "Watching $NAMESPACE/$NAME until Succeeded (timeout ${TIMEOUT}s)"
JSONPATH='{.status.phase}|{.status.platform.state}|{.status.requestId}|{.status.progress}'
last=
deadline=$((SECONDS + TIMEOUT))
phase=
while :; do
  line=$(kc -n "$NAMESPACE" get odooupgrade "$NAME" -o jsonpath="$JSONPATH" 2>/dev/null || true)
  IFS='|' read -r phase state request progress <<<"$line"
  if [ -n "$line" ] && [ "$line" != "$last" ]; then
    printf '  %s%s%s  %-12s %s%s%s%s\n' "$DIM" "$(date -u +%H:%M:%S)" "$RESET" "${phase:-Pending}" \
      "${state:+platform: $state}" "${request:+  request #$request}" "${progress:+  $progress}" ""
    last=$line
  fi
  case "$phase" in
    Succeeded) ok "Succeeded"; break ;;
    Failed)
      fail "the upgrade failed"
      kc -n "$NAMESPACE" get odooupgrade "$NAME" -o jsonpath='{range .status.conditions[*]}  {.type}={.status} {.reason}: {.message}{"\n"}{end}' >&2
      tail_logs
      exit 1
      ;;
  esac
  if [ "$SECONDS" -ge "$deadline" ]; then
    fail "no Succeeded after ${TIMEOUT}s (phase: ${phase:-none}); DEMO_TIMEOUT raises the limit"
    kc -n "$NAMESPACE" get odooupgrade "$NAME" -o yaml >&2 || true
    kc -n "$NAMESPACE" get events --sort-by=.lastTimestamp >&2 || true
    tail_logs
    exit 1
  fi
  kill -0 "$OPERATOR_PID" 2>/dev/null || { fail "the operator exited"; tail_logs; exit 1; }
  sleep 1
done
printf '\n  %sConditions%s\n' "$BOLD" "$RESET"
kc -n "$NAMESPACE" get odooupgrade "$NAME" -o jsonpath='{range .status.conditions[*]}    {.type}={.status}  {.reason}{"\n"}{end}'
printf '\n  %sEvents%s\n' "$BOLD" "$RESET"
kc -n "$NAMESPACE" get events --field-selector "involvedObject.name=$NAME" \
  --sort-by=.lastTimestamp -o custom-columns='  TIME:.lastTimestamp,REASON:.reason,MESSAGE:.message' | sed 's/^/  /'

# --- 7. result -------------------------------------------------------------------------------
step "Result"
kc get odooupgrades -A | sed 's/^/  /'
UPGRADED=$VOLUME/$DESTINATION_PATH
[ -f "$UPGRADED" ] || { fail "Succeeded, but $UPGRADED is missing"; exit 1; }
DIGEST=$(sha256sum "$UPGRADED" | cut -d' ' -f1)
RECORDED=$(cut -d' ' -f1 <"$UPGRADED.sha256")
STATUS_DIGEST=$(kc -n "$NAMESPACE" get odooupgrade "$NAME" -o jsonpath='{.status.download.sha256}')
printf '\n  upgraded dump  %s\n' "$UPGRADED"
printf '  size           %s bytes\n' "$(wc -c <"$UPGRADED")"
printf '  sha256         %s\n' "$DIGEST"
if [ "$DIGEST" = "$RECORDED" ] && [ "$DIGEST" = "$STATUS_DIGEST" ]; then
  ok "matches ${DESTINATION_PATH##*/}.sha256 and .status.download.sha256"
else
  fail "sha256 mismatch: file $DIGEST, .sha256 file $RECORDED, status $STATUS_DIGEST"
  exit 1
fi
printf '\n%s%sDemo complete.%s\n' "$BOLD" "$GREEN" "$RESET"
