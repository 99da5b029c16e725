#!/usr/bin/env bash
# The README's test command (`npm test`): installs the test dependencies (cached), then
# lint, typecheck, unit + contract suite on the memory model, integration against a real
# kube-apiserver + etcd, and the kernel suite in QEMU guests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-deps.sh
npm run lint
npx tsc -p tsconfig.test.json
npx vitest run --project unit
npx vitest run --project integration
npm run test:kernel
