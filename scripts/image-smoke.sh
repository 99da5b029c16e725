#!/usr/bin/env bash
# Smoke test of the image scripts/build-image.sh built, without a container engine: unpacks
# it with umoci and runs its entrypoint in the unpacked rootfs with chroot (as root), with
# the image config's env and working directory, /dev, /sys (read-only) and /proc as the
# DaemonSet has them.
#   sudo scripts/image-smoke.sh [OUTDIR]        (default out/image; tag = package.json version)
# Asserts: the config (entrypoint, cmd, workdir, env, port, OCI labels); no npm, npx, yarn or
# corepack in the rootfs; `prfence --version` prints the version (exit 0); `prfence device
# capabilities` on a loop device (no Persistent Reservation support) fails as documented:
# exit 4 (unsupported), one line `prfence: ...not supported...` on stderr, and with --json
# {"error":{"kind":"unsupported",...},"exitCode":4} on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/image}
VERSION=$(node -p "require('./package.json').version")
TAG=$VERSION
T0=$(date +%s)
fail() {
  echo "image-smoke: FAILED: $*" >&2
  exit 1
}
ok() { echo "image-smoke: ok: $*"; }
[ "$(id -u)" = 0 ] || fail "run as root (sudo $0): umoci unpack, chroot, losetup and mount need it"
[ -f "$OUT/index.json" ] || fail "$OUT/index.json missing: run scripts/build-image.sh first"

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/prfence-smoke.XXXXXX")
BUNDLE=$SCRATCH/bundle
ROOTFS=$BUNDLE/rootfs
LOOP=
MOUNTS=()
cleanup() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" || true; done
  [ -z "$LOOP" ] || losetup -d "$LOOP" || true
  # Never delete through a mount that is still there (the host's /dev is bind-mounted).
  if grep -q " $SCRATCH/" /proc/self/mounts; then
    echo "image-smoke: mounts left under $SCRATCH; not removing it" >&2
  else
    rm -rf "$SCRATCH"
  fi
}
trap cleanup EXIT

