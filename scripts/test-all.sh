#!/usr/bin/env bash
# The README's test command (`npm test`): installs the test dependencies (cached), then
# lint, typecheck, unit + contract suite on the memory model, integration against a real
# kube-apiserver + etcd (node-scoped agents and a controller, as the chart ships; the
# agents' safety suites a second time with cluster-scoped agents),
# and the kernel suite in QEMU guests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-deps.sh
npm run lint
npx tsc -p tsconfig.test.json
npx vitest run --project unit
npx vitest run --project integration
# The agents' safety suites again with cluster-scoped agents (--scope=cluster: each agent
# watches the whole cluster, no controller; test/integration/agent-harness.ts).
PRFENCE_TEST_AGENT_SCOPE=cluster npx vitest run --project integration \
  test/integration/safety.test.ts test/integration/agent-failover.test.ts \
  test/integration/handover.test.ts test/integration/failfast.test.ts \
  test/integration/volume-policy.test.ts
npm run test:kernel
