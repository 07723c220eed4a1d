#!/usr/bin/env bash
# cold.sh -- the cold blob GET alone, for profiling changes to the fill path: one upstream
# (Distribution) with a BIG blob, then, interleaved run by run so load drifts hit all alike,
# a direct GET, a direct GET hashed by the client (the "receive + hash" bound), a cold GET
# through each outpost binary given, and a cold GET through the peer (Distribution's proxy).
# 127.0.0.1 only. Prints one line per case: median, min, max (seconds) over RUNS.
#
# Usage: bash bench/cold.sh BIN [BIN...]     e.g. bash bench/cold.sh /tmp/outpost-before target/release/outpost
# Env:   RUNS [5]  BIG [1G]  HASHED=1 (the client hashes every body: openssl dgst -sha256)
#        DROP=1 (root: drop the page cache before every GET, then re-read the upstream's blob)
#        UP_PORT [5500] OUTPOST_PORT [5501] PEER_PORT [5502]
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || { sed -n '2,11p' "$0"; exit 2; }
export RUNS=${RUNS:-5} BIG=${BIG:-1G} HASHED=${HASHED:-0} DROP=${DROP:-0}
export UP_PORT=${UP_PORT:-5500} OUTPOST_PORT=${OUTPOST_PORT:-5501} PEER_PORT=${PEER_PORT:-5502}
export BENCH_STATE=${BENCH_STATE:-$(mktemp -d /tmp/outpost-cold.XXXXXX)}
S=$BENCH_STATE
# shellcheck source=ctl.sh
. "$BENCH_DIR/ctl.sh"
stop_all_on_exit
ensure_pkgs docker-registry curl python3 openssl

upstream_start
read -r _ BIGL _ < <(python3 "$BENCH_DIR/push_image.py" "http://127.0.0.1:$UP_PORT" bench/big:1 "$BIG" --workdir "$S")
BLOBP=/v2/bench/big/blobs/$BIGL
BLOBF=$S/upstream/data/docker/registry/v2/blobs/sha256/${BIGL:7:2}/${BIGL:7}/data
cat "$BLOBF" >/dev/null
outpost_config

# get URL: seconds of one GET (the body hashed and checked when HASHED=1)
get() {
  local t0 t1 got
  # Start from a quiet disk: the previous case's writes (outpost's commit fsyncs a 1 GiB file)
  # would otherwise land on the next case's clock.
  sync
  if [ "$DROP" = 1 ]; then # and from the same page cache: only the upstream's blob in it
    echo 3 >/proc/sys/vm/drop_caches
    cat "$BLOBF" >/dev/null
  fi
  t0=$(date +%s.%N)
  if [ "$HASHED" = 1 ]; then
    got=$(curl -sf "$1" | openssl dgst -sha256 -r | awk '{print "sha256:"$1}')
    [ "$got" = "$BIGL" ] || die "wrong body from $1: $got"
  else
    curl -sf -o /dev/null "$1" || die "GET $1 failed"
  fi
  t1=$(date +%s.%N)
  echo "$t0 $t1" | awk '{printf "%.3f\n", $2 - $1}'
}

declare -A times
for r in $(seq "$RUNS"); do
  times[direct]+="$(get "http://127.0.0.1:$UP_PORT$BLOBP") "
  i=0
  for bin in "$@"; do
    i=$((i + 1))
    export OUTPOST_BIN=$bin
    stop_pid "$S/outpost/pid"; rm -rf "$S/outpost/data"; outpost_start
    times[outpost$i]+="$(get "http://127.0.0.1:$OUTPOST_PORT$BLOBP") "
  done
  stop_pid "$S/peer/pid"; rm -rf "$S/peer/data"; peer_start
  times[peer]+="$(get "http://127.0.0.1:$PEER_PORT$BLOBP") "
  # The peer downloads the blob a second time after answering; stopped here, that download
  # does not run into the next round's GETs.
  stop_pid "$S/peer/pid"
  log "run $r done: ${times[*]}"
done

stats() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END{m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "median %.3f  min %.3f  max %.3f  (%d runs)\n", m, a[1], a[NR], NR}'; }
echo "cold GET of $BIG ($BIGL), hashed by the client: $HASHED; load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-40s %s\n' "direct" "$(echo "${times[direct]}" | stats)"
i=0
for bin in "$@"; do
  i=$((i + 1))
  printf '%-40s %s\n' "outpost $bin" "$(echo "${times[outpost$i]}" | stats)"
done
printf '%-40s %s\n' "peer (Distribution proxy)" "$(echo "${times[peer]}" | stats)"
