# shellcheck shell=bash
# Fetches packages from another Debian suite (trixie, sid) WITHOUT touching the
# machine's own apt sources: a private sources list, lists dir and cache under
# $PRFENCE_CACHE/apt-<suite>. Used for the sid kernels and for etcd 3.5.
#   private_apt <suite> <apt-get/apt-cache args...>
: "${PRFENCE_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/prfence}"

private_apt_dir() { echo "$PRFENCE_CACHE/apt-$1"; }

private_apt_init() {
  local suite=$1 dir
  dir=$(private_apt_dir "$suite")
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
  if [ ! -f "$dir/sources.list" ]; then
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" >"$dir/sources.list"
  fi
  # Refresh the lists at most once a day.
  if [ -z "$(find "$dir/lists" -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
    private_apt "$suite" apt-get update -qq >/dev/null
  fi
}

private_apt() {
  local suite=$1 dir cmd=$2
  shift 2
  dir=$(private_apt_dir "$suite")
  "$cmd" -o Dir::Etc::sourcelist="$dir/sources.list" -o Dir::Etc::sourceparts=- \
    -o Dir::State::Lists="$dir/lists" -o Dir::Cache="$dir/cache" \
    -o APT::Sandbox::User=root -o Debug::NoLocking=1 "$@"
}
