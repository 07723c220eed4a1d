#!/usr/bin/env bash
# shared.sh -- a site's shared store (outpost.sharedStore on Garage): how fast a second node's
# first pull of a blob is once a first node has fetched it, and what the upstream sends for it.
# Everything on 127.0.0.1.
#
# Usage: bash bench/shared.sh [RESULTS.md]   (default: bench/results-shared-<UTC date>.md;
#                                             the report is appended to it)
# Needs root for apt-get. Quick mode: BIG=64M RUNS=1 (well under a minute once built).
#
# Starts a single-node Garage (replication factor 1, sqlite; bucket `outpost`, key `bench-key`),
# Debian's docker-registry as the upstream with one image whose layer is BIG random bytes, and
# two outposts A and B (own data dirs and ports) whose outpost.sharedStore is that bucket. Then,
# RUNS times, with fresh data dirs for A and B and a fresh bucket prefix (run-N/):
#   direct        GET of the blob from the upstream, hashed by the client (bench/hashget.py)
#   A cold        A's GET of the blob (upstream -> A -> client), hashed by the client
#   A upload      from the end of A's pull until the object is in the bucket (a signed S3 HEAD
#                 answers 200 with the blob's size)
#   B first pull  B's GET of the blob (it must come from the bucket), hashed by the client
#   upstream      blob GETs and bytes the upstream logged for A's pull and for B's
#   Garage direct a signed GET of the object straight from Garage (curl | openssl dgst), for
#                 reference: what the bucket alone delivers
#
# Env knobs (defaults in brackets):
#   BIG [1G]  RUNS [3]  UPLOAD_WAIT [300] (seconds to wait for A's upload before giving up)
#   UP_PORT [5420] A_PORT [5421] B_PORT [5422] S3_PORT [5423] S3_RPC_PORT [5424]
#   S3_ADMIN_PORT [5425]  (Garage's S3 API, RPC, admin API)
#   S3_COMPRESSION [unset: Garage's default, zstd level 1]  Garage's compression_level ("none", 1..)
#   OUTPOST_BIN (else `cargo build --release -p outpost --bin outpost`) + OUTPOST_REV
#   GARAGE_BIN (else `garage` on PATH, else ~/.cargo/bin/garage, else `cargo install --locked garage`)
#   BENCH_STATE [a new /tmp/outpost-shared.XXXXXX] (removed at the end unless KEEP=1)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
export RUNS=${RUNS:-3} BIG=${BIG:-1G} UPLOAD_WAIT=${UPLOAD_WAIT:-300}
export UP_PORT=${UP_PORT:-5420} A_PORT=${A_PORT:-5421} B_PORT=${B_PORT:-5422}
export S3_PORT=${S3_PORT:-5423} S3_RPC_PORT=${S3_RPC_PORT:-5424} S3_ADMIN_PORT=${S3_ADMIN_PORT:-5425}
export OUTPOST_PORT=$A_PORT # ctl.sh's default; each node's own is passed to outpost_config/start
export BENCH_STATE=${BENCH_STATE:-$(mktemp -d /tmp/outpost-shared.XXXXXX)}
export RUST_LOG=${RUST_LOG:-info}
RESULTS=${1:-$BENCH_DIR/results-shared-$(date -u +%Y%m%dT%H%M%SZ).md}
S=$BENCH_STATE
mkdir -p "$S" "$(dirname "$RESULTS")"
[ -w "$(dirname "$RESULTS")" ] || { echo "bench: ERROR: cannot write $RESULTS" >&2; exit 1; }
# shellcheck source=ctl.sh
. "$BENCH_DIR/ctl.sh"
KV=$S/results.kv
: >"$KV"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
G=$S/garage

# The nodes A and B live in $S/a and $S/b, laid out as ctl.sh lays out its one outpost
# ($S/outpost.yaml, $S/outpost/{pid,outpost.log,data}) so that outpost_config and outpost_start
# serve both; Garage in $S/garage. On exit: every server stopped by its pid, $S removed.
stop_nodes() { stop_pid "$S/a/outpost/pid"; stop_pid "$S/b/outpost/pid"; }
trap 'set +e; stop_nodes; stop_pid "$G/pid"; stop_all; if [ "${KEEP:-0}" = 1 ]; then log "kept $S"; else rm -rf "$S"; fi' EXIT
trap 'exit 130' INT TERM

