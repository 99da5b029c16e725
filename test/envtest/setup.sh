#!/usr/bin/env bash
# Builds (once) the real control plane for the integration tests, like
# controller-runtime's envtest assets: kube-apiserver, kube-controller-manager and
# kube-scheduler from the k8s.io/kubernetes Go module, etcd 3.5 from Debian. Cached under ~/.cache/prfence/bin; never in the repo.
# Prints the paths; idempotent and fast when cached.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test/envtest/versions.env
. "$here/versions.env"
# shellcheck source=scripts/lib/debian-private-apt.sh
. "$here/../../scripts/lib/debian-private-apt.sh"
bin="$PRFENCE_CACHE/bin"
mkdir -p "$bin"
t0=$(date +%s)

# --- kube-apiserver, kube-controller-manager, kube-scheduler ------------------
# Each is built as a dependency of a scratch module (the k8s.io/kubernetes module cannot be
# `go install`ed): its main package calls the component's own cobra command.
build_component() {
  local name=$1 ctor=$2
  local out="$bin/$name-v$KUBE_VERSION"
  [ -x "$out" ] && return 0
  command -v go >/dev/null || { echo "setup: Go is required to build $name" >&2; exit 1; }
  local work="$PRFENCE_CACHE/build/$name-v$KUBE_VERSION"
  mkdir -p "$work"
  export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with
  # ./staging/...; a dependent module must replace each with its published version.
  local gomod staging_ver
  gomod=$(cd "$work" && go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  staging_ver="v0.${KUBE_VERSION#1.}"
  {
    echo "module prfence.local/$name"
    echo
    grep -E '^go [0-9]' "$gomod"
    grep -E '^godebug ' "$gomod" || true
    echo
    echo "require k8s.io/kubernetes v$KUBE_VERSION"
    echo
    grep -E '=> ./staging/' "$gomod" | sed -E "s#^[[:space:]]*(replace[[:space:]]+)?(k8s.io/[^ ]+) => .*#replace \2 => \2 $staging_ver#"
  } >"$work/go.mod"
  cat >"$work/main.go" <<GO
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/$name/app"
)

func main() { os.Exit(cli.Run(app.$ctor())) }
GO
  (cd "$work" && go mod tidy >/dev/null 2>&1)
  local ld="-s -w" pkg minor
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=v$KUBE_VERSION -X $pkg.gitMajor=${KUBE_VERSION%%.*}"
    minor=${KUBE_VERSION#*.}; minor=${minor%%.*}
    ld="$ld -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "setup: building $name v$KUBE_VERSION (a few minutes on a cold cache)"
  (cd "$work" && go build -tags selinux,notest,grpcnotrace -trimpath -ldflags "$ld" -o "$out.tmp" .)
  mv "$out.tmp" "$out"
}
apiserver="$bin/kube-apiserver-v$KUBE_VERSION"
build_component kube-apiserver NewAPIServerCommand
# For the real-control-plane failover test (node lifecycle, attach/detach, StatefulSet, pod GC).
build_component kube-controller-manager NewControllerManagerCommand
build_component kube-scheduler NewSchedulerCommand

# --- etcd -------------------------------------------------------------------
etcd_link="$bin/etcd"
if [ ! -x "$etcd_link" ]; then
  private_apt_init "$ETCD_SUITE"
  dl="$PRFENCE_CACHE/build/etcd-deb"
  rm -rf "$dl" && mkdir -p "$dl"
  (cd "$dl" && private_apt "$ETCD_SUITE" apt-get download -qq etcd-server >/dev/null)
  deb=$(ls "$dl"/etcd-server_*.deb)
  ver=$(dpkg-deb -f "$deb" Version)
  dpkg-deb -x "$deb" "$dl/root"
  install -m 0755 "$dl/root/usr/bin/etcd" "$bin/etcd-$ver"
  ln -sf "etcd-$ver" "$etcd_link"
fi

echo "setup: kube-apiserver $("$apiserver" --version 2>/dev/null) at $apiserver"
for c in kube-controller-manager kube-scheduler; do
  echo "setup: $c $("$bin/$c-v$KUBE_VERSION" --version 2>/dev/null) at $bin/$c-v$KUBE_VERSION"
done
echo "setup: etcd $("$etcd_link" --version 2>/dev/null | head -1) at $etcd_link"
echo "setup: control plane ready in $(($(date +%s) - t0)) s"
