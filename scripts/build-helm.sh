#!/usr/bin/env bash
# Builds `helm` from the Go module proxy (helm.sh/helm/v3/cmd/helm) for the chart tests.
# Idempotent: an existing binary is kept. Atomic: built under a temporary name, then renamed.
# Prints the path of the binary on stdout; progress goes to stderr. Never reads stdin.
#   HELM_VERSION=v3.22.0 bash scripts/build-helm.sh
set -euo pipefail
exec </dev/null

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE="${ODOO_UPGRADE_CACHE:-$HOME/.cache/odoo-upgrade-operator}"
DEST_DIR="$CACHE/helm-$HELM_VERSION"
DEST="$DEST_DIR/helm"

if [ -x "$DEST" ]; then
  echo "$DEST"
  exit 0
fi

command -v go >/dev/null || { echo "build-helm: 'go' is not on PATH" >&2; exit 1; }
mkdir -p "$DEST_DIR"
work="$(mktemp -d "$DEST_DIR/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "build-helm: downloading helm.sh/helm/v3@$HELM_VERSION" >&2
# Run outside any module so the repository's go.mod files never take part.
cd "$work"
gomod="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" |
  sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
# helm's Makefile derives the Kubernetes version it assumes (template, lint) from client-go:
# k8s.io/client-go v0.N.x is Kubernetes 1.N.
client_go="$(sed -n 's/^[[:space:]]*k8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$gomod" | head -n1)"
[ -n "$client_go" ] || { echo "build-helm: cannot read client-go version from $gomod" >&2; exit 1; }

ldflags="-s -w"
ldflags+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1"
ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$client_go"
ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1"
ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$client_go"

echo "build-helm: building helm $HELM_VERSION (Kubernetes 1.$client_go), this takes minutes" >&2
GOBIN="$work/bin" CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
"$work/bin/helm" version --short >&2
mv -f "$work/bin/helm" "$DEST"
echo "$DEST"