for p in "$UP_PORT" "$A_PORT" "$B_PORT" "$S3_PORT" "$S3_RPC_PORT" "$S3_ADMIN_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port $p on 127.0.0.1 is in use (see the *_PORT knobs)"; fi
done

# ---------------------------------------------------------------- tools, build
ensure_pkgs docker-registry curl python3 openssl

garage_bin() {
  local b
  if [ -n "${GARAGE_BIN:-}" ]; then [ -x "$GARAGE_BIN" ] || die "GARAGE_BIN=$GARAGE_BIN is not executable"; echo "$GARAGE_BIN"; return; fi
  for b in "$(command -v garage || true)" "${CARGO_HOME:-$HOME/.cargo}/bin/garage"; do
    [ -n "$b" ] && [ -x "$b" ] && { echo "$b"; return; }
  done
  log "garage not found: cargo install --locked garage (8 to 20 minutes)"
  cargo install --locked garage >&2 || die "cargo install --locked garage failed"
  b="${CARGO_HOME:-$HOME/.cargo}/bin/garage"
  [ -x "$b" ] || die "cargo install --locked garage succeeded but $b is missing"
  echo "$b"
}
GARAGE=$(garage_bin)

use_outpost_binary "$REPO"

# ---------------------------------------------------------------- helpers
kv() { echo "$*" >>"$KV"; }
UPLOG=$S/upstream/access.log
up_lines() { wc -l <"$UPLOG"; }
# up_quiet, up_blob, up_reqs: as in run.sh (quiet = no log line and no byte written for 2 s)
up_quiet() {
  local pid a b; pid=$(cat "$S/upstream/pid")
  a="$(stat -c %s "$UPLOG") $(awk '/^wchar/{print $2}' "/proc/$pid/io")"
  while sleep 2; b="$(stat -c %s "$UPLOG") $(awk '/^wchar/{print $2}' "/proc/$pid/io")"; [ "$a" != "$b" ]; do a=$b; done
}
up_blob() {
  tail -n +"$(($1 + 1))" "$UPLOG" | awk -v d="$2" '$6=="\"GET" && index($7, "/blobs/" d) {n++; s+=$10} END{printf "%d %.0f\n", n, s}'
}
up_reqs() { tail -n +"$(($1 + 1))" "$UPLOG" | grep -c '"[A-Z]* /v2/' || true; }
now_ns() { date +%s%N; }
secs() { python3 -c "print('%.3f' % (($2 - $1) / 1e9))"; }
# hashget URL: "SECONDS DIGEST" of one GET hashed by bench/hashget.py (python start included)
hashget() {
  local t0 d t1
  t0=$(now_ns)
  d=$(python3 "$BENCH_DIR/hashget.py" "$1") || { echo "0 failed"; return 0; }
  t1=$(now_ns)
  echo "$(secs "$t0" "$t1") $d"
}
# metric PORT NAME{LABELS}: the value of one sample of that node's /metrics (0 when absent)
metric() {
  curl -sf "http://127.0.0.1:$1/metrics" | awk -v k="$2" '$1==k{v=$2} END{print v+0}'
}
# Garage's CLI, driven by its config only: the GARAGE_* variables it would read are dropped.
gcli() {
  local unset=() v
  for v in $(compgen -e); do [[ $v == GARAGE_* ]] && unset+=(-u "$v"); done
  env "${unset[@]}" "$GARAGE" -c "$G/garage.toml" "$@"
}
# s3 METHOD KEY [CURL-ARGS...]: a signed request on object KEY of the bucket (curl's SigV4;
# Garage wants x-amz-content-sha256, here that of an empty body).
s3() {
  local method=$1 key=$2; shift 2
  local m=(-X "$method"); [ "$method" = HEAD ] && m=(-I)
  curl -s --aws-sigv4 "aws:amz:garage:s3" --user "$KEY_ID:$(cat "$S/s3-secret")" \
    -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
    "${m[@]}" "$@" "http://127.0.0.1:$S3_PORT/outpost/$key"
}
# s3_size KEY: the object's Content-Length, empty when it is not there
s3_size() { s3 HEAD "$1" | tr -d '\r' | awk -F': ' 'NR==1 && $0 !~ / 200/{exit} tolower($1)=="content-length"{print $2}' || true; }
logs_of() { # logs_of NODE: the tail of a node's log, for a failure report
  echo "---- outpost $1 ($S/$1/outpost/outpost.log), last 30 lines:" >&2
  tail -30 "$S/$1/outpost/outpost.log" >&2 || true
}

