#!/usr/bin/env bash
# Installs what the QEMU kernel suite needs (QEMU, busybox, open-iscsi for the guest's
# iSCSI initiator, multipath-tools and udev for the guest's multipathd, fence-agents for
# the device bench's fence_scsi comparison, ...) and fetches two Debian kernels as plain
# files (never installed): bookworm's newest 6.1 and sid's newest. Cached under
# ~/.cache/prfence/kernels/<version>/ (vmlinuz + modules tree, depmod'ed). Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib/debian-private-apt.sh
. "$here/../../scripts/lib/debian-private-apt.sh"
kdir="$PRFENCE_CACHE/kernels"
mkdir -p "$kdir"

need=()
for p in qemu-system-x86:qemu-system-x86_64 busybox-static:busybox cpio:cpio kmod:depmod xz-utils:xz sg3-utils:sg_persist dmsetup:dmsetup open-iscsi:iscsiadm udev:udevadm multipath-tools:multipathd fence-agents:fence_scsi; do
  command -v "${p#*:}" >/dev/null || need+=("${p%%:*}")
done
if [ ${#need[@]} -gt 0 ]; then
  [ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ] || apt-get update -qq
  # fence-agents (bench only: fence_scsi) pulls python3 libraries of its cloud agents
  # (boto3, googleapi, ...): bookworm, --no-install-recommends, 29 packages, 8.5 MB download,
  # 97 MB installed, about 8 s.
  # open-iscsi and multipath-tools come with services: none is started here (a policy-rc.d
  # that refuses, for the install only, unless the machine has one already).
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Installed here for the guest only: this machine's own disks are not to be taken into
  # multipath maps at its next boot (the package enables multipathd on a systemd host).
  if [[ " ${need[*]} " == *" multipath-tools "* ]] && command -v systemctl >/dev/null; then
    systemctl disable --quiet multipathd.service multipathd.socket 2>/dev/null || true
  fi
fi
# LIO stores PR metadata under /var/target/pr; the guest mounts a tmpfs there (needs the directory).
# open-iscsi runs in the guest from this root (read-only 9p): its state directories are
# tmpfs mount points there. Nothing iSCSI runs on this machine itself. The same for
# multipath-tools (test/kernel/multipath.test.ts): its configuration (conf.d) and state
# (wwids, bindings) live under /etc/multipath, a tmpfs in the guest (no /etc/multipath.conf:
# the built-in defaults and the test's conf.d file).
mkdir -p /var/target /etc/iscsi /var/lib/iscsi /etc/multipath

extract() { # deb... -> dir
  local dir=$1
  shift
  mkdir -p "$dir.tmp"
  for d in "$@"; do dpkg-deb -x "$d" "$dir.tmp"; done
  # sid ships modules as .ko.xz; the busybox initramfs loads plain .ko.
  find "$dir.tmp/lib/modules" "$dir.tmp/usr/lib/modules" -name '*.ko.xz' -exec xz -d {} + 2>/dev/null || true
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
}

finish() { # dir ver
  local dir=$1 ver=$2 mods
  mods=$(find "$dir" -maxdepth 4 -type d -path "*/modules/$ver" | head -1)
  [ -n "$mods" ] || { echo "setup: no modules for $ver in $dir" >&2; exit 1; }
  # depmod wants <base>/lib/modules/<ver>
  if [ "$mods" != "$dir/lib/modules/$ver" ]; then mkdir -p "$dir/lib/modules" && ln -sfn "$mods" "$dir/lib/modules/$ver"; fi
  depmod -b "$dir" "$ver"
  # bookworm: /boot/vmlinuz-<ver>; sid: /usr/lib/modules/<ver>/vmlinuz
  local img
  img=$(find "$dir/boot" "$mods" -maxdepth 1 \( -name "vmlinuz-$ver" -o -name vmlinuz \) 2>/dev/null | head -1 || true)
  [ -n "$img" ] || { echo "setup: no vmlinuz for $ver" >&2; exit 1; }
  ln -sfn "$img" "$dir/vmlinuz"
  echo "$ver" >"$dir/version"
}

# bookworm 6.1, from the machine's own sources.
bw_pkg=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | awk '{print $1}' | sort -V | tail -1)
if [ -z "$bw_pkg" ]; then apt-get update -qq; bw_pkg=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | awk '{print $1}' | sort -V | tail -1); fi
bw_ver=${bw_pkg#linux-image-}
if [ ! -f "$kdir/$bw_ver/version" ]; then
  dl=$(mktemp -d)
  (cd "$dl" && apt-get download -qq "$bw_pkg" 2>/dev/null)
  extract "$kdir/$bw_ver" "$dl"/*.deb
  finish "$kdir/$bw_ver" "$bw_ver"
  rm -rf "$dl"
fi

# sid's newest: resolve linux-image-amd64's dependency now, never a pinned version.
private_apt_init sid
sid_img=$(private_apt sid apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
sid_ver=${sid_img#linux-image-}
if [ ! -f "$kdir/$sid_ver/version" ]; then
  dl=$(mktemp -d)
  pkgs=$(private_apt sid apt-cache depends "$sid_img" 2>/dev/null | awk '/Depends: linux-(binary|modules)-/{print $2}')
  [ -n "$pkgs" ] || pkgs=$sid_img
  # shellcheck disable=SC2086
  (cd "$dl" && private_apt sid apt-get download -qq $pkgs 2>/dev/null)
  extract "$kdir/$sid_ver" "$dl"/*.deb
  finish "$kdir/$sid_ver" "$sid_ver"
  rm -rf "$dl"
fi
ls -1 "$kdir" | sed 's/^/setup: kernel /'
