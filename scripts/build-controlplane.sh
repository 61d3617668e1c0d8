#!/usr/bin/env bash
# Builds the test control plane from Go modules: kube-apiserver and kube-controller-manager from
# k8s.io/kubernetes (tests/controlplane/kube), etcd from go.etcd.io/etcd/server/v3
# (tests/controlplane/etcd). Versions come from those go.mod files; binaries are cached outside
# the clone, keyed by version, so CI and later runs reuse them:
#   ${ODOO_UPGRADE_CACHE:-$HOME/.cache/odoo-upgrade-operator}/k8s-<version>/{kube-apiserver,kube-controller-manager}
#   ${ODOO_UPGRADE_CACHE:-$HOME/.cache/odoo-upgrade-operator}/etcd-<version>/etcd
# A binary is rebuilt only when it is missing or its `--version` does not run. Builds go to a
# temporary directory first and are renamed into place, so an interrupted build never leaves a
# half-written binary under its final name. Needs no stdin (CI).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${ODOO_UPGRADE_CACHE:-$HOME/.cache/odoo-upgrade-operator}"
KUBE_MOD="$ROOT/tests/controlplane/kube"
ETCD_MOD="$ROOT/tests/controlplane/etcd"

# The version a go.mod requires of a module (its `require` line, never a `replace` line).
required_version() { # <go.mod> <module path>
  awk -v mod="$2" '$1 == mod && $2 ~ /^v/ { print $2; exit }' "$1"
}

KUBE_VERSION="$(required_version "$KUBE_MOD/go.mod" k8s.io/kubernetes)"
ETCD_VERSION="$(required_version "$ETCD_MOD/go.mod" go.etcd.io/etcd/server/v3)"
if [ -z "$KUBE_VERSION" ] || [ -z "$ETCD_VERSION" ]; then
  echo "build-controlplane: cannot read the k8s.io/kubernetes or etcd version from tests/controlplane/*/go.mod" >&2
  exit 1
fi
KUBE_DIR="$CACHE/k8s-$KUBE_VERSION"
ETCD_DIR="$CACHE/etcd-$ETCD_VERSION"

# True when the binary exists and `--version` names the expected version.
binary_ok() { # <path> <version without v>
  [ -x "$1" ] && "$1" --version 2>/dev/null | grep -qF "$2"
}

if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
  PATH="$PATH:/usr/local/go/bin"
fi

# Left behind by an interrupted run: the heartbeat and the temporary build directory.
BEAT=
TMP=
cleanup() {
  if [ -n "$BEAT" ]; then kill "$BEAT" 2>/dev/null || true; fi
  if [ -n "$TMP" ]; then rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Prints a line every 30 s while a step runs, so a cold build is visibly alive in CI logs.
heartbeat() { # <label> <verbose build log or empty> <total packages or empty>
  local started=$SECONDS compiled
  while sleep 30; do
    if [ -n "$2" ]; then
      compiled=$(grep -vc '^go: ' "$2" 2>/dev/null || true)
      echo "  ... $1: $((SECONDS - started)) s, ${compiled:-0}/$3 packages compiled"
    else
      echo "  ... $1: $((SECONDS - started)) s"
    fi
  done
}

# go build with progress; output into a temp dir, then each binary renamed into <final dir>.
# Targets are <binary name>=<package>; with several, each name must be the package's last element.
build() { # <label> <module dir> <final dir> <ldflags> <name>=<package>...
  local label=$1 moddir=$2 final=$3 ldflags=$4
  shift 4
  if ! command -v go >/dev/null; then
    echo "build-controlplane: 'go' is not on PATH; install Go >= 1.24 (tool directives)" >&2
    exit 1
  fi
  mkdir -p "$CACHE"
  local log out target total step started=$SECONDS
  local -a packages=()
  for target in "$@"; do packages+=("${target#*=}"); done
  TMP="$(mktemp -d "$CACHE/.build-$label.XXXXXX")"
  out="$TMP/"
  if [ $# -eq 1 ]; then out="$TMP/${1%%=*}"; fi
  log="$TMP/build.log"
  export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=mod"

  echo "build-controlplane: $label: downloading modules (cold: a few hundred MB from the Go proxy)"
  step=$SECONDS
  heartbeat "$label modules" "" "" &
  BEAT=$!
  if ! (cd "$moddir" && go mod download) >"$log" 2>&1; then
    # Names the module the proxy could not serve.
    tail -20 "$log" >&2
    echo "build-controlplane: $label: module download failed (log above)" >&2
    exit 1
  fi
  kill "$BEAT" 2>/dev/null || true
  total=$(cd "$moddir" && go list -deps "${packages[@]}" | wc -l)
  echo "build-controlplane: $label: modules ready in $((SECONDS - step)) s; compiling $total packages"

  step=$SECONDS
  heartbeat "$label" "$log" "$total" &
  BEAT=$!
  # -v lists each package as it is compiled (counted by the heartbeat); errors go to the same log.
  if ! (cd "$moddir" && go build -v -trimpath -ldflags "$ldflags" -o "$out" "${packages[@]}") \
    >"$log" 2>&1; then
    grep -v '^[a-zA-Z0-9._~/-]*$' "$log" | tail -40 >&2 || tail -40 "$log" >&2
    echo "build-controlplane: $label build failed after $((SECONDS - started)) s (log above)" >&2
    exit 1
  fi
  kill "$BEAT" 2>/dev/null || true
  BEAT=
  mkdir -p "$final"
  for target in "$@"; do
    # rename(2) within one filesystem: the final name appears only once the binary is whole.
    mv -f "$TMP/${target%%=*}" "$final/${target%%=*}"
  done
  rm -rf "$TMP"
  TMP=
  echo "build-controlplane: $label built in $((SECONDS - started)) s (compile $((SECONDS - step)) s)"
}

if binary_ok "$KUBE_DIR/kube-apiserver" "$KUBE_VERSION" &&
  binary_ok "$KUBE_DIR/kube-controller-manager" "$KUBE_VERSION"; then
  echo "build-controlplane: kube-apiserver, kube-controller-manager $KUBE_VERSION cached in $KUBE_DIR"
else
  minor="${KUBE_VERSION#v}"
  minor="${minor#*.}"
  minor="${minor%%.*}"
  # Without these, /version says v0.0.0-master and kubeVersion checks (Helm) fail.
  build kube "$KUBE_MOD" "$KUBE_DIR" \
    "-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
    kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
    kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager
fi

if binary_ok "$ETCD_DIR/etcd" "${ETCD_VERSION#v}"; then
  echo "build-controlplane: etcd $ETCD_VERSION cached in $ETCD_DIR"
else
  # go.etcd.io/etcd/server/v3 is itself the etcd main package.
  build etcd "$ETCD_MOD" "$ETCD_DIR" "-s -w" etcd=go.etcd.io/etcd/server/v3
fi
