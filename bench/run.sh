#!/usr/bin/env bash
# run.sh -- outpost's benchmark: outpost against nginx, the upstream itself and Docker
# Distribution's proxy mode (the peer), side by side in one run, on 127.0.0.1 only.
#
# Usage: bash bench/run.sh [RESULTS.md]        (default: bench/results-<UTC date>.md)
# Needs root for apt-get and containerd. See BENCHMARKS.md for what each case measures.
#
# Env knobs (defaults in brackets; a quick mode: RUNS=2 BIG=64M MID=16M CLIENTS=5 WRK_SECS=2):
#   RUNS [5]          timed runs per case (hyperfine --runs, or rounds of the interleaved cold
#                     cases; 20-client case: runs of outpost)
#   PEER_FANOUT_RUNS [1]  runs of the 20-client case through the peer (~13 s each)
#   BIG [1G]          layer size for the warm/cold GET and the skopeo/ctr pulls
#   MID [256M]        blob size of the concurrent-clients case
#   CLIENTS [20]      concurrent clients
#   WRK_SECS [10]     seconds per manifest load run; WRK_CONNS [16] connections
#   STARTUP_BLOBS [100000; 2000 when BIG is under 1 GiB]  blobs in the data dir of the start-up case
#   STARTUP_TAGS [10000; 200 when BIG is under 1 GiB]  tags stored in it (through outpost) for
#                     the start-up, idle RSS and many-tags manifest cases
#   RANGES [4]        concurrent Range GETs of the cold BIG blob (containerd's per-layer downloads)
#   IDLE_SECS [5; 2 when BIG is under 1 GiB]  idle time before reading outpost's RSS on that data dir
#   TAG_ROUNDS [5; 1 when BIG is under 1 GiB]  rounds of the many-tags manifest load (both servers
#                     started afresh, then 4 wrk runs)
#   SKIP_CTR=1 / SKIP_SKOPEO=1  leave out the end-to-end pulls
#   OUTPOST_BIN       use this outpost binary instead of building one (`cargo build --release`);
#                     OUTPOST_REV: the commit it was built from, for the report
#   UP_PORT [5400] OUTPOST_PORT [5401] PEER_PORT [5402] NGINX_PORT [5403]
#   TAGS_PORT [5404]  a second outpost (one tag stored), the control of the many-tags case
#   BENCH_STATE [a new /tmp/outpost-bench.XXXXXX]  state dir (removed at the end unless KEEP=1)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
export RUNS=${RUNS:-5} PEER_FANOUT_RUNS=${PEER_FANOUT_RUNS:-1} BIG=${BIG:-1G} MID=${MID:-256M}
export CLIENTS=${CLIENTS:-20} WRK_SECS=${WRK_SECS:-10} WRK_CONNS=${WRK_CONNS:-16}
# a BIG under 1 GiB is a quick run: the data dir of the start-up case is kept small too
case $BIG in *[GgTt]) QUICK=0 ;; *) QUICK=1 ;; esac
if [ $QUICK = 1 ]; then
  export STARTUP_BLOBS=${STARTUP_BLOBS:-2000} STARTUP_TAGS=${STARTUP_TAGS:-200}
else
  export STARTUP_BLOBS=${STARTUP_BLOBS:-100000} STARTUP_TAGS=${STARTUP_TAGS:-10000}
fi
export RANGES=${RANGES:-4} IDLE_SECS=${IDLE_SECS:-$((QUICK ? 2 : 5))} TAG_ROUNDS=${TAG_ROUNDS:-$((QUICK ? 1 : 5))}
export UP_PORT=${UP_PORT:-5400} OUTPOST_PORT=${OUTPOST_PORT:-5401} PEER_PORT=${PEER_PORT:-5402}
export NGINX_PORT=${NGINX_PORT:-5403} TAGS_PORT=${TAGS_PORT:-5404}
export BENCH_STATE=${BENCH_STATE:-$(mktemp -d /tmp/outpost-bench.XXXXXX)}
RESULTS=${1:-$BENCH_DIR/results-$(date -u +%Y%m%dT%H%M%SZ).md}
S=$BENCH_STATE
mkdir -p "$S" "$(dirname "$RESULTS")"
[ -w "$(dirname "$RESULTS")" ] || { echo "bench: ERROR: cannot write $RESULTS" >&2; exit 1; }
chmod 755 "$S" # nginx's worker runs as nobody and must reach nginx-root/ (mktemp makes 0700)
# shellcheck source=ctl.sh
. "$BENCH_DIR/ctl.sh"
CTL="bash $BENCH_DIR/ctl.sh"
KV=$S/results.kv
: >"$KV"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
# A VM with free page reporting hands memory its guest has freed back to the host; the first
# touch of such memory traps into the hypervisor, and writing 1 GiB into the page cache then
# costs several times the system time (BENCHMARKS.md, 2026-12-05). The cold cases write that much.
page_reporting() {
  local d=/sys/module/page_reporting/parameters
  if [ ! -r "$d/page_reporting_order" ]; then echo "no page_reporting module"; return; fi
  printf 'order %s' "$(cat "$d/page_reporting_order")"
  if [ -r "$d/min_free_ms" ]; then printf ', min_free_ms %s' "$(cat "$d/min_free_ms")"; fi
  echo
}
PAGE_REPORTING_START=$(page_reporting)

