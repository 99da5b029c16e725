#!/usr/bin/env bash
# Fetches the newest kernel UAPI headers (Debian sid's linux-libc-dev) into
# ~/.cache/prfence/headers/sid, without touching the machine's apt sources, so the ABI
# test can check struct layouts of ioctls newer than the machine's own headers
# (IOC_PR_READ_KEYS / IOC_PR_READ_RESERVATION). Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib/debian-private-apt.sh
. "$here/../../scripts/lib/debian-private-apt.sh"
dest="$PRFENCE_CACHE/headers/sid"
if [ -f "$dest/usr/include/linux/pr.h" ] && grep -q IOC_PR_READ_KEYS "$dest/usr/include/linux/pr.h"; then
  echo "headers: cached at $dest"
  exit 0
fi
private_apt_init sid
dl="$PRFENCE_CACHE/build/libc-dev"
rm -rf "$dl" && mkdir -p "$dl"
(cd "$dl" && private_apt sid apt-get download -qq linux-libc-dev >/dev/null)
rm -rf "$dest" && mkdir -p "$dest"
dpkg-deb -x "$dl"/linux-libc-dev_*.deb "$dest"
echo "headers: $(dpkg-deb -f "$dl"/linux-libc-dev_*.deb Version) at $dest"
