#!/usr/bin/env bash
# `make demo`: the whole story on this machine, no cloud and no real platform.
#
#   control plane and PostgreSQL (tests/harness) -> platform emulator -> operator -> a live
#   Odoo-like database `acme` (its filestore on a PVC) -> namespace `odoo` with the database
#   sample of deploy/samples/database (Secrets, PVCs, OdooUpgrade) pointed at the emulator and the
#   local server -> each phase as it happens, Dumping to Restoring -> Succeeded: the restored
#   database `acme_18_test` verified (base module at 18.0, every table), its filestore, the dumps.
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
NAME=acme-db-to-18
CLAIM=odoo-backups
SOURCE_PATH=dumps/acme.dump
DESTINATION_PATH=upgraded/acme-18.dump
VOLUME=$STATE/volumes/$NAMESPACE/$CLAIM
DATA_VOLUME=$STATE/volumes/$NAMESPACE/odoo-data
SOURCE_DB=acme
RESTORED_DB=acme_18_test
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
STARTED_POSTGRES=0
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
    "$VPY" -m tests.harness.cluster down >/dev/null && ok "control plane and PostgreSQL stopped (logs kept in .cluster/logs/)"
  elif [ "$STARTED_POSTGRES" = 1 ]; then
    "$VPY" -m tests.harness.postgres down --state-dir "$STATE" 2>/dev/null && ok "PostgreSQL stopped"
  else
    info "the control plane was already running before the demo: left up"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$DEMO"
printf '%sodoo-upgrade-operator demo%s — a live database to a restored, verified upgraded one (deploy/samples/database/)\n' "$BOLD" "$RESET"

# --- 1. control plane ----------------------------------------------------------------------
step "Control plane (etcd, kube-apiserver, kube-controller-manager, pod runner) and PostgreSQL"
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
# The PostgreSQL harness server: data in .cluster/postgres/, credentials in its server.json.
if ! "$VPY" -m tests.harness.postgres status --state-dir "$STATE" 2>/dev/null; then
  [ "$STARTED_CLUSTER" = 1 ] || STARTED_POSTGRES=1
  "$VPY" -m tests.harness.postgres up --state-dir "$STATE" 2>&1 | sed 's/^/  /'
fi
# pg DATABASE SQL: one query on the harness server (as its superuser), tuples only.
pg() {
  "$VPY" -c 'import sys
from pathlib import Path
from tests.harness.postgres import load_recorded
print(load_recorded(Path(sys.argv[1])).psql(sys.argv[3], sys.argv[2]).strip())' "$STATE" "$@"
}
ok "PostgreSQL $(pg postgres 'SHOW server_version' | cut -d' ' -f1) on $("$VPY" -c 'import sys
from pathlib import Path
from tests.harness.postgres import load_recorded
s = load_recorded(Path(sys.argv[1])); print(f"{s.host}:{s.port}")' "$STATE")"

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

# --- 4. namespace, live database ------------------------------------------------------------
step "Namespace '$NAMESPACE' and a live Odoo-like database '$SOURCE_DB' with its filestore"
kc create namespace "$NAMESPACE" --dry-run=client -o yaml | kc apply -f - | sed 's/^/  /'
if kc -n "$NAMESPACE" get odooupgrade "$NAME" >/dev/null 2>&1; then
  info "removing the OdooUpgrade of a previous demo run"
  kc -n "$NAMESPACE" delete odooupgrade "$NAME" --wait=true --timeout=60s >/dev/null
fi
# The operator never overwrites a file nor drops a database: the demo clears its previous run.
info "removing what a previous demo run made (its dumps, databases and filestores)"
rm -f "$VOLUME/$SOURCE_PATH" "$VOLUME/$SOURCE_PATH.sha256" "$VOLUME/$DESTINATION_PATH" "$VOLUME/$DESTINATION_PATH.sha256"
rm -rf "$DATA_VOLUME/filestore"
"$VPY" -c 'import sys
from pathlib import Path
from tests.harness.postgres import load_recorded
from tests.support.odoo_db import create_odoo_database
server = load_recorded(Path(sys.argv[1]))
for name in server.databases():
    if name == sys.argv[2] or name.startswith(sys.argv[3]):
        server.drop_database(name)
db = create_odoo_database(server, sys.argv[2], Path(sys.argv[4]) / "filestore" / sys.argv[2])
print(f"{db.partners} partners, {db.attachments} attachments with their files, modules at {db.series}")' \
  "$STATE" "$SOURCE_DB" "$RESTORED_DB" "$DATA_VOLUME" | sed 's/^/  /'