stop_all_on_exit

# ---------------------------------------------------------------- tools, build
ensure_pkgs docker-registry nginx-light wrk apache2-utils hyperfine skopeo containerd curl python3 openssl

use_outpost_binary "$REPO"

# ---------------------------------------------------------------- helpers
kv() { echo "$*" >>"$KV"; }
# hf NAME HYPERFINE-ARGS...: run hyperfine, keep its JSON, record "NAME median min max mean".
hf() {
  local name=$1; shift
  hyperfine --style none --export-json "$S/hf-$name.json" "$@" >"$S/hf-$name.txt" 2>&1 \
    || { cat "$S/hf-$name.txt" >&2; die "hyperfine $name failed"; }
  python3 - "$S/hf-$name.json" "$name" >>"$KV" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
print(sys.argv[2], "%.4f %.4f %.4f %.4f" % (r["median"], r["min"], r["max"], r["mean"]))
PY
}
UPLOG=$S/upstream/access.log
up_lines() { wc -l <"$UPLOG"; }
# up_quiet: wait until the upstream has neither logged a request nor written a byte for 2 s
# (a request is logged only when it completes, so the log alone is not enough).
up_quiet() {
  local pid a b; pid=$(cat "$S/upstream/pid")
  a="$(stat -c %s "$UPLOG") $(awk '/^wchar/{print $2}' "/proc/$pid/io")"
  while sleep 2; b="$(stat -c %s "$UPLOG") $(awk '/^wchar/{print $2}' "/proc/$pid/io")"; [ "$a" != "$b" ]; do a=$b; done
}
# up_blob MARK DIGEST: "GETs bytes" of that blob the upstream served after line MARK.
up_blob() {
  tail -n +"$(($1 + 1))" "$UPLOG" | awk -v d="$2" '$6=="\"GET" && index($7, "/blobs/" d) {n++; s+=$10} END{printf "%d %.0f\n", n, s}'
}
# up_reqs MARK: requests the upstream logged after line MARK.
up_reqs() { tail -n +"$(($1 + 1))" "$UPLOG" | grep -c '"[A-Z]* /v2/' || true; }
status_kb() { awk -v k="$2:" '$1==k{print $2}' "/proc/$1/status"; }
opid() { cat "$S/outpost/pid"; }
ppid_() { cat "$S/peer/pid"; }
# Clients verify bodies with OpenSSL (SHA-NI where the CPU has it): coreutils' sha256sum hashes
# about 5x slower here and would measure itself rather than the servers.
sha_of() { openssl dgst -sha256 -r | awk '{print "sha256:"$1}'; }

# ---------------------------------------------------------------- servers and images
outpost_config
"$OUTPOST_BIN" check --config "$S/outpost.yaml" >"$S/outpost-check.txt" 2>&1 \
  || { cat "$S/outpost-check.txt" >&2; die "outpost check refused $S/outpost.yaml"; }

log "starting the upstream on 127.0.0.1:$UP_PORT and pushing images ($BIG, $MID, 4K)"
upstream_start
read -r _ BIGL BIGSZ < <(python3 "$BENCH_DIR/push_image.py" "http://127.0.0.1:$UP_PORT" bench/big:1 "$BIG" --workdir "$S")
read -r _ MIDL MIDSZ < <(python3 "$BENCH_DIR/push_image.py" "http://127.0.0.1:$UP_PORT" bench/mid:1 "$MID" --workdir "$S")
read -r SMALLM _ _ < <(python3 "$BENCH_DIR/push_image.py" "http://127.0.0.1:$UP_PORT" bench/small:1 4K --workdir "$S")
kv big_size "$BIGSZ"; kv mid_size "$MIDSZ"; kv clients "$CLIENTS"; kv big_layer "$BIGL"; kv mid_layer "$MIDL"; kv small_manifest "$SMALLM"
UP=http://127.0.0.1:$UP_PORT OP=http://127.0.0.1:$OUTPOST_PORT PE=http://127.0.0.1:$PEER_PORT
BIGP=/v2/bench/big/blobs/$BIGL MIDP=/v2/bench/mid/blobs/$MIDL
BLOBFILE=$S/upstream/data/docker/registry/v2/blobs/sha256/${BIGL:7:2}/${BIGL:7}/data
[ -f "$BLOBFILE" ] || die "the upstream's blob file is not where Distribution 2.8 keeps it: $BLOBFILE"
cat "$BLOBFILE" >/dev/null # page cache
# the upstream's writes of the pushed images reach the disk now, not during a timed case
sync

