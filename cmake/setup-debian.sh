#!/usr/bin/env bash
# Installs what coproc needs from Debian's packages, only when something is
# missing. Catch2 3 lives in bookworm-backports: the suite is added by reusing
# the URI of the machine's own Debian source, so no mirror host is written here.
set -euo pipefail

need=(g++ cmake ninja-build pkg-config libasio-dev liburing-dev libcereal-dev
      libcatch2-dev python3 procps util-linux libhttp-parser-dev openmpi-bin libopenmpi-dev)
[ $# -gt 0 ] && need+=("$@")

missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"

debian_uri() {
  local f
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    [ -f "$f" ] || continue
    awk '/^URIs:/{print $2; exit} /^deb /{print $2; exit}' "$f" && return
  done
}

add_backports() {
  grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ && return
  local uri
  uri=$(debian_uri)
  [ -n "$uri" ] || { echo "setup: no Debian source found to add bookworm-backports" >&2; exit 1; }
  echo "deb $uri bookworm-backports main" | $sudo tee /etc/apt/sources.list.d/coproc-backports.list >/dev/null
}

echo "setup: installing ${missing[*]}" >&2
add_backports
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
