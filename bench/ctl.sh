#!/usr/bin/env bash
# ctl.sh -- start/stop the servers of the benchmark; sourced by run.sh and called by hyperfine's
# --prepare. Every server listens on 127.0.0.1 only, has a pid file under $BENCH_STATE and is
# stopped by that pid only.
#
# Usage: ctl.sh COMMAND     (environment: BENCH_STATE, UP_PORT, OUTPOST_PORT, PEER_PORT,
#                            NGINX_PORT, OUTPOST_BIN; run.sh exports them)
#   upstream-start | upstream-stop      docker-registry (Distribution 2.8), filesystem storage
#   outpost-config                      write $BENCH_STATE/outpost.yaml (the upstream as default registry)
#   outpost-start  | outpost-stop       outpost serve --config $BENCH_STATE/outpost.yaml
#   outpost-cold                        stop outpost, wipe its data dir, start it again
#   peer-start     | peer-stop          docker-registry in proxy mode in front of the upstream
#   peer-cold                           stop the peer, wipe its cache, start it again
#   nginx-start    | nginx-stop         nginx (sendfile, 1 worker) serving $BENCH_STATE/nginx-root
#   containerd-start | containerd-stop  a throw-away containerd (own root, state, socket)
#   ctr-clear                           remove every image and content blob from that containerd
#   stop-all                            stop everything above that is running
set -euo pipefail

S=${BENCH_STATE:?BENCH_STATE is not set (run bench/run.sh)}
UP_PORT=${UP_PORT:-5400}; OUTPOST_PORT=${OUTPOST_PORT:-5401}; PEER_PORT=${PEER_PORT:-5402}
NGINX_PORT=${NGINX_PORT:-5403}

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { echo "bench: ERROR: $*" >&2; exit 1; }

# ensure_pkgs PKG...: apt-get install the Debian packages that are missing (one apt-get update).
ensure_pkgs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >"$S/apt.log" 2>&1 \
    || { tail -20 "$S/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
}

# use_outpost_binary REPO: build outpost (release) from REPO unless OUTPOST_BIN names a binary,
# copy it into $S and export OUTPOST_BIN (that copy) and BIN_ORIGIN (where it came from).
use_outpost_binary() {
  local REPO=$1 TARGET_DIR
  BIN_ORIGIN="built by this run from $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo '?') plus any uncommitted changes"
  export BIN_ORIGIN
  if [ -n "${OUTPOST_BIN:-}" ]; then
    BIN_ORIGIN="given as OUTPOST_BIN=$OUTPOST_BIN${OUTPOST_REV:+ (built from $OUTPOST_REV)}"
    log "using the outpost binary $OUTPOST_BIN (OUTPOST_BIN)"
  else
    log "building outpost (release)"
    (cd "$REPO" && cargo build --release -q -p outpost --bin outpost) || die "cargo build --release -p outpost --bin outpost failed"
    TARGET_DIR=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    OUTPOST_BIN=$TARGET_DIR/release/outpost
  fi
  # a private copy: a rebuild during the run must not swap the binary under the benchmark
  cp "$OUTPOST_BIN" "$S/outpost-bin"
  export OUTPOST_BIN=$S/outpost-bin
}

