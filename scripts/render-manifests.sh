#!/usr/bin/env bash
# Renders the chart into manifests/prfence.yaml (plain kubectl install): namespace prfence.
set -euo pipefail
cd "$(dirname "$0")/.."
helm="${XDG_CACHE_HOME:-$HOME/.cache}/prfence/bin/helm"
# The Namespace first: `kubectl apply -f manifests/prfence.yaml` works on a fresh cluster.
namespace='---
apiVersion: v1
kind: Namespace
metadata:
  name: prfence
  labels:
    # The agent is privileged (PR ioctls on the host devices).
    pod-security.kubernetes.io/enforce: privileged'
out=$({ echo "# Rendered from charts/prfence by scripts/render-manifests.sh. Do not edit."; echo "$namespace"; "$helm" template prfence charts/prfence --namespace prfence --include-crds --kube-version 1.36.0; })
if [ "${1:-}" = --stdout ]; then printf '%s\n' "$out"; else mkdir -p manifests && printf '%s\n' "$out" >manifests/prfence.yaml; fi
