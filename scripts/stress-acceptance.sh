#!/usr/bin/env bash
# Issue 5's acceptance run: every scenario for SECONDS (default 60) on 4 vCPUs, without and
# with every kind of fault injection. Prints one verdict line per run; exits non-zero if any
# run failed. Reports land in ${OUT:-target/stress-acceptance}/.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-60}
OUT=${OUT:-target/stress-acceptance}
mkdir -p "$OUT"
cargo build --release --quiet
INJECT="retry=0.2,busy=0.1,private-page-size=2m,host-invalidate-hz=50"
fail=0
for scenario in explicit punch-hole implicit boundary random; do
  for inject in none "$INJECT"; do
    tag=$scenario-$([ "$inject" = none ] && echo plain || echo inject)
    args=(--scenario "$scenario" --vcpus 4 --seconds "$SECONDS_PER_RUN" --report "$OUT/$tag.json")
    [ "$inject" = none ] || args+=(--inject "$inject")
    if ./target/release/tdxlab stress "${args[@]}" >"$OUT/$tag.txt" 2>&1; then
      verdict=PASSED
    else
      verdict=FAILED; fail=1
    fi
    python3 - "$OUT/$tag.json" "$tag" "$verdict" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:22} {sys.argv[3]}  {r['elapsed_s']:6.1f} s  conversions {r['conversions']:7}  "
      f"pages {r['pages_converted']:8}  host checks {r['host_checks']:6}  mismatches {r['mismatches']}  "
      f"leaks {r['leaks']}  injected {r['injected']}")
PY
  done
done
exit $fail
