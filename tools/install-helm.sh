#!/usr/bin/env bash
# Builds helm from Go modules (no binary downloads), cached in ~/.cache/prfence/bin.
set -euo pipefail
HELM_VERSION=${HELM_VERSION:-v3.19.0}
bin="${XDG_CACHE_HOME:-$HOME/.cache}/prfence/bin"
mkdir -p "$bin"
if [ ! -x "$bin/helm-$HELM_VERSION" ]; then
  GOBIN="$bin/.helm-$HELM_VERSION" GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 \
    go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv "$bin/.helm-$HELM_VERSION/helm" "$bin/helm-$HELM_VERSION"
  rmdir "$bin/.helm-$HELM_VERSION"
fi
ln -sfn "helm-$HELM_VERSION" "$bin/helm"
echo "helm: $("$bin/helm" version --short) at $bin/helm"