# The image config, read from the layout as a registry would serve it.
node -e '
  const fs = require("fs"), p = require("path");
  const [dir, tag, version] = process.argv.slice(1);
  const blob = (d) => JSON.parse(fs.readFileSync(p.join(dir, "blobs", ...d.split(":"))));
  const m = JSON.parse(fs.readFileSync(p.join(dir, "index.json"))).manifests
    .find((x) => x.annotations?.["org.opencontainers.image.ref.name"] === tag);
  if (!m) throw new Error(`no tag ${tag} in ${dir}/index.json`);
  const img = blob(blob(m.digest).config.digest);
  const c = img.config;
  const eq = (what, got, want) => {
    if (JSON.stringify(got) !== JSON.stringify(want))
      throw new Error(`${what}: ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
  };
  eq("Entrypoint", c.Entrypoint, ["node", "--max-semi-space-size=1", "--optimize-for-size", "dist/src/cli/main.js"]);
  eq("Cmd", c.Cmd, ["agent"]);
  eq("WorkingDir", c.WorkingDir, "/app");
  eq("ExposedPorts", Object.keys(c.ExposedPorts ?? {}), ["9808/tcp"]);
  eq("NODE_ENV", (c.Env ?? []).includes("NODE_ENV=production"), true);
  eq("architecture/os", [img.architecture, img.os], ["amd64", "linux"]);
  const l = c.Labels ?? {};
  for (const k of ["title", "version", "source", "revision", "created", "licenses", "base.name"])
    if (!l[`org.opencontainers.image.${k}`]) throw new Error(`label org.opencontainers.image.${k} missing`);
  eq("version label", l["org.opencontainers.image.version"], version);
  eq("title label", l["org.opencontainers.image.title"], "prfence");
  if (!/\blibc6=\S+/.test(l["io.prfence.image.base.packages"] ?? ""))
    throw new Error("label io.prfence.image.base.packages does not name libc6=VERSION");
  console.log(`image-smoke: ok: config of ${dir}:${tag} (${m.digest.slice(0, 19)}): entrypoint, cmd, workdir /app, NODE_ENV, 9808/tcp, labels`);
  console.log(`image-smoke:     base ${l["org.opencontainers.image.base.name"]}: ${l["io.prfence.image.base.packages"]}`);
' "$OUT" "$TAG" "$VERSION"
mapfile -t ENTRYPOINT < <(node -e '
  const fs = require("fs"), p = require("path");
  const [dir, tag] = process.argv.slice(1);
  const blob = (d) => JSON.parse(fs.readFileSync(p.join(dir, "blobs", ...d.split(":"))));
  const m = JSON.parse(fs.readFileSync(p.join(dir, "index.json"))).manifests
    .find((x) => x.annotations?.["org.opencontainers.image.ref.name"] === tag);
  const c = blob(blob(m.digest).config.digest).config;
  console.log(c.WorkingDir); for (const e of c.Env) console.log("ENV " + e); for (const a of c.Entrypoint) console.log(a);
' "$OUT" "$TAG")
WORKDIR=${ENTRYPOINT[0]}
ENVS=()
ARGS=()
for x in "${ENTRYPOINT[@]:1}"; do
  case $x in "ENV "*) ENVS+=("${x#ENV }") ;; *) ARGS+=("$x") ;; esac
done

umoci unpack --image "$OUT:$TAG" "$BUNDLE" >/dev/null
ok "unpacked to a bundle ($(du -sb "$ROOTFS" | awk '{ printf "%.1f MB", $1 / 1e6 }'))"

bad=$(find "$ROOTFS" \( -name npm -o -name npx -o -name yarn -o -name yarnpkg -o -name corepack -o -name pnpm \) -print)
[ -z "$bad" ] || fail "package managers in the rootfs: $bad"
ok "no npm, npx, yarn or corepack in the rootfs"

UNSHARE=$(command -v unshare)
# The entrypoint as a runtime runs it: the config's env only, chroot into the rootfs and
# chdir to its working directory (unshare --root/--wd: coreutils chroot cannot chdir).
run() { env -i "${ENVS[@]}" "$UNSHARE" --root="$ROOTFS" --wd="$WORKDIR" "${ARGS[@]}" "$@"; }

out=$(run --version) || fail "prfence --version exited $?"
[ "$out" = "$VERSION" ] || fail "prfence --version printed '$out', expected '$VERSION'"
ok "prfence --version: $out (exit 0)"

# A loop device: a block device without Persistent Reservation support.
truncate -s 16M "$SCRATCH/disk.img"
LOOP=$(losetup -f --show "$SCRATCH/disk.img")
mount --bind /dev "$ROOTFS/dev" && MOUNTS+=("$ROOTFS/dev")
mount -t sysfs -o ro sysfs "$ROOTFS/sys" && MOUNTS+=("$ROOTFS/sys")
mount -t proc proc "$ROOTFS/proc" && MOUNTS+=("$ROOTFS/proc")

rc=0
run device capabilities "$LOOP" >"$SCRATCH/out" 2>"$SCRATCH/err" || rc=$?
err=$(cat "$SCRATCH/err")
[ "$rc" = 4 ] || fail "device capabilities $LOOP: exit $rc, expected 4 (unsupported); stdout: $(cat "$SCRATCH/out"); stderr: $err"
[ ! -s "$SCRATCH/out" ] || fail "device capabilities $LOOP printed on stdout: $(cat "$SCRATCH/out")"
[ "$(wc -l <"$SCRATCH/err")" -le 1 ] && [[ $err == "prfence: "*"not supported"* ]] ||
  fail "device capabilities $LOOP: stderr '$err', expected one line 'prfence: ...not supported...'"
ok "device capabilities $LOOP: exit 4, stderr: $err"

rc=0
json=$(run device capabilities --json "$LOOP" 2>"$SCRATCH/err") || rc=$?
[ "$rc" = 4 ] || fail "device capabilities --json $LOOP: exit $rc, expected 4; stdout: $json; stderr: $(cat "$SCRATCH/err")"
node -e '
  const j = JSON.parse(process.argv[1]);
  if (j.exitCode !== 4 || j.error?.kind !== "unsupported" || !/not supported/.test(j.error?.message))
    throw new Error("unexpected --json: " + process.argv[1]);
' "$json" || fail "device capabilities --json $LOOP printed: $json"
ok "device capabilities --json $LOOP: exit 4, $json"

echo "image-smoke: passed in $(($(date +%s) - T0)) s"