# ---------------------------------------------------------------- idle RSS right after start
log "idle RSS after start"
$CTL outpost-cold; sleep 2
kv rss_idle_outpost "$(status_kb "$(opid)" VmHWM)"
$CTL peer-cold; sleep 2
kv rss_idle_peer "$(status_kb "$(ppid_)" VmHWM)"

# ---------------------------------------------------------------- cold 1 GiB GET
log "cold $BIG GET: direct, hashed, outpost (cold), peer (cold), interleaved"
# The four cases take turns, round by round (each round in a rotated order), so that the ratios
# between them compare runs made at about the same time: this machine's speed drifts by 15-30 %
# over minutes, and blocks of runs, one case after another, measured the drift as well
# (BENCHMARKS.md, 12-05). Untimed around each run: outpost and the peer are stopped, wiped and
# restarted before it; the peer is stopped and its cache wiped after it (its second download of
# the blob, and the writeback of what it wrote, would run into the next case); after outpost's
# run (whose commit has written its copy to disk) the upstream's GETs of the blob are counted.
#   cold_direct  the upstream alone
#   cold_hashed  the same GET by a client that hashes the body as it receives it (one process,
#                no proxy): what receiving and verifying the bytes costs on these cores, the
#                bound for any cache that checks digests before it serves the last byte
cold_run() { # cold_run CASE: one timed run, its time (s) appended to $S/times-CASE
  local url t0 t1 m
  case $1 in
    cold_direct | cold_hashed) url=$UP ;;
    cold_outpost) url=$OP; $CTL outpost-cold; m=$(up_lines) ;;
    cold_peer) url=$PE; $CTL peer-cold ;;
  esac
  t0=$EPOCHREALTIME
  if [ "$1" = cold_hashed ]; then
    python3 "$BENCH_DIR/hashget.py" "$url$BIGP" >/dev/null
  else
    curl -sf -o /dev/null "$url$BIGP"
  fi || die "$1: the GET failed"
  t1=$EPOCHREALTIME
  echo "$t0 $t1" | awk '{printf "%.6f\n", $2 - $1}' >>"$S/times-$1"
  case $1 in
    cold_outpost) up_quiet; up_blob "$m" "$BIGL" >>"$S/upstream-cold_outpost" ;;
    cold_peer) $CTL peer-stop; rm -rf "$S/peer/data" ;;
  esac
}
# times_kv CASE: "CASE median min max mean" of its runs
times_kv() {
  python3 -c 'import statistics as s, sys
t = [float(l) for l in open(sys.argv[2])]
print(sys.argv[1], "%.4f %.4f %.4f %.4f" % (s.median(t), min(t), max(t), s.mean(t)))' "$1" "$S/times-$1" >>"$KV"
}
curl -sf -o /dev/null "$UP$BIGP" && python3 "$BENCH_DIR/hashget.py" "$UP$BIGP" >/dev/null # warm-up
cases=(cold_direct cold_hashed cold_outpost cold_peer)
rm -f "$S"/times-cold_* "$S/upstream-cold_outpost"
for r in $(seq 0 $((RUNS - 1))); do
  for i in "${!cases[@]}"; do cold_run "${cases[$(((r + i) % ${#cases[@]}))]}"; done
done
for c in "${cases[@]}"; do times_kv "$c"; done
kv cold_outpost_upstream_per_run "$(awk '{n += $1; b += $2} END {printf "%d %.0f\n", n, b}' "$S/upstream-cold_outpost")"
# SHA-256 alone, of the blob file in the page cache, no network: on one core, a cache that
# verifies what it serves cannot be faster than this
hf hash_file --runs "$RUNS" --warmup 1 "openssl dgst -sha256 $BLOBFILE"
# upstream traffic and body digest of ONE cold GET, counted after the upstream went quiet
for who in outpost peer; do
  $CTL "$who-cold"; up_quiet; M=$(up_lines)
  url=$OP; [ $who = peer ] && url=$PE
  got=$(curl -sf "$url$BIGP" | sha_of)
  up_quiet
  kv "cold_${who}_one_get" "$(up_blob "$M" "$BIGL")"
  kv "cold_${who}_digest_ok" "$([ "$got" = "$BIGL" ] && echo 1 || echo 0)"
