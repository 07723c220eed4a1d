#!/usr/bin/env bash
# ab.sh A B -- the cold 1 GiB GET through two outpost binaries, interleaved on this machine
# (ROUNDS rounds of RUNS cold runs each, A then B), to tell a change from run-to-run noise.
# Loopback only; needs what bench/run.sh installs (docker-registry, hyperfine, curl, python3).
#   git worktree add /tmp/old REV && (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target \
#     cargo build --release -p outpost --bin outpost)
#   bash bench/ab.sh /tmp/old-target/release/outpost target/release/outpost
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
A=$1 B=$2 ROUNDS=${ROUNDS:-3} RUNS=${RUNS:-5}
export BENCH_STATE=$(mktemp -d /tmp/ab.XXXX) UP_PORT=5400 OUTPOST_PORT=5401
S=$BENCH_STATE; CTL="bash $BENCH_DIR/ctl.sh"
cleanup() { $CTL stop-all || true; }
trap cleanup EXIT
rm -rf "$S"/a-*.json "$S"/b-*.json
$CTL outpost-config
cp "$A" "$S/a"; cp "$B" "$S/b"
$CTL upstream-start
read -r BIGM BIGL BIGSZ < <(python3 "$BENCH_DIR/push_image.py" "http://127.0.0.1:$UP_PORT" bench/big:1 1G --workdir "$S")
BLOBFILE=$S/upstream/data/docker/registry/v2/blobs/sha256/${BIGL:7:2}/${BIGL:7}/data
cat "$BLOBFILE" >/dev/null
for r in $(seq "$ROUNDS"); do
  for who in a b; do
    export OUTPOST_BIN=$S/$who
    hyperfine --style none --runs "$RUNS" --prepare "$CTL outpost-cold" --export-json "$S/$who-$r.json" "curl -sf -o /dev/null http://127.0.0.1:$OUTPOST_PORT/v2/bench/big/blobs/$BIGL" >/dev/null
    python3 -c "import json,sys; r=json.load(open('$S/$who-$r.json'))['results'][0]; print('$who round $r: median %.3f min %.3f max %.3f' % (r['median'], r['min'], r['max']))"
    $CTL outpost-stop
  done
done