SOURCE_TABLES=$(pg "$SOURCE_DB" "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
SOURCE_BASE=$(pg "$SOURCE_DB" "SELECT latest_version FROM ir_module_module WHERE name = 'base'")
ok "database $SOURCE_DB: $SOURCE_TABLES tables, base module at $SOURCE_BASE; filestore in ${DATA_VOLUME#"$ROOT"/}/filestore/$SOURCE_DB"

# --- 5. samples ------------------------------------------------------------------------------
step "deploy/samples/database/, pointed at the emulator and this PostgreSQL (overlay in .demo/overlay/)"
# The connection Secret, CloudNativePG-style, for the harness server's app role: through stdin,
# so that its password reaches neither a file nor a command line.
"$VPY" -c 'import json, sys
from pathlib import Path
from tests.harness.postgres import load_recorded
data = {**load_recorded(Path(sys.argv[1])).secret_data(), "dbname": sys.argv[3]}
print(json.dumps({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
                  "metadata": {"name": "acme-pg-app", "namespace": sys.argv[2]},
                  "stringData": data}))' "$STATE" "$NAMESPACE" "$SOURCE_DB" |
  kc apply -f - | sed 's/^/  /'
mkdir -p "$DEMO/overlay"
cat >"$DEMO/overlay/kustomization.yaml" <<EOF
# Generated by scripts/demo.sh: deploy/samples/database/ with only what must point at the local
# emulator; the sample's placeholder connection Secret is left out (the demo applied the real one).
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../deploy/samples/database
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
  - patch: |-
      \$patch: delete
      apiVersion: v1
      kind: Secret
      metadata: {name: acme-pg-app, namespace: $NAMESPACE}
EOF
kc apply -k "$DEMO/overlay" | sed 's/^/  /'
ok "applied: Secrets odoo-contract and acme-pg-app, PVCs $CLAIM and odoo-data, OdooUpgrade $NAME (target 18.0)"

# --- 6. watch --------------------------------------------------------------------------------
step "Watching $NAMESPACE/$NAME until Succeeded (timeout ${TIMEOUT}s)"
JSONPATH='{.status.phase}|{.status.platform.state}|{.status.requestId}|{.status.progress}|{.status.message}'
last=
deadline=$((SECONDS + TIMEOUT))
phase=
while :; do
  line=$(kc -n "$NAMESPACE" get odooupgrade "$NAME" -o jsonpath="$JSONPATH" 2>/dev/null || true)
  IFS='|' read -r phase state request progress message <<<"$line"
  if [ -n "$line" ] && [ "$line" != "$last" ]; then
    printf '  %s%s%s  %-12s %s%s%s%s\n' "$DIM" "$(date -u +%H:%M:%S)" "$RESET" "${phase:-Pending}" \
      "${state:+platform: $state  }" "${request:+request #$request  }" "${progress:+$progress  }" \
      "${message:+$DIM$message$RESET}"
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
jp() { kc -n "$NAMESPACE" get odooupgrade "$NAME" -o jsonpath="$1"; }
DUMP=$VOLUME/$SOURCE_PATH
UPGRADED=$VOLUME/$DESTINATION_PATH
for file in "$DUMP" "$UPGRADED"; do
  [ -f "$file" ] || { fail "Succeeded, but $file is missing"; exit 1; }
done
DUMP_DIGEST=$(sha256sum "$DUMP" | cut -d' ' -f1)
DIGEST=$(sha256sum "$UPGRADED" | cut -d' ' -f1)
printf '\n  dump of %s       %s (%s bytes, PostgreSQL %s)\n' "$SOURCE_DB" "${DUMP#"$ROOT"/}" \
  "$(wc -c <"$DUMP")" "$(jp '{.status.dump.serverVersion}')"
printf '  upgraded dump     %s (%s bytes)\n' "${UPGRADED#"$ROOT"/}" "$(wc -c <"$UPGRADED")"
if [ "$DUMP_DIGEST" = "$(jp '{.status.dump.sha256}')" ] && [ "$DUMP_DIGEST" = "$(cut -d' ' -f1 <"$DUMP.sha256")" ] &&
  [ "$DIGEST" = "$(jp '{.status.download.sha256}')" ] && [ "$DIGEST" = "$(cut -d' ' -f1 <"$UPGRADED.sha256")" ]; then
  ok "both match their .sha256 files and .status; the dump stays as the rollback point"
else
  fail "sha256 mismatch between the files, their .sha256 files and .status"
  exit 1
fi
RESTORED_BASE=$(pg "$RESTORED_DB" "SELECT latest_version FROM ir_module_module WHERE name = 'base'")
RESTORED_TABLES=$(pg "$RESTORED_DB" "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
ROWS=$(pg "$RESTORED_DB" "SELECT (SELECT count(*) FROM res_partner) || ' partners, ' || (SELECT count(*) FROM ir_attachment) || ' attachments'")
FILES=$(find "$DATA_VOLUME/filestore/$RESTORED_DB" -type f | wc -l)
printf '\n  restored database %s: base module at %s (.status.restore.baseVersion %s),\n' \
  "$RESTORED_DB" "$RESTORED_BASE" "$(jp '{.status.restore.baseVersion}')"
printf '                    %s tables, %s\n' "$RESTORED_TABLES" "$ROWS"
printf '  its filestore     %s: %s files (.status.restore.filestoreFiles %s)\n' \
  "${DATA_VOLUME#"$ROOT"/}/filestore/$RESTORED_DB" "$FILES" "$(jp '{.status.restore.filestoreFiles}')"
printf '  source database   %s: unchanged, base module still at %s\n' "$SOURCE_DB" \
  "$(pg "$SOURCE_DB" "SELECT latest_version FROM ir_module_module WHERE name = 'base'")"
case "$RESTORED_BASE" in
  18.0.*) ;;
  *) fail "$RESTORED_DB's base module is at $RESTORED_BASE, not of the 18.0 series"; exit 1 ;;
esac
if [ "$RESTORED_TABLES" != "$SOURCE_TABLES" ]; then
  fail "$RESTORED_DB has $RESTORED_TABLES tables, $SOURCE_DB has $SOURCE_TABLES"
  exit 1
fi
ok "$RESTORED_DB is at the 18.0 series with every one of $SOURCE_DB's $SOURCE_TABLES tables"
printf '\n%s%sDemo complete.%s\n' "$BOLD" "$GREEN" "$RESET"