done

# ---------------------------------------------------------------- warm 1 GiB GET vs nginx
log "warm $BIG GET: outpost, nginx, peer"
# outpost and the peer hold the blob since the single cold GET above
up_quiet; M=$(up_lines)
hf warm_outpost --runs "$RUNS" --warmup 1 "curl -sf -o /dev/null $OP$BIGP"
kv warm_outpost_upstream_reqs "$(up_reqs "$M")"
kv rss_after_warm_outpost "$(status_kb "$(opid)" VmHWM)"
hf warm_peer --runs "$RUNS" --warmup 1 "curl -sf -o /dev/null $PE$BIGP"
mkdir -p "$S/nginx-root"; ln -f "$BLOBFILE" "$S/nginx-root/big.bin"
nginx_start
hf warm_nginx --runs "$RUNS" --warmup 1 "curl -sf -o /dev/null http://127.0.0.1:$NGINX_PORT/big.bin"
$CTL nginx-stop
hf cat_file --runs "$RUNS" --warmup 1 "cat $BLOBFILE"
got=$(curl -sf "$OP$BIGP" | sha_of); kv warm_outpost_digest_ok "$([ "$got" = "$BIGL" ] && echo 1 || echo 0)"

# ---------------------------------------------------------------- cached manifest under load
log "cached manifest: wrk (GET) and ab -i -k (HEAD), $WRK_CONNS connections, ${WRK_SECS}s each"
ACC='Accept: application/vnd.oci.image.manifest.v1+json'
# load NAME METHOD URL [WRK-ARGS...]: req/s, p50, p99 (ms), non-2xx, upstream requests during
# the run (WRK-ARGS, e.g. a Lua script, go to wrk; GET only). LOAD_COUNT=0: no wait for a quiet
# upstream and no count ("-"), for runs whose upstream requests the caller counts over several.
load() {
  local name=$1 method=$2 url=$3 m=0 o rps p50 p99 bad ups=-
  shift 3
  [ "${LOAD_COUNT:-1}" = 0 ] || { up_quiet; m=$(up_lines); }
  if [ "$method" = HEAD ]; then # wrk 4.1 waits for a body after a HEAD's Content-Length: 0 req/s
    o=$(ab -i -k -c "$WRK_CONNS" -t "$WRK_SECS" -n 100000000 -H "$ACC" "$url" 2>&1)
    rps=$(awk '/Requests per second/{print $4}' <<<"$o")
    p50=$(awk '$1=="50%"{print $2}' <<<"$o"); p99=$(awk '$1=="99%"{print $2}' <<<"$o")
    bad=$(awk '/Non-2xx/{print $3}' <<<"$o")
  else
    o=$(wrk -t2 -c"$WRK_CONNS" -d"${WRK_SECS}s" --latency -H "$ACC" "$@" "$url" 2>&1)
    rps=$(awk '/Requests\/sec/{print $2}' <<<"$o")
    p50=$(awk '$1=="50%"{print $2}' <<<"$o" | python3 -c 'import sys; v=sys.stdin.read().strip(); u={"us":1e-3,"ms":1,"s":1e3}; n=v.rstrip("usm"); print(round(float(n)*u[v[len(n):]],3))')
    p99=$(awk '$1=="99%"{print $2}' <<<"$o" | python3 -c 'import sys; v=sys.stdin.read().strip(); u={"us":1e-3,"ms":1,"s":1e3}; n=v.rstrip("usm"); print(round(float(n)*u[v[len(n):]],3))')
    bad=$(awk '/Non-2xx/{print $NF}' <<<"$o")
  fi
  echo "$o" >"$S/load-$name.txt"
  [ "${LOAD_COUNT:-1}" = 0 ] || { up_quiet; ups=$(up_reqs "$m"); }
  kv "load_$name" "${rps:-0} ${p50:-0} ${p99:-0} ${bad:-0} $ups"
}
for who in outpost peer; do
  url=$OP; [ $who = peer ] && url=$PE
  # prime: the first request of each fetches from the upstream; the load runs must not
  curl -sf -o /dev/null -H "$ACC" "$url/v2/bench/small/manifests/1" || die "$who: GET manifest by tag failed"
  curl -sf -o /dev/null -H "$ACC" "$url/v2/bench/small/manifests/$SMALLM" || die "$who: GET manifest by digest failed"
  [ "$(curl -sf -I -H "$ACC" "$url/v2/bench/small/manifests/1" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}')" = "$SMALLM" ] \
    || die "$who: HEAD manifest by tag does not name $SMALLM"
  load "${who}_tag_GET" GET "$url/v2/bench/small/manifests/1"
  load "${who}_tag_HEAD" HEAD "$url/v2/bench/small/manifests/1"
  load "${who}_digest_GET" GET "$url/v2/bench/small/manifests/$SMALLM"
  load "${who}_digest_HEAD" HEAD "$url/v2/bench/small/manifests/$SMALLM"