# ---------------------------------------------------------------- Garage: one node
log "starting Garage ($("$GARAGE" --version 2>/dev/null | head -1)) on 127.0.0.1:$S3_PORT"
mkdir -p "$G"
GZ="" # Garage's compression_level: a number, or "none"
if [ -n "${S3_COMPRESSION:-}" ]; then
  if [[ $S3_COMPRESSION =~ ^-?[0-9]+$ ]]; then GZ="compression_level = $S3_COMPRESSION"; else GZ="compression_level = \"$S3_COMPRESSION\""; fi
fi
( umask 077
  cat >"$G/garage.toml" <<TOML
metadata_dir = "$G/meta"
data_dir = "$G/data"
db_engine = "sqlite"
metadata_fsync = false
data_fsync = false
replication_factor = 1
$GZ
rpc_bind_addr = "127.0.0.1:$S3_RPC_PORT"
rpc_public_addr = "127.0.0.1:$S3_RPC_PORT"
rpc_secret = "$(openssl rand -hex 32)"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3_PORT"

[admin]
api_bind_addr = "127.0.0.1:$S3_ADMIN_PORT"
admin_token = "$(openssl rand -hex 32)"
TOML
)
GT0=$(now_ns)
start_bg "$G/pid" "$G/garage.log" env NO_COLOR=1 RUST_LOG=garage=info "$GARAGE" -c "$G/garage.toml" server
# (its S3 port, not the RPC one: a bare connection to the RPC port is logged as an error)
wait_port "$S3_PORT" 60 || { tail -20 "$G/garage.log" >&2; die "Garage did not listen on 127.0.0.1:$S3_PORT"; }
for ((i = 0; i < 100; i++)); do
  NODE_ID=$(gcli node id -q 2>/dev/null | cut -d@ -f1 || true)
  [ -n "$NODE_ID" ] && break; sleep 0.1
done
[[ $NODE_ID =~ ^[0-9a-f]{64}$ ]] || die "garage node id -q printed '$NODE_ID'"
gcli layout assign -z dc1 -c 10G "$NODE_ID" >"$G/cli.log" 2>&1 || { cat "$G/cli.log" >&2; die "garage layout assign failed"; }
gcli layout apply --version 1 >>"$G/cli.log" 2>&1 || { cat "$G/cli.log" >&2; die "garage layout apply failed"; }
for ((i = 0; ; i++)); do
  gcli json-api GetClusterHealth 2>/dev/null | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)["status"]!="healthy")' 2>/dev/null && break
  [ $i -lt 600 ] || { tail -20 "$G/garage.log" >&2; die "Garage not healthy after 60 s"; }
  sleep 0.1
done
gcli bucket create outpost >>"$G/cli.log" 2>&1 || { cat "$G/cli.log" >&2; die "garage bucket create failed"; }
gcli key create bench-key >"$G/key.txt" 2>&1 || { cat "$G/key.txt" >&2; die "garage key create failed"; }
KEY_ID=$(awk -F: '$1 ~ /^ *Key ID *$/{gsub(/ /,"",$2); print $2}' "$G/key.txt")
( umask 077; awk -F: '$1 ~ /^ *Secret key *$/{gsub(/ /,"",$2); print $2}' "$G/key.txt" >"$S/s3-secret" )
rm -f "$G/key.txt"
{ [ -n "$KEY_ID" ] && [ -s "$S/s3-secret" ]; } || die "no Key ID / Secret key in the output of garage key create"
gcli bucket allow --read --write --owner outpost --key bench-key >>"$G/cli.log" 2>&1 || { cat "$G/cli.log" >&2; die "garage bucket allow failed"; }
for ((i = 0; ; i++)); do
  code=$(s3 GET "?list-type=2" -o /dev/null -w '%{http_code}' 2>/dev/null || true)
  # (GET /outpost/ is ListObjects; 200 once the key may read the bucket)
  [ "$code" = 200 ] && break
  [ $i -lt 600 ] || die "Garage's S3 API does not list the bucket for the key (last answer: $code)"
  sleep 0.1
