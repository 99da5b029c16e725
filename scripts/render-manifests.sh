#!/usr/bin/env bash
# Renders the chart into manifests/prfence.yaml (plain kubectl install): namespace prfence.
set -euo pipefail
cd "$(dirname "$0")/.."
helm="${XDG_CACHE_HOME:-$HOME/.cache}/prfence/bin/helm"
out=$({ echo "# Rendered from charts/prfence by scripts/render-manifests.sh. Do not edit."; "$helm" template prfence charts/prfence --namespace prfence --include-crds --kube-version 1.36.0; })
if [ "${1:-}" = --stdout ]; then printf '%s\n' "$out"; else mkdir -p manifests && printf '%s\n' "$out" >manifests/prfence.yaml; fi