# wait_port PORT [SECS]: wait until something accepts connections on 127.0.0.1:PORT.
wait_port() {
  local port=$1 secs=${2:-20} i
  for ((i = 0; i < secs * 100; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.01
  done
  return 1
}

# start_bg PIDFILE LOG CMD...: start CMD in its own session, output to LOG, pid to PIDFILE.
start_bg() {
  local pidfile=$1 out=$2; shift 2
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    die "already running: pid $(cat "$pidfile") from $pidfile"
  fi
  setsid "$@" >>"$out" 2>&1 </dev/null &
  echo $! >"$pidfile"
}

# stop_pid PIDFILE: TERM the pid in PIDFILE (that pid only), wait up to 10 s, then KILL.
stop_pid() {
  local pidfile=$1 pid i
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 1000; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.01; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$pidfile"
}

registry_config() { # registry_config DIR PORT [REMOTE_URL]
  cat <<YAML
version: 0.1
log: {level: info, formatter: text}
storage:
  filesystem: {rootdirectory: $1/data}
  delete: {enabled: true}
  cache: {blobdescriptor: inmemory}
  maintenance: {uploadpurging: {enabled: false}}
http:
  addr: 127.0.0.1:$2
YAML
  if [ -n "${3:-}" ]; then printf 'proxy:\n  remoteurl: %s\n' "$3"; fi
}

upstream_start() {
  local d=$S/upstream
  mkdir -p "$d/data"
  registry_config "$d" "$UP_PORT" >"$d/config.yml"
  # stdout of docker-registry is its combined-format access log (10th field: bytes sent)
  setsid docker-registry serve "$d/config.yml" >>"$d/access.log" 2>>"$d/registry.log" </dev/null &
  echo $! >"$d/pid"
  wait_port "$UP_PORT" || { tail -5 "$d/registry.log" >&2; die "the upstream did not start on 127.0.0.1:$UP_PORT"; }
}

peer_start() {
  local d=$S/peer
  mkdir -p "$d/data"
  registry_config "$d" "$PEER_PORT" "http://127.0.0.1:$UP_PORT" >"$d/config.yml"
  start_bg "$d/pid" "$d/registry.log" docker-registry serve "$d/config.yml"
  wait_port "$PEER_PORT" || { tail -5 "$d/registry.log" >&2; die "the peer did not start on 127.0.0.1:$PEER_PORT"; }
}

outpost_start() {
  local d=$S/outpost
  mkdir -p "$d"
  start_bg "$d/pid" "$d/outpost.log" "${OUTPOST_BIN:?}" serve --config "$S/outpost.yaml"
  wait_port "$OUTPOST_PORT" || { tail -5 "$d/outpost.log" >&2; die "outpost did not start on 127.0.0.1:$OUTPOST_PORT (log: $d/outpost.log)"; }
}

nginx_start() {
  local d=$S/nginx
  mkdir -p "$d/tmp"
  cat >"$d/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 1024; }
http {
  access_log $d/access.log;
  client_body_temp_path $d/tmp; proxy_temp_path $d/tmp; fastcgi_temp_path $d/tmp;
  uwsgi_temp_path $d/tmp; scgi_temp_path $d/tmp;
  default_type application/octet-stream;
  sendfile on; tcp_nopush on; keepalive_timeout 65;
  server { listen 127.0.0.1:$NGINX_PORT; root $S/nginx-root; }
}
CONF
  start_bg "$d/pid" "$d/stdout.log" nginx -p "$d" -c "$d/nginx.conf"
  wait_port "$NGINX_PORT" || { cat "$d/error.log" >&2; die "nginx did not start on 127.0.0.1:$NGINX_PORT"; }
}

CTRD=$S/containerd
ctr_() { ctr --address "$CTRD/containerd.sock" --namespace bench "$@"; }

containerd_start() {
  mkdir -p "$CTRD"
  cat >"$CTRD/config.toml" <<TOML
version = 2
root = "$CTRD/root"
state = "$CTRD/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$CTRD/containerd.sock"
[ttrpc]
  address = "$CTRD/containerd.sock.ttrpc"
[debug]
  address = "$CTRD/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CTRD/opt"
TOML
  start_bg "$CTRD/pid" "$CTRD/containerd.log" containerd --config "$CTRD/config.toml"
  local i
  for ((i = 0; i < 200; i++)); do ctr_ version >/dev/null 2>&1 && return 0; sleep 0.05; done
  tail -20 "$CTRD/containerd.log" >&2; die "containerd did not start"
}

ctr_clear() {
  ctr_ images ls -q 2>/dev/null | xargs -r -n1 ctr --address "$CTRD/containerd.sock" --namespace bench images rm --sync >/dev/null 2>&1 || true
  ctr_ content ls -q 2>/dev/null | xargs -r ctr --address "$CTRD/containerd.sock" --namespace bench content rm >/dev/null 2>&1 || true
}

stop_all() {
  set +e
  stop_pid "$CTRD/pid"
  grep -o " $CTRD/[^ ]*" /proc/mounts 2>/dev/null | sort -r | while read -r m; do umount "$m"; done
  stop_pid "$S/nginx/pid"
  stop_pid "$S/peer/pid"
  stop_pid "$S/outpost/pid"
  stop_pid "$S/outpost-1tag.pid" # run.sh's control outpost of the many-tags case
  stop_pid "$S/upstream/pid"
  return 0
}

# The bench's outpost configuration ($BENCH_STATE/outpost.yaml): requests without a registry
# host go to the upstream on loopback (loopback hosts are insecure registries: plain HTTP).
# minFree 0: the bench measures the cache, which on a nearly full disk (under 1 GiB free, the
# default reserve) would pass blobs through unstored.
outpost_config() {
  mkdir -p "$S"
  cat >"$S/outpost.yaml" <<YAML
outpost:
  listen: 127.0.0.1:$OUTPOST_PORT
  dataDir: $S/outpost/data
  defaultRegistry: 127.0.0.1:$UP_PORT
  cache:
    minFree: "0"
YAML
}

# For the scripts that source this file: on exit stop every server and remove $BENCH_STATE
# (unless KEEP=1); Ctrl-C exits 130 through the same path.
stop_all_on_exit() {
  trap 'set +e; stop_all; if [ "${KEEP:-0}" = 1 ]; then log "kept $S"; else rm -rf "$S"; fi' EXIT
  trap 'exit 130' INT TERM
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-}" in
    upstream-start) upstream_start ;;
    upstream-stop) stop_pid "$S/upstream/pid" ;;
    outpost-config) outpost_config ;;
    outpost-start) outpost_start ;;
    outpost-stop) stop_pid "$S/outpost/pid" ;;
    outpost-cold) stop_pid "$S/outpost/pid"; rm -rf "$S/outpost/data"; outpost_start ;;
    peer-start) peer_start ;;
    peer-stop) stop_pid "$S/peer/pid" ;;
    peer-cold) stop_pid "$S/peer/pid"; rm -rf "$S/peer/data"; peer_start ;;
    nginx-start) nginx_start ;;
    nginx-stop) stop_pid "$S/nginx/pid" ;;
    containerd-start) containerd_start ;;
    containerd-stop) stop_pid "$CTRD/pid" ;;
    ctr-clear) ctr_clear ;;
    stop-all) stop_all ;;
    *) sed -n '2,20p' "$0"; exit 2 ;;
  esac
fi