done
kv garage_startup "$(secs "$GT0" "$(now_ns)")"

# ---------------------------------------------------------------- upstream and image
log "starting the upstream on 127.0.0.1:$UP_PORT and pushing a $BIG image"
upstream_start
read -r _ BIGL BIGSZ < <(python3 "$BENCH_DIR/push_image.py" "http://127.0.0.1:$UP_PORT" bench/big:1 "$BIG" --workdir "$S")
kv big_size "$BIGSZ"; kv big_layer "$BIGL"
BIGP=/v2/bench/big/blobs/$BIGL
BLOBFILE=$S/upstream/data/docker/registry/v2/blobs/sha256/${BIGL:7:2}/${BIGL:7}/data
[ -f "$BLOBFILE" ] || die "the upstream's blob file is not where Distribution 2.8 keeps it: $BLOBFILE"

# node_start NAME PORT RUN: a fresh node (empty data dir) whose shared store is the bucket,
# prefix run-RUN/; the upstream is its default registry, as in run.sh.
node_start() {
  local name=$1 port=$2 run=$3 d=$S/$1
  stop_pid "$d/outpost/pid"
  rm -rf "$d/outpost/data"
  S=$d OUTPOST_PORT=$port outpost_config
  cat >>"$d/outpost.yaml" <<YAML
  sharedStore:
    endpoint: http://127.0.0.1:$S3_PORT
    bucket: outpost
    accessKeyId: $KEY_ID
    secretAccessKeyFile: $S/s3-secret
    prefix: run-$run/
YAML
  "$OUTPOST_BIN" check --config "$d/outpost.yaml" >"$d/check.txt" 2>&1 \
    || { cat "$d/check.txt" >&2; die "outpost check refused $d/outpost.yaml"; }
  mkdir -p "$d/outpost"; echo "==== run $run" >>"$d/outpost/outpost.log"
  S=$d OUTPOST_PORT=$port outpost_start
  local i
  for ((i = 0; i < 500; i++)); do curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" && return 0; sleep 0.02; done
  logs_of "$name"; die "outpost $name is not ready on 127.0.0.1:$port"
}

