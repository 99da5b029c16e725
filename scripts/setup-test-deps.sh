#!/usr/bin/env bash
# Installs what the test suite needs beyond npm packages, each step cached and idempotent:
# Debian packages and kernels for the QEMU guest, kube-apiserver + etcd, helm, kernel headers.
# Called by `npm test` (scripts/test-all.sh) and by .ci/run; fast when everything is cached.
set -euo pipefail
cd "$(dirname "$0")/.."
for s in test/kernel/setup.sh test/envtest/setup.sh tools/install-helm.sh test/kernel/fetch-headers.sh; do
  if [ -x "$s" ] || [ -f "$s" ]; then
    t0=$(date +%s)
    bash "$s"
    echo "setup: $s in $(($(date +%s) - t0)) s"
  fi
done
