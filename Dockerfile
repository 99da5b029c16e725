# prfence node agent. Same install steps as CI (.ci/run): npm ci, build, then only
# production dependencies. Node 24 LTS, matching package.json "engines" and the `node`
# dev dependency the tests run on. The base is pinned to the exact version of that `node`
# dev dependency (package-lock.json); pin it by digest too (node:24.21.0-bookworm-slim@sha256:
# ...) where a registry is reachable: none was when this was written, so no digest here.
# Without Docker: scripts/build-image.sh (mmdebstrap + umoci), same content.
FROM node:24.21.0-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM node:24.21.0-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY charts/prfence/crds ./crds
# koffi's native part ships in the per-platform package (@koromix/koffi-linux-x64 or
# -arm64); fail the build if it is missing or does not load.
# (koffi's package.json is not in its "exports": take the version from the module.)
RUN node -e "const k = require('koffi'); console.log('koffi', k.version, 'loaded')"
# The PR ioctls need CAP_SYS_ADMIN on the host's block devices, so the DaemonSet runs
# this container privileged as root (see charts/prfence/values.yaml). Run as the
# unprivileged `node` user for everything that does not touch devices (e.g. `prfence
# fence|unfence|status`, or a cluster-level controller) by overriding the user.
USER root
# /metrics, /healthz, /readyz (--http-endpoint; the chart sets :9808).
EXPOSE 9808
# V8 flags for a small, mostly idle agent: a bounded young generation and size-optimized
# code (bench/agent-bench.ts measures RSS with exactly these; keep the two equal).
ENTRYPOINT ["node", "--max-semi-space-size=1", "--optimize-for-size", "dist/src/cli/main.js"]
CMD ["agent"]
