#!/usr/bin/env bash
# compose/up.sh -- the docker-compose development stack for real, with no internet: a throw-away
# Docker Engine, base images made from Debian packages, `docker-compose up --build`, and the
# checks the README's tour promises. Then `docker-compose down -v` and the engine is stopped.
#
#   sudo bash compose/up.sh            (needs root: dockerd; installs nothing, see below)
#
# What it does:
#  1. starts `dockerd` with its own --data-root, --exec-root, --pidfile and socket under a temp
#     dir (stopped by its pid on exit, also on failure), no iptables;
#  2. makes the images the stack names from local sources only: debian:bookworm-slim with
#     mmdebstrap (from the Debian mirror apt uses), registry:2 from Debian's docker-registry and
#     curlimages/curl from Debian's curl (compose/images/), and outpost's image around a binary
#     built on the host (compose/Dockerfile.prebuilt, compose/offline.yml), as rust:1-bookworm
#     cannot be pulled;
#  3. `docker-compose up -d --build`, then checks: the seed pushed; `curl
#     localhost:5000/v2/quay.io/example/app/manifests/v1` answers 200 through outpost from the
#     authenticated `external` registry; the layer's bytes hash to its digest; after `docker-compose
#     restart outpost`, with `external` stopped, the same content is served from the named volume;
#     the process in the container runs as the non-root user; prints the image's size.
#
# Needs: docker.io, docker-compose, mmdebstrap, curl, python3 (Debian packages; .ci/run installs
# them). Env: OUTPOST_BIN (a built outpost binary; default: `cargo build --release --locked`),
# KEEP=1 (keep the temp dir), COMPOSE_STATE (the temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

log() { echo "compose: $*" >&2; }
fail() { echo "compose: FAILED: $*" >&2; exit 1; }

for tool in dockerd:docker.io docker-compose:docker-compose mmdebstrap:mmdebstrap curl:curl python3:python3; do
  command -v "${tool%%:*}" >/dev/null 2>&1 \
    || fail "${tool%%:*} is missing; install it with: apt-get install -y ${tool#*:}"
done
[ "$(id -u)" -eq 0 ] || fail "dockerd needs root; run with sudo"
# Debian's client, whatever else is on PATH.
docker_bin=/usr/bin/docker
[ -x "$docker_bin" ] || docker_bin=$(command -v docker)

state=${COMPOSE_STATE:-$(mktemp -d /tmp/outpost-compose.XXXXXX)}
mkdir -p "$state"
export DOCKER_HOST="unix://$state/docker.sock"
compose=(docker-compose -p outpost-dev -f docker-compose.yml -f compose/offline.yml)
docker() { "$docker_bin" "$@"; }

cleanup() {
  set +e
  if [ -S "$state/docker.sock" ]; then
    "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1
  fi
  if [ -f "$state/dockerd.pid" ]; then
    pid=$(cat "$state/dockerd.pid")
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null
  fi
  # What dockerd may leave mounted below its exec root (network namespaces).
  awk -v s="$state/" 'index($2, s) == 1 { print $2 }' /proc/mounts | sort -r \
    | while read -r mount; do umount -l "$mount"; done
  rm -f "$repo/compose/prebuilt/outpost"
  if [ "${KEEP:-0}" = 1 ]; then log "kept $state"; else rm -rf "$state"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. The engine.
log "starting dockerd in $state"
dockerd --data-root "$state/data" --exec-root "$state/exec" --pidfile "$state/dockerd.pid" \
  -H "$DOCKER_HOST" --iptables=false \
  --containerd-namespace outpost-compose --containerd-plugins-namespace outpost-compose-plugins \
  >"$state/dockerd.log" 2>&1 &
for _ in $(seq 1 120); do
  docker info >/dev/null 2>&1 && break
  if ! kill -0 $! 2>/dev/null; then
    tail -20 "$state/dockerd.log" >&2
    fail "dockerd exited: this machine cannot run Docker Engine (overlay file systems, cgroups and root are needed; its log is above)"
  fi
  sleep 0.5
done
docker info >/dev/null 2>&1 || { tail -20 "$state/dockerd.log" >&2; fail "dockerd did not answer within 60 s"; }

# 2. Images from local sources.
started=$SECONDS
log "debian:bookworm-slim from mmdebstrap"
mmdebstrap --quiet --variant=minbase --include=ca-certificates \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  bookworm - | docker import - debian:bookworm-slim >/dev/null
log "registry:2 and curlimages/curl from Debian packages"
docker build -q --network host -t registry:2 -f compose/images/registry.Dockerfile compose/images >/dev/null
docker build -q --network host -t curlimages/curl:8.10.1 -f compose/images/curl.Dockerfile compose/images >/dev/null
bin=${OUTPOST_BIN:-}
if [ -z "$bin" ]; then
  log "building outpost (release)"
  cargo build --release --locked -p outpost --bin outpost
  bin="${CARGO_TARGET_DIR:-target}/release/outpost"
fi
mkdir -p compose/prebuilt
cp "$bin" compose/prebuilt/outpost
log "images ready in $((SECONDS - started)) s"

# 3. The stack, and what the tour promises.
"${compose[@]}" up -d --build
seed=$("${compose[@]}" ps -q seed)
[ "$(docker wait "$seed")" = 0 ] || { docker logs "$seed" >&2; fail "the seed service failed"; }
log "seed pushed $(docker logs "$seed" 2>/dev/null | tail -1)"

get() { curl -s -o "$2" -w '%{http_code}' -H "Accept: application/vnd.oci.image.manifest.v1+json" "http://127.0.0.1:5000$1"; }
wait_ready() {
  for _ in $(seq 1 60); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:5000/v2/)" = 200 ] && return 0
    sleep 0.5
  done
  "${compose[@]}" logs outpost >&2
  fail "outpost did not answer /v2/ within 30 s"
}
check_pull() {
  local what=$1 status digest layer
  status=$(get /v2/quay.io/example/app/manifests/v1 "$state/manifest.json")
  [ "$status" = 200 ] || { cat "$state/manifest.json" >&2; fail "$what: the manifest answered $status"; }
  digest="sha256:$(sha256sum "$state/manifest.json" | cut -d' ' -f1)"
  layer=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["layers"][0]["digest"])' "$state/manifest.json")
  status=$(get "/v2/quay.io/example/app/blobs/$layer" "$state/layer")
  [ "$status" = 200 ] || fail "$what: the layer answered $status"
  [ "sha256:$(sha256sum "$state/layer" | cut -d' ' -f1)" = "$layer" ] \
    || fail "$what: the layer's bytes do not hash to $layer"
  log "$what: manifest $digest and layer $layer served, digests verified"
}
wait_ready
check_pull "through outpost from the authenticated external registry"

user=$("${compose[@]}" exec -T outpost sh -c 'id -u; id -un' | tr '\n' ' ')
[ "$user" = "10001 outpost " ] || fail "outpost runs as '$user', not the non-root user outpost (10001)"
log "outpost runs as uid 10001 (outpost)"

"${compose[@]}" stop external >/dev/null 2>&1
"${compose[@]}" restart outpost >/dev/null 2>&1
wait_ready
check_pull "after a restart, with external stopped (from the outpost-data volume)"

size=$(docker image inspect outpost:dev --format '{{.Size}}')
log "image outpost:dev: $((size / 1024 / 1024)) MiB (binary $(( $(stat -c %s "$bin") / 1024 / 1024 )) MiB)"
log "all checks passed"
