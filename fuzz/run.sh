#!/usr/bin/env bash
# Fuzz kinesin-core on the stable toolchain (called by .ci/run).
#
#   fuzz/run.sh                      every target, FUZZ_SECONDS (60) each
#   FUZZ_SECONDS=10 fuzz/run.sh pool seqnum
#
# For each target: replay the committed corpus and regressions with
# libFuzzer (-runs=0), then explore for FUZZ_SECONDS from them. New inputs
# go to a scratch corpus under fuzz/target/, so the committed corpus only
# changes by hand (see fuzz/README.md). Prints executions and coverage per
# target; exits non-zero if any target crashed (the crash input is in
# fuzz/artifacts/<target>/ and the command to reproduce it is printed).
set -uo pipefail
cd "$(dirname "$0")"

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
# Exploration starts from a fixed libFuzzer seed, so a crash CI finds is
# found again by the same command; FUZZ_SEED=0 draws a random seed (use it
# for longer local runs, which is where new crashes should be found).
FUZZ_SEED=${FUZZ_SEED:-1}
# The default AddressSanitizer needs nightly; the checks run without it.
FUZZ_FLAGS=(--sanitizer none)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "=== installing cargo-fuzz"
  cargo install cargo-fuzz --locked || exit 1
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

logs=target/fuzz-logs
mkdir -p "$logs"

echo "=== fuzz build (${targets[*]})"
if ! cargo fuzz build "${FUZZ_FLAGS[@]}" >"$logs/build.log" 2>&1; then
  tail -n 40 "$logs/build.log"
  exit 1
fi
summary=()
failed=()

# stats LOG: "<executions> <cov> <ft>" from libFuzzer's last status line.
stats() {
  local line execs cov ft
  line=$(grep -E '^#[0-9]+[[:space:]]' "$1" | tail -n 1)
  execs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$line")
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$line")
  ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$line")
  echo "${execs:-0} ${cov:-?} ${ft:-?}"
}

# run TARGET MODE LIBFUZZER_ARGS... -- CORPUS_DIRS...
run() {
  local target=$1 mode=$2 log="$logs/$1-$2.log"
  shift 2
  local args=() dirs=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do args+=("$1"); shift; done
  shift
  dirs=("$@")
  local start=$SECONDS
  cargo fuzz run "${FUZZ_FLAGS[@]}" "$target" "${dirs[@]}" -- \
    -print_final_stats=1 "${args[@]}" >"$log" 2>&1
  local rc=$?
  read -r execs cov ft < <(stats "$log")
  local result=ok
  if [ $rc -ne 0 ]; then
    result=CRASH
    failed+=("$target")
    grep -E -A1 "panicked at" "$log" | head -n 4
    grep -E "^(assertion|  left|  right)|SUMMARY|Test unit written" "$log" | head -n 8
    local crash
    crash=$(sed -nE 's/.*Test unit written to (.*)/\1/p' "$log" | tail -n 1)
    echo "reproduce: cd fuzz && cargo fuzz run --sanitizer none $target ${crash:-artifacts/$target/crash-...}"
    echo "full log: fuzz/$log"
  fi
  summary+=("$(printf '%-20s %-8s %12s execs  cov %-6s ft %-6s %4ss  %s' \
    "$target" "$mode" "$execs" "$cov" "$ft" $((SECONDS - start)) "$result")")
  echo "${summary[-1]}"
}

for target in "${targets[@]}"; do
  committed=("corpus/$target")
  [ -d "regressions/$target" ] && committed+=("regressions/$target")
  mkdir -p "corpus/$target"

  echo "=== fuzz $target: replay ${committed[*]}"
  run "$target" replay -runs=0 -- "${committed[@]}"

  echo "=== fuzz $target: explore ${FUZZ_SECONDS}s"
  scratch="target/fuzz-scratch/$target"
  mkdir -p "$scratch"
  run "$target" explore -max_total_time="$FUZZ_SECONDS" -seed="$FUZZ_SEED" -- "$scratch" "${committed[@]}"
done

echo "=== fuzz summary"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashed: ${failed[*]}"
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, no crash"
