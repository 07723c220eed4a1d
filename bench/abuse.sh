#!/usr/bin/env bash
# abuse.sh -- hostile clients against outpost on 127.0.0.1, and how a well-behaved client fares
# meanwhile: idle sockets, HTTP/2 preface-only, partial request heads with reconnects, a
# 3,000-connection burst, h2load -c 200 -m 100 on a cached blob, 1,000 keep-alive clients.
# Prints, for each, the good client's latency and outpost's peak RSS and file descriptors
# (bench/abuse.py says how each probe works). Bounded: SECS per probe, ~7 probes.
#
# Usage: bash bench/abuse.sh [RESULTS.md]    (default: bench/results/abuse-<UTC time>.md)
# Needs root for apt-get. Env: SECS [30] per probe, ONLY [all probes] (comma-separated),
#   CONNS [1100] held connections, BURST [3000], OUTPOST_BIN (skip the release build),
#   UP_PORT [5410] OUTPOST_PORT [5411], BENCH_STATE [a new /tmp/outpost-abuse.XXXXXX], KEEP=1.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
export UP_PORT=${UP_PORT:-5410} OUTPOST_PORT=${OUTPOST_PORT:-5411}
export BENCH_STATE=${BENCH_STATE:-$(mktemp -d /tmp/outpost-abuse.XXXXXX)}
SECS=${SECS:-30} CONNS=${CONNS:-1100} BURST=${BURST:-3000}
ONLY=${ONLY:-none,idle,h2-preface,partial-head,burst,h2load,keepalive}
RESULTS=${1:-$BENCH_DIR/results/abuse-$(date -u +%Y-%m-%dT%H%MZ).md}
S=$BENCH_STATE
mkdir -p "$S" "$(dirname "$RESULTS")"
# shellcheck source=ctl.sh
. "$BENCH_DIR/ctl.sh"

stop_all_on_exit

ensure_pkgs docker-registry nghttp2-client wrk curl python3
use_outpost_binary "$REPO"
# the attackers hold thousands of sockets; outpost raises its own limit
ulimit -n "$(ulimit -Hn)"

outpost_config
log "starting the upstream on 127.0.0.1:$UP_PORT, pushing a 4 KiB and a 1 MiB image"
upstream_start
read -r SMALLM _ _ < <(python3 "$BENCH_DIR/push_image.py" "http://127.0.0.1:$UP_PORT" bench/small:1 4K --workdir "$S")
read -r _ MBL _ < <(python3 "$BENCH_DIR/push_image.py" "http://127.0.0.1:$UP_PORT" bench/mb:1 1M --workdir "$S")
outpost_start
OP=http://127.0.0.1:$OUTPOST_PORT
MANIFEST=/v2/bench/small/manifests/1 BLOB=/v2/bench/mb/blobs/$MBL
# warm the cache: both are served from outpost's store from now on
curl -sf -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$OP$MANIFEST" || die "outpost did not serve $MANIFEST"
got=$(curl -sf "$OP$BLOB" | sha256sum | awk '{print "sha256:"$1}')
[ "$got" = "$MBL" ] || die "outpost served $BLOB with digest $got"

log "probes: $ONLY, ${SECS}s each"
{
  echo "# outpost under hostile clients, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "- outpost: $("$OUTPOST_BIN" --version), binary $BIN_ORIGIN"
  echo "- machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- command: \`SECS=$SECS CONNS=$CONNS BURST=$BURST bash bench/abuse.sh\`; attackers from 127.0.0.2 (h2load and wrk: 127.0.0.1), the good client from 127.0.0.3"
  echo "- good client: curl GET of the cached manifest ($SMALLM) on a new connection every 200 ms; blob: 1 MiB $MBL"
  echo
  python3 "$BENCH_DIR/abuse.py" --url "$OP" --pid "$(cat "$S/outpost/pid")" --manifest "$MANIFEST" \
    --blob "$BLOB" --secs "$SECS" --conns "$CONNS" --burst "$BURST" --only "$ONLY"
  echo
  echo "- outpost after the probes: VmHWM $(awk '/VmHWM/{printf "%.1f MiB", $2/1024}' "/proc/$(cat "$S/outpost/pid")/status")"
} | tee "$RESULTS"
kill -0 "$(cat "$S/outpost/pid")" || die "outpost is no longer running (log: $S/outpost/outpost.log)"
log "results in $RESULTS"
