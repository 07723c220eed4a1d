#!/usr/bin/env bash
# fanout.sh -- the concurrent-clients case alone, for measuring what a fill holds in memory:
# one upstream (Distribution) with a MID blob, then, interleaved run by run, CLIENTS clients
# (curl | openssl dgst) on that cold blob through each outpost binary given, each from an empty
# data dir. Per run: wall time, bodies with the right digest, the process's VmHWM at the end,
# and the largest RssAnon and RssFile seen by sampling /proc every 20 ms (VmHWM = the peak of
# their sum, which the sampling can miss). 127.0.0.1 only.
#
# Usage: bash bench/fanout.sh BIN [BIN...]   e.g. bash bench/fanout.sh /tmp/outpost-before target/release/outpost
# Env:   RUNS [5]  MID [256M]  CLIENTS [20]  UP_PORT [5500] OUTPOST_PORT [5501] PEER_PORT [5502]
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || { sed -n '2,10p' "$0"; exit 2; }
export RUNS=${RUNS:-5} MID=${MID:-256M} CLIENTS=${CLIENTS:-20}
export UP_PORT=${UP_PORT:-5500} OUTPOST_PORT=${OUTPOST_PORT:-5501} PEER_PORT=${PEER_PORT:-5502}
export BENCH_STATE=${BENCH_STATE:-$(mktemp -d /tmp/outpost-fanout.XXXXXX)}
S=$BENCH_STATE
# shellcheck source=ctl.sh
. "$BENCH_DIR/ctl.sh"
stop_all_on_exit
ensure_pkgs docker-registry curl python3 openssl
upstream_start
read -r _ MIDL _ < <(python3 "$BENCH_DIR/push_image.py" "http://127.0.0.1:$UP_PORT" bench/mid:1 "$MID" --workdir "$S")
URL=http://127.0.0.1:$OUTPOST_PORT/v2/bench/mid/blobs/$MIDL
outpost_config

kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
# sample PID: the largest RssAnon and RssFile (KiB) until $S/stop exists, written to $S/peak
sample() {
  local anon=0 file=0 a f
  while [ ! -e "$S/stop" ] && a=$(kib "$1" RssAnon) && f=$(kib "$1" RssFile); do
    [ "$a" -gt "$anon" ] && anon=$a
    [ "$f" -gt "$file" ] && file=$f
    echo "$anon $file" >"$S/peak"
    sleep 0.02
  done
}

declare -A lines
bad=0
for r in $(seq "$RUNS"); do
  i=0
  for bin in "$@"; do
    i=$((i + 1))
    export OUTPOST_BIN=$bin
    stop_pid "$S/outpost/pid"; rm -rf "$S/outpost/data"; outpost_start
    pid=$(cat "$S/outpost/pid")
    rm -f "$S/stop" "$S/peak" "$S"/fan-*.sum
    sample "$pid" &
    sampler=$!
    t0=$(date +%s.%N)
    pids=()
    for c in $(seq "$CLIENTS"); do
      ( curl -sf "$URL" | openssl dgst -sha256 -r | awk '{print "sha256:"$1}' >"$S/fan-$c.sum" ) &
      pids+=($!)
    done
    wait "${pids[@]}" || true
    t1=$(date +%s.%N)
    touch "$S/stop"; wait "$sampler" || true
    ok=$(cat "$S"/fan-*.sum | grep -c "^$MIDL\$" || true)
    read -r anon file <"$S/peak"
    lines[$i]+="$(awk -v t0="$t0" -v t1="$t1" -v h="$(kib "$pid" VmHWM)" -v a="$anon" -v f="$file" -v ok="$ok" -v n="$CLIENTS" \
      'BEGIN {printf "wall %.2f s  right bodies %d/%d  VmHWM %.1f MiB  peak RssAnon %.1f MiB  RssFile %.1f MiB", t1 - t0, ok, n, h / 1024, a / 1024, f / 1024}')"$'\n'
    [ "$ok" = "$CLIENTS" ] || { bad=1; log "run $r, $bin: only $ok of $CLIENTS bodies had the right digest"; }
  done
  log "run $r done"
done

echo "$CLIENTS clients on one cold $MID blob ($MIDL); load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
i=0
for bin in "$@"; do
  i=$((i + 1))
  echo "outpost $bin"
  printf '%s' "${lines[$i]}" | sed 's/^/  /'
  printf '%s' "${lines[$i]}" | awk '{print $8}' | sort -n |
    awk '{a[NR]=$1} END{m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "  VmHWM median %.1f MiB, min %.1f, max %.1f (%d runs)\n", m, a[1], a[NR], NR}'
done
[ "$bad" = 0 ] || die "some bodies had the wrong digest (see above)"
