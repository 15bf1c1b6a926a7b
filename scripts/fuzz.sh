#!/usr/bin/env bash
# Coverage-guided fuzzing of tdxlab's input-facing code (cargo fuzz, libFuzzer).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Runs each target (default: all of them, from tdxlab::fuzzing::TARGETS) for SECONDS (default
# 60) on its corpus in fuzz/corpus/TARGET, which grows with what the fuzzer finds; a crash
# leaves its reproducer in fuzz/artifacts/TARGET (kept in the repository once fixed:
# tests/fuzz_corpus.rs replays every corpus input and reproducer on stable). Prints the
# executions of each run. Needs the nightly toolchain and cargo-fuzz, which it installs
# through rustup and crates.io when missing; stable builds never see either.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH="${1:-60}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(tdvf_image td_hob tdcall_dispatch map_gpa ve_info)
case "$SECONDS_EACH" in
  ''|*[!0-9]*) echo "fuzz: SECONDS must be a whole number, not '$SECONDS_EACH'" >&2; exit 2 ;;
esac

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

status=0
for t in "${TARGETS[@]}"; do
  [ -f "fuzz/fuzz_targets/$t.rs" ] || { echo "fuzz: no target $t" >&2; exit 2; }
  mkdir -p "fuzz/corpus/$t"
  log="fuzz/target/fuzz-$t.log"
  mkdir -p fuzz/target
  echo "== $t: ${SECONDS_EACH} s"
  if cargo +nightly fuzz run --sanitizer none "$t" "fuzz/corpus/$t" -- \
      -max_total_time="$SECONDS_EACH" -print_final_stats=1 -rss_limit_mb=4096 >"$log" 2>&1; then
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    echo "   no crash; $execs executions; corpus $(ls "fuzz/corpus/$t" | wc -l) inputs"
  else
    echo "   CRASH or error (log: $log; reproducer in fuzz/artifacts/$t)"
    grep -m5 -E 'panicked|ERROR|SUMMARY' "$log" | sed 's/^/   | /' || true
    status=1
  fi
done
exit $status
