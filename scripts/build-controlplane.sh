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

# Prints a line every 30 s while a build runs, so a cold build is visibly alive in CI logs.
heartbeat() { # <label> <verbose build log>
  local started=$SECONDS
  while sleep 30; do
    echo "  ... $1: $((SECONDS - started)) s, $(wc -l <"$2" 2>/dev/null || echo 0) packages compiled"
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
  local tmp log out target started=$SECONDS
  local -a packages=()
  for target in "$@"; do packages+=("${target#*=}"); done
  tmp="$(mktemp -d "$CACHE/.build-$label.XXXXXX")"
  out="$tmp/"
  if [ $# -eq 1 ]; then out="$tmp/${1%%=*}"; fi
  log="$tmp/build.log"
  echo "build-controlplane: building $label into $final (cold: a few minutes; modules from the Go proxy)"
  heartbeat "$label" "$log" &
  local beat=$!
  # -v lists each package as it is compiled (counted by the heartbeat); errors go to the same log.
  if ! (cd "$moddir" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=mod" \
      go build -v -trimpath -ldflags "$ldflags" -o "$out" "${packages[@]}") >"$log" 2>&1; then
    kill "$beat" 2>/dev/null || true
    grep -v '^[a-zA-Z0-9._~/-]*$' "$log" | tail -40 >&2 || tail -40 "$log" >&2
    echo "build-controlplane: $label build failed after $((SECONDS - started)) s (log above)" >&2
    rm -rf "$tmp"
    exit 1
  fi
  kill "$beat" 2>/dev/null || true
  mkdir -p "$final"
  for target in "$@"; do
    # rename(2) within one filesystem: the final name appears only once the binary is whole.
    mv -f "$tmp/${target%%=*}" "$final/${target%%=*}"
  done
  rm -rf "$tmp"
  echo "build-controlplane: $label built in $((SECONDS - started)) s"
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
