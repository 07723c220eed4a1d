#!/usr/bin/env bash
# tests/e2e.sh -- run outpost's end-to-end suite against real software on 127.0.0.1:
# Debian's docker-registry (Docker Distribution 2.8) as upstreams; skopeo, containerd (ctr),
# Docker Engine (docker.io) and curl as clients; tinyproxy as a site's HTTP proxy. Installs the
# Debian packages that are missing (needs root or sudo), builds the outpost binary, then runs
# tests/e2e*.rs one test at a time (the tests start daemons and ports).
#
# Usage: bash tests/e2e.sh [TEST-NAME-FILTER]     e.g. bash tests/e2e.sh offline
# Env:   CARGO_PROFILE_FLAGS (e.g. --release) is passed to both cargo commands.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(docker-registry skopeo containerd curl apache2-utils tinyproxy docker.io)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "e2e: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi

# containerd runs as a throw-away daemon inside the tests: that needs root.
if [ "$(id -u)" -ne 0 ]; then
  echo "e2e: warning: not root; the containerd scenarios need root and will fail" >&2
fi

# shellcheck disable=SC2086
cargo build ${CARGO_PROFILE_FLAGS:-} -p outpost --bin outpost
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
profile=debug
case "${CARGO_PROFILE_FLAGS:-}" in *--release*) profile=release ;; esac
export OUTPOST_BIN="$target_dir/$profile/outpost"
echo "e2e: outpost binary: $OUTPOST_BIN" >&2

# shellcheck disable=SC2086
exec cargo test ${CARGO_PROFILE_FLAGS:-} -p outpost-tests --features e2e --test e2e --test e2e_archive --test e2e_proxy --test e2e_referrers --test e2e_shared -- --test-threads=1 "$@"