done
load upstream_tag_GET GET "$UP/v2/bench/small/manifests/1"
load upstream_digest_GET GET "$UP/v2/bench/small/manifests/$SMALLM"
kv rss_after_load_outpost "$(status_kb "$(opid)" VmHWM)"
kv rss_after_load_peer "$(status_kb "$(ppid_)" VmHWM)"

# ---------------------------------------------------------------- RANGES ranges of one cold blob
log "$RANGES concurrent Range GETs of one cold $BIG blob: direct, outpost (cold), peer (cold)"
# bench/rangeget.py: RANGES connections, one Range each, all sent at once, assembled and hashed;
# "WALL DIGEST_OK FULL_200 FIRST_1 END_1 ...". A fresh cache before each run; the upstream's blob
# GETs and bytes over the RUNS runs of each server, counted once it went quiet after the last (a
# restart ends any download the previous run left behind, and the upstream logs it then)
RG="python3 $BENCH_DIR/rangeget.py"
for r in $(seq "$RUNS"); do
  out=$($RG "$UP$BIGP" "$BIGSZ" "$BIGL" "$RANGES") || die "direct: ranged GETs failed: $out"
  kv "ranges_direct_$r" "$out"
done
for who in outpost peer; do
  url=$OP; [ $who = peer ] && url=$PE
  M=$(up_lines)
  for r in $(seq "$RUNS"); do
    $CTL "$who-cold"
    out=$($RG "$url$BIGP" "$BIGSZ" "$BIGL" "$RANGES") || die "$who: ranged GETs failed: $out"
    kv "ranges_${who}_$r" "$out"
  done
  up_quiet
  kv "ranges_${who}_upstream" "$(up_blob "$M" "$BIGL")"
done
kv ranges "$RANGES"

# ---------------------------------------------------------------- CLIENTS on one uncached blob
log "$CLIENTS concurrent clients on one uncached $MID blob"
# the baseline client does what each of the concurrent clients does: GET and hash the body
hf one_cold_outpost --runs "$RUNS" --prepare "$CTL outpost-cold" "curl -sf $OP$MIDP | openssl dgst -sha256 -r"
# fanout WHO RUN: fresh server (empty cache), CLIENTS curls at once, each body hashed.
# WHO=nginx: the same CLIENTS clients on nginx serving the blob file (the machine's floor for
# moving and hashing CLIENTS copies on these cores).
fanout() {
  local who=$1 run=$2 url=$OP pid t0 t1 ok i
  [ "$who" = peer ] && url=$PE
  [ "$who" = nginx ] && url=http://127.0.0.1:$NGINX_PORT
  [ "$who" = nginx ] || $CTL "$who-cold"
  up_quiet
  local m; m=$(up_lines)
  rm -f "$S"/fan-*.sum
  t0=$(date +%s.%N)
  local pids=()
  for i in $(seq "$CLIENTS"); do
    ( curl -sf "$url$MIDP" | sha_of >"$S/fan-$i.sum" ) &
    pids+=($!)
  done
  wait "${pids[@]}" || true # (plain `wait` would also wait for the servers started here)
  t1=$(date +%s.%N)
  pid=$(cat "$S/$who/pid")
  local hwm; hwm=$(status_kb "$pid" VmHWM)
  up_quiet
  ok=$(cat "$S"/fan-*.sum | grep -c "^$MIDL\$" || true)
  kv "fanout_${who}_$run" "$(python3 -c "print(round($t1-$t0,3))") $ok $(up_blob "$m" "$MIDL") $hwm"
}
MIDFILE=$S/upstream/data/docker/registry/v2/blobs/sha256/${MIDL:7:2}/${MIDL:7}/data
mkdir -p "$S/nginx-root/v2/bench/mid/blobs"; ln -f "$MIDFILE" "$S/nginx-root$MIDP"
nginx_start
for r in $(seq "$RUNS"); do fanout nginx "$r"; done
$CTL nginx-stop
for r in $(seq "$RUNS"); do fanout outpost "$r"; done
for r in $(seq "$PEER_FANOUT_RUNS"); do fanout peer "$r"; done