# ---------------------------------------------------------------- the runs
OK=1
for r in $(seq "$RUNS"); do
  log "run $r of $RUNS: fresh A and B, bucket prefix run-$r/"
  node_start a "$A_PORT" "$r"
  node_start b "$B_PORT" "$r"
  KEY=run-$r/blobs/sha256/${BIGL:7}
  [ -z "$(s3_size "$KEY")" ] || die "run-$r/ already holds the blob"

  cat "$BLOBFILE" >/dev/null # page cache, as for every direct GET of run.sh
  read -r t d < <(hashget "http://127.0.0.1:$UP_PORT$BIGP")
  [ "$d" = "$BIGL" ] || { OK=0; log "run $r: direct GET: got $d"; }
  kv "direct_$r" "$t"

  up_quiet; M=$(up_lines)
  log "run $r: A cold"
  read -r t d < <(hashget "http://127.0.0.1:$A_PORT$BIGP")
  TA_END=$(now_ns)
  [ "$d" = "$BIGL" ] || { OK=0; log "run $r: A served a body of digest $d"; logs_of a; }
  kv "a_cold_$r" "$t"

  # A's upload: until a signed HEAD of the object answers 200 with the blob's size
  landed=""
  while :; do
    sz=$(s3_size "$KEY")
    [ "$sz" = "$BIGSZ" ] && { landed=$(now_ns); break; }
    [ -n "$sz" ] && { OK=0; log "run $r: the object is there with $sz bytes, not $BIGSZ"; break; }
    [ $(( ($(now_ns) - TA_END) / 1000000000 )) -lt "$UPLOAD_WAIT" ] || break
    sleep 0.05
  done
  if [ -n "$landed" ]; then
    kv "a_upload_$r" "$(secs "$TA_END" "$landed")"
  else
    OK=0; kv "a_upload_$r" "never"
    log "run $r: A's upload did not land within ${UPLOAD_WAIT}s"; logs_of a
  fi
  # the counter is bumped after the upload returns, a moment after the object is visible
  for ((i = 0; i < 100; i++)); do [ "$(metric "$A_PORT" 'outpost_shared_store_uploads_total{result="ok"}')" -ge 1 ] && break; sleep 0.05; done
  kv "a_metrics_$r" "$(metric "$A_PORT" 'outpost_shared_store_uploads_total{result="ok"}') $(metric "$A_PORT" 'outpost_shared_store_uploads_total{result="failed"}') $(metric "$A_PORT" 'outpost_shared_store_up')"
  up_quiet
  kv "a_upstream_$r" "$(up_blob "$M" "$BIGL")"

  M=$(up_lines)
  log "run $r: B first pull"
  read -r t d < <(hashget "http://127.0.0.1:$B_PORT$BIGP")
  [ "$d" = "$BIGL" ] || { OK=0; log "run $r: B served a body of digest $d"; logs_of b; }
  kv "b_first_$r" "$t"
  up_quiet
  kv "b_upstream_$r" "$(up_blob "$M" "$BIGL") $(up_reqs "$M")"
  kv "b_metrics_$r" "$(metric "$B_PORT" 'outpost_served_bytes_total{source="shared"}') $(metric "$B_PORT" 'outpost_served_bytes_total{source="upstream"}')"

  # reference: the object straight from Garage, hashed by the client
  t0=$(now_ns)
  d=$(s3 GET "$KEY" | openssl dgst -sha256 -r | awk '{print "sha256:"$1}' || true)
  kv "garage_get_$r" "$(secs "$t0" "$(now_ns)")"
  [ "$d" = "$BIGL" ] || { OK=0; log "run $r: Garage's object has digest $d"; }
done
kv bucket_info "$(gcli bucket info outpost 2>/dev/null | awk -F': *' '/^ *(Objects|Size)/{gsub(/^ +| +$/, "", $1); o = o (o ? "; " : "") $1 " " $2} END{print o}')"

