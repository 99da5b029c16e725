#!/usr/bin/env bash
# The README's test command: lint, typecheck, unit + contract (memory), integration
# (real kube-apiserver + etcd), and the kernel suite in QEMU.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run lint
npx tsc -p tsconfig.test.json
npx vitest run --project unit
npx vitest run --project integration
npm run test:kernel