# ---------------------------------------------------------------- end-to-end pulls
ref=127.0.0.1:$UP_PORT/bench/big:1
if [ "${SKIP_SKOPEO:-0}" != 1 ]; then
  log "skopeo copy: direct, outpost cold/warm, peer cold/warm"
  SK="skopeo copy -q --src-tls-verify=false --dest-compress=false"
  dst=$S/skopeo-dst
  hf skopeo_direct --runs "$RUNS" --prepare "rm -rf $dst" "$SK docker://127.0.0.1:$UP_PORT/bench/big:1 dir:$dst"
  M=$(up_lines)
  hf skopeo_outpost_cold --runs "$RUNS" --prepare "rm -rf $dst; $CTL outpost-cold" "$SK docker://127.0.0.1:$OUTPOST_PORT/bench/big:1 dir:$dst"
  up_quiet; kv skopeo_outpost_cold_upstream "$(up_blob "$M" "$BIGL")"
  M=$(up_lines)
  hf skopeo_outpost_warm --runs "$RUNS" --prepare "rm -rf $dst" "$SK docker://127.0.0.1:$OUTPOST_PORT/bench/big:1 dir:$dst"
  up_quiet; kv skopeo_outpost_warm_upstream "$(up_blob "$M" "$BIGL")"
  hf skopeo_peer_cold --runs "$RUNS" --prepare "rm -rf $dst; $CTL peer-cold" "$SK docker://127.0.0.1:$PEER_PORT/bench/big:1 dir:$dst"
  hf skopeo_peer_warm --runs "$RUNS" --prepare "rm -rf $dst" "$SK docker://127.0.0.1:$PEER_PORT/bench/big:1 dir:$dst"
  [ "$(sha_of <"$dst/${BIGL:7}")" = "$BIGL" ] || die "skopeo: the copied layer has the wrong digest"
  rm -rf "$dst"
fi
if [ "${SKIP_CTR:-0}" != 1 ]; then
  log "ctr content fetch: direct, outpost cold/warm, peer cold/warm"
  # one hosts dir per target; `server` is a closed port so a failing mirror fails the pull
  # instead of silently falling back to the upstream
  for t in direct:$UP_PORT outpost:$OUTPOST_PORT peer:$PEER_PORT; do
    mkdir -p "$S/hosts-${t%%:*}/127.0.0.1:$UP_PORT"
    printf 'server = "http://127.0.0.1:1"\n\n[host."http://127.0.0.1:%s"]\n  capabilities = ["pull", "resolve"]\n' "${t#*:}" \
      >"$S/hosts-${t%%:*}/127.0.0.1:$UP_PORT/hosts.toml"
  done
  containerd_start
  CTR="ctr --address $CTRD/containerd.sock --namespace bench content fetch"
  hf ctr_direct --runs "$RUNS" --prepare "$CTL ctr-clear" "$CTR --hosts-dir $S/hosts-direct $ref"
  hf ctr_outpost_cold --runs "$RUNS" --prepare "$CTL ctr-clear; $CTL outpost-cold" "$CTR --hosts-dir $S/hosts-outpost $ref"
  M=$(up_lines)
  hf ctr_outpost_warm --runs "$RUNS" --prepare "$CTL ctr-clear" "$CTR --hosts-dir $S/hosts-outpost $ref"
  up_quiet; kv ctr_outpost_warm_upstream "$(up_blob "$M" "$BIGL")"
  hf ctr_peer_cold --runs "$RUNS" --prepare "$CTL ctr-clear; $CTL peer-cold" "$CTR --hosts-dir $S/hosts-peer $ref"
  hf ctr_peer_warm --runs "$RUNS" --prepare "$CTL ctr-clear" "$CTR --hosts-dir $S/hosts-peer $ref"
  $CTL ctr-clear
  $CTL containerd-stop
fi