# ---------------------------------------------------------------- report
stop_nodes
cp "$KV" "${RESULTS%.md}.kv"
REPORT=$S/report.md
{
  echo "# outpost shared-store benchmark (Garage)"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- command: \`BIG=$BIG RUNS=$RUNS${S3_COMPRESSION:+ S3_COMPRESSION=$S3_COMPRESSION} bash bench/shared.sh\`"
  echo "- machine: nproc=$(nproc), memory $(free -m | awk '/Mem:/{print $2}') MiB, kernel $(uname -r), cpu $(lscpu | awk -F: '/Model name/{gsub(/^ +/,"",$2);print $2}')"
  echo "- outpost: $("$OUTPOST_BIN" --version), binary $BIN_ORIGIN"
  echo "- load average (1/5/15 min) at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine shows here)"
  echo "- versions: $("$GARAGE" --version 2>/dev/null | head -1) (1 node, replication factor 1, sqlite, compression_level ${S3_COMPRESSION:-default (zstd 1)}), docker-registry $(docker-registry --version | awk '{print $3}'), $(curl --version | head -1 | cut -d' ' -f1-2), python $(python3 -c 'import sys; print(sys.version.split()[0])')"
  echo
  python3 - "$KV" <<'PY'
import statistics, sys
kv = {}
for line in open(sys.argv[1]):
    k, _, v = line.rstrip("\n").partition(" ")
    kv[k] = v
runs = sorted({int(k.rsplit("_", 1)[1]) for k in kv if k.startswith("direct_")})
size = int(kv["big_size"])
f = lambda k: (float(kv[k]) if kv.get(k, "never") != "never" else None)
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
def s(x): return "—" if x is None else "%.2f s" % x
def mbs(x): return "" if not x else " (%.0f MiB/s)" % (size / x / 2**20)
def ratio(a, b): return "—" if not a or not b else "%.2f×" % (a / b)
rows = []
for r in runs:
    up_a = kv[f"a_upstream_{r}"].split()
    up_b = kv[f"b_upstream_{r}"].split()
    shared_b = kv[f"b_metrics_{r}"].split()
    rows.append(dict(r=r, direct=f(f"direct_{r}"), a=f(f"a_cold_{r}"), up=f(f"a_upload_{r}"),
                     b=f(f"b_first_{r}"), g=f(f"garage_get_{r}"),
                     up_a=f"{up_a[0]} GET, {int(up_a[1]):,} B", up_b=f"{up_b[0]} GET, {int(up_b[1]):,} B ({up_b[2]} requests)",
                     shared_b=f"{int(float(shared_b[0])):,} B"))
print(f"Blob: {size:,} bytes ({size / 2**20:.0f} MiB) of random data, `{kv['big_layer']}`. Each figure is one timed GET; "
      "direct, A cold and B first pull are hashed by the client (`bench/hashget.py`). Ratios: direct ÷ time "
      "(1.00× = as fast as receiving and hashing the blob straight from the upstream).")
print()
print("Medians are of each column; \"B ÷ A\" in the median row is the ratio of the two medians.")
print()
print("| run | direct (receive + hash) | A cold | A cold × direct | A's upload to the bucket | B first pull | B × direct | B ÷ A | Garage GET (curl \\| openssl) | upstream for A | upstream for B | B served from the bucket |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
for x in rows:
    print(f"| {x['r']} | {s(x['direct'])} | {s(x['a'])} | {ratio(x['direct'], x['a'])} | {s(x['up'])} | {s(x['b'])} | "
          f"{ratio(x['direct'], x['b'])} | {ratio(x['b'], x['a'])} | {s(x['g'])} | {x['up_a']} | {x['up_b']} | {x['shared_b']} |")
m = {k: med([x[k] for x in rows]) for k in ("direct", "a", "up", "b", "g")}
print(f"| **median** | **{s(m['direct'])}**{mbs(m['direct'])} | **{s(m['a'])}**{mbs(m['a'])} | **{ratio(m['direct'], m['a'])}** | "
      f"**{s(m['up'])}**{mbs(m['up'])} | **{s(m['b'])}**{mbs(m['b'])} | **{ratio(m['direct'], m['b'])}** | **{ratio(m['b'], m['a'])}** | "
      f"{s(m['g'])}{mbs(m['g'])} | | | |")
print()
b_bytes = sum(int(kv[f"b_upstream_{r}"].split()[1]) for r in runs)
b_reqs = sum(int(kv[f"b_upstream_{r}"].split()[2]) for r in runs)
print(f"- upstream during B's first pulls: {b_bytes:,} blob bytes, {b_reqs} requests of any kind over {len(runs)} run(s) — "
      + ("MET (target 0)" if b_bytes == 0 else "**MISSED** (target 0)"))
if m["a"] and m["b"]:
    print(f"- B's first pull against A's cold pull (medians): {m['b'] / m['a']:.2f}× the time — "
          + ("MET (B no slower)" if m["b"] <= m["a"] * 1.05 else "**MISSED** (B slower than A)"))
print(f"- A's counters at the end of each run (uploads ok, failed, shared_store_up): "
      + "; ".join(kv[f"a_metrics_{r}"] for r in runs))
print(f"- Garage's bucket at the end: {kv.get('bucket_info', '?')}; Garage start-up (config to a listable bucket): {kv['garage_startup']} s")
PY
} >"$REPORT"
cat "$REPORT" >>"$RESULTS"
cat "$REPORT"
log "appended to $RESULTS (raw figures: ${RESULTS%.md}.kv)"
[ "$OK" = 1 ] || die "wrong bodies or a missing upload (see the messages above); $RESULTS has the figures"
