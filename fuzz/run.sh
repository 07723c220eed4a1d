#!/usr/bin/env bash
# fuzz/run.sh -- build every fuzz target with cargo-fuzz (libFuzzer, AddressSanitizer) and run
# each for FUZZ_SECONDS (default 60) from the committed seeds in fuzz/corpus/<target>.
# Exits non-zero when a target crashed (a panic, a sanitizer report, a timeout or running out of
# memory), naming the target and the input that did it (fuzz/artifacts/<target>/crash-…).
#
#   bash fuzz/run.sh                     every target, 60 s each
#   FUZZ_SECONDS=600 bash fuzz/run.sh route names
#
# Environment: FUZZ_SECONDS (per target), FUZZ_JOBS (targets run at once; default: the number of
# CPUs, each libFuzzer process uses one), FUZZ_SANITIZER (address | none; default address),
# FUZZ_TARGET_DIR (default fuzz/target; never the main workspace's target/).
#
# Only the stable toolchain is needed: cargo-fuzz passes nightly `-Z` flags to rustc, which the
# stable compiler accepts under RUSTC_BOOTSTRAP=1 (set here, for this script's cargo only).
set -euo pipefail
cd "$(dirname "$0")"
here="$PWD"

seconds="${FUZZ_SECONDS:-60}"
jobs="${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}"
sanitizer="${FUZZ_SANITIZER:-address}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$here/target}"
# Always set: cargo caches rustc's answers (target/.rustc_info.json) without this variable in the
# key, so one build without it would leave a cached "-Z is nightly-only" failure behind.
export RUSTC_BOOTSTRAP=1

all_targets=(names manifest route challenge config bodies archive)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

# The longest input each target is given: what its parser meets in practice, with room to spare
# (names and routes are short; manifests, configuration files, bodies and archives are not).
max_len() {
  case "$1" in
    names) echo 1024 ;;
    route | challenge) echo 4096 ;;
    manifest | config | bodies) echo 16384 ;;
    archive) echo 65536 ;;
    *) echo 4096 ;;
  esac
}

for t in "${targets[@]}"; do
  [ -d "corpus/$t" ] || { echo "fuzz: unknown target $t (have: ${all_targets[*]})" >&2; exit 2; }
done

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz
fi

echo "fuzz: building ${targets[*]} (sanitizer: $sanitizer)"
build_started=$SECONDS
if [ ${#targets[@]} -eq ${#all_targets[@]} ]; then
  cargo fuzz build --sanitizer "$sanitizer"
else
  for t in "${targets[@]}"; do cargo fuzz build --sanitizer "$sanitizer" "$t"; done
fi
echo "fuzz: built in $((SECONDS - build_started)) s"

bin_dir="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"
work="$CARGO_TARGET_DIR/fuzz-work"   # new corpus entries and logs: never the committed seeds
# The targets that need files (config, archive) keep them under $TMPDIR: one directory per run.
run_tmp="$(mktemp -d)"
trap 'rm -rf "$run_tmp"' EXIT
# As `cargo fuzz run` does: Rust's statics trip ASan's one-definition-rule check.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0}"

# One target: libFuzzer writes new inputs to the work corpus (first directory) and reads the
# committed seeds (second); a crashing input goes to artifacts/<target>/.
run_one() {
  local t="$1"
  mkdir -p "$work/corpus/$t" "artifacts/$t" "$run_tmp/$t"
  TMPDIR="$run_tmp/$t" "$bin_dir/$t" "$work/corpus/$t" "corpus/$t" \
    -max_total_time="$seconds" -max_len="$(max_len "$t")" -timeout=30 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"$work/$t.log" 2>&1
}

mkdir -p "$work"
echo "fuzz: running ${targets[*]} for $seconds s each, $jobs at a time"
run_started=$SECONDS
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  rm -f "$work/$t.rc"
  (
    rc=0
    run_one "$t" || rc=$?
    echo "$rc" >"$work/$t.rc"
  ) &
done
wait

failed=()
for t in "${targets[@]}"; do
  rc="$(cat "$work/$t.rc" 2>/dev/null || echo '?')"
  log="$work/$t.log"
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
  corpus="$(find "$work/corpus/$t" "corpus/$t" -type f | wc -l)"
  if [ "$rc" -eq 0 ]; then
    printf 'fuzz: %-10s ok     %10s executions (%s/s), %s corpus inputs\n' \
      "$t" "${execs:-?}" "${rate:-?}" "$corpus"
  else
    crash="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)"
    printf 'fuzz: %-10s FAILED %10s executions, exit %s, input: %s\n' \
      "$t" "${execs:-?}" "$rc" "fuzz/${crash:-? (see $log)}"
    # What it was: the panic message (or sanitizer report) and the first frames.
    grep -m1 -A12 -E "panicked at|ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)" "$log" \
      | sed 's/^/    /' || tail -20 "$log" | sed 's/^/    /'
    failed+=("$t: fuzz/${crash:-$log}")
  fi
done
echo "fuzz: ran in $((SECONDS - run_started)) s; logs in $work"

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${#failed[@]} target(s) crashed:" >&2
  printf '  %s\n' "${failed[@]}" >&2
  echo "fuzz: reproduce with: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <input>" >&2
  exit 1
fi
echo "fuzz: every target ran ${seconds} s without a crash"