# ---------------------------------------------------------------- start-up with many blobs and tags
log "start-up with $STARTUP_BLOBS cached blobs and $STARTUP_TAGS tags"
$CTL outpost-stop
SD=$S/startup/data
# a long tag TTL: the tags stored below stay fresh, so every manifest GET by tag is a hit
sed 's/^  cache:$/&\n    tagTtl: 1h/' "$S/outpost.yaml" >"$S/outpost-tags.yaml"
grep -q 'tagTtl: 1h' "$S/outpost-tags.yaml" || die "no cache: section in $S/outpost.yaml to add tagTtl to"
ST() { python3 "$BENCH_DIR/startup.py" time "$OUTPOST_BIN" "$S/outpost-tags.yaml" "$OUTPOST_PORT" "$SD" "$STARTUP_BLOBS" "$@"; }
t0=$(date +%s.%N)
python3 "$BENCH_DIR/startup.py" make-data "$SD" "$STARTUP_BLOBS"
kv startup_make_data "$(python3 -c "print(round($(date +%s.%N)-$t0,2))")"
kv startup_first "$(ST)"
# the tags: STARTUP_TAGS manifests by tag (t0..) of one tiny image pushed to the upstream, then
# each fetched once through outpost, which stores a tag record (and the manifest) for each
TAGREPO=bench/tags
out=$(python3 "$BENCH_DIR/tags.py" push "$UP" "$TAGREPO" "$STARTUP_TAGS") || die "pushing the tags failed: $out"
kv tags_push "$STARTUP_TAGS $out"
start_bg "$S/outpost/pid" "$S/outpost/outpost.log" "$OUTPOST_BIN" serve --config "$S/outpost-tags.yaml" --data-dir "$SD"
wait_port "$OUTPOST_PORT" || die "outpost did not start on $SD (log: $S/outpost/outpost.log)"
up_quiet; M=$(up_lines)
out=$(python3 "$BENCH_DIR/tags.py" get "$OP" "$TAGREPO" "$STARTUP_TAGS") || die "storing the tags through outpost failed: $out"
up_quiet
kv tags_fill "$out $(up_reqs "$M")"
$CTL outpost-stop
for r in $(seq "$RUNS"); do kv "startup_indexed_$r" "$(ST)"; done
# the same start with the page cache dropped first, as after a reboot (root: bench/run.sh is)
for r in $(seq "$RUNS"); do kv "startup_cold_$r" "$(ST --cold)"; done
# idle RSS: start-up on that data dir, then IDLE_SECS without a request
kv startup_idle "$(ST --idle "$IDLE_SECS") $IDLE_SECS"

# ---------------------------------------------------------------- manifest by tag, many tags stored
log "manifest by tag with $STARTUP_TAGS tags stored: wrk on one tag, and on random tags; $TAG_ROUNDS rounds"
one=t0
CP=http://127.0.0.1:$TAGS_PORT
export TAGS_REPO=$TAGREPO
# the control: the same manifest and settings, a data dir holding that one tag only, served by a
# second outpost on TAGS_PORT, up at the same time. Both are loaded in turn, TAG_ROUNDS rounds
# (one pair of runs moves by +-15 % on this machine): plain wrk on t0, and wrk with bench/tags.lua
# -- a random tag among all of them, or "among 1" on the control (wrk's Lua request generation
# costs CPU on the same cores, so both sides of that comparison pay it). Both processes are
# started afresh for each round: a whole process can be slower than the next start of the same
# binary (CPU per request of the same load: 26.4 us in one start of twelve, 15.4-18.8 in the
# others), so one pair of processes is one draw; the rounds' medians are over TAG_ROUNDS draws.
tags_servers() {
  start_bg "$S/outpost-1tag.pid" "$S/outpost-1tag.log" "$OUTPOST_BIN" serve --config "$S/outpost-tags.yaml" \
    --data-dir "$S/onetag/data" --listen "127.0.0.1:$TAGS_PORT"
  wait_port "$TAGS_PORT" || die "outpost did not start on $S/onetag/data (log: $S/outpost-1tag.log)"
  start_bg "$S/outpost/pid" "$S/outpost/outpost.log" "$OUTPOST_BIN" serve --config "$S/outpost-tags.yaml" --data-dir "$SD"
  wait_port "$OUTPOST_PORT" || die "outpost did not start on $SD (log: $S/outpost/outpost.log)"
  curl -sf -o /dev/null -H "$ACC" "$CP/v2/$TAGREPO/manifests/$one" || die "outpost (control): GET $TAGREPO:$one failed"
  local last=t$((STARTUP_TAGS - 1))
  [ "$(curl -sf -I -H "$ACC" "$OP/v2/$TAGREPO/manifests/$last" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}')" \
    = "$(python3 "$BENCH_DIR/tags.py" digest "$TAGREPO" "$last")" ] || die "outpost: HEAD $TAGREPO:$last does not name its manifest"
  # a short warm-up of each (the first load of a fresh process runs slower; a fresh process
  # reads each manifest from its file once, 10 000 of them in about a second)
  local u
  for u in "$CP" "$OP"; do wrk -t1 -c4 -d1s -H "$ACC" "$u/v2/$TAGREPO/manifests/$one" >/dev/null 2>&1; done
  TAGS=1 wrk -t1 -c4 -d1s -H "$ACC" -s "$BENCH_DIR/tags.lua" "$CP/v2/$TAGREPO/manifests/$one" >/dev/null 2>&1
  TAGS=$STARTUP_TAGS wrk -t1 -c4 -d3s -H "$ACC" -s "$BENCH_DIR/tags.lua" "$OP/v2/$TAGREPO/manifests/$one" >/dev/null 2>&1
}
tags_round() { # ROUND SIDE...: the runs of one round, in the order of the sides given
  local r=$1 side
  shift
  for side in "$@"; do
    case $side in
      base) load "outpost_tags_base_GET_$r" GET "$CP/v2/$TAGREPO/manifests/$one" ;;
      one) load "outpost_tags_one_GET_$r" GET "$OP/v2/$TAGREPO/manifests/$one" ;;
      base_lua) TAGS=1 load "outpost_tags_base_lua_GET_$r" GET "$CP/v2/$TAGREPO/manifests/$one" -s "$BENCH_DIR/tags.lua" ;;
      random) TAGS=$STARTUP_TAGS load "outpost_tags_random_GET_$r" GET "$OP/v2/$TAGREPO/manifests/$one" -s "$BENCH_DIR/tags.lua" ;;
    esac
  done
}
# every other round in the reverse order, so that a drift of the machine's speed over the
# rounds (it shows here) does not always fall on the same side
for r in $(seq "$TAG_ROUNDS"); do
  tags_servers
  if [ "$r" = 1 ]; then up_quiet; M=$(up_lines); export LOAD_COUNT=0; fi
  if [ $((r % 2)) = 1 ]; then
    tags_round "$r" base one base_lua random
  else
    tags_round "$r" random base_lua one base
  fi
  kv "rss_after_tags_load_outpost_$r" "$(status_kb "$(opid)" VmHWM) $(status_kb "$(opid)" VmRSS)"
  $CTL outpost-stop
  stop_pid "$S/outpost-1tag.pid"
done
unset LOAD_COUNT
up_quiet
kv tags_load_upstream "$(up_reqs "$M")"
kv startup_tags "$STARTUP_TAGS"
kv startup_blobs "$STARTUP_BLOBS"

# ---------------------------------------------------------------- report
stop_all
log "writing $RESULTS (raw figures: ${RESULTS%.md}.kv; re-render with bench/report.py)"
cp "$KV" "${RESULTS%.md}.kv"
{
  echo "# outpost benchmark results"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- command: \`RUNS=$RUNS PEER_FANOUT_RUNS=$PEER_FANOUT_RUNS BIG=$BIG MID=$MID CLIENTS=$CLIENTS WRK_SECS=$WRK_SECS WRK_CONNS=$WRK_CONNS STARTUP_BLOBS=$STARTUP_BLOBS STARTUP_TAGS=$STARTUP_TAGS RANGES=$RANGES SKIP_CTR=${SKIP_CTR:-0} SKIP_SKOPEO=${SKIP_SKOPEO:-0} bash bench/run.sh\`"
  echo "- machine: nproc=$(nproc), memory $(free -m | awk '/Mem:/{print $2}') MiB, kernel $(uname -r), cpu $(lscpu | awk -F: '/Model name/{gsub(/^ +/,"",$2);print $2}')"
  echo "- outpost: $("$OUTPOST_BIN" --version), binary $BIN_ORIGIN"
  echo "- load average (1/5/15 min) at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine shows here)"
  echo "- free page reporting to the VM's host at the start: $PAGE_REPORTING_START; at the end: $(page_reporting)"
  echo "- versions: docker-registry $(docker-registry --version | awk '{print $3}'), $(nginx -v 2>&1 | cut -d' ' -f3), $(wrk -v 2>&1 | head -1 | awk '{print $1,$2}'), ab $(ab -V | awk '/Version/{print $5}' | tr -d ,), hyperfine $(hyperfine --version | awk '{print $2}'), skopeo $(skopeo --version | awk '{print $3}'), containerd $(containerd --version | awk '{print $3}'), $(curl --version | head -1 | cut -d' ' -f1-2)"
  echo
  python3 "$BENCH_DIR/report.py" "$KV"
} >"$RESULTS" || report_status=$? # 1: wrong bodies served (report.py says which)
cat "$RESULTS"
[ "${report_status:-0}" = 0 ] || die "the run is broken (see the errors above); $RESULTS has its figures"
