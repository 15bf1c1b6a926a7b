#!/usr/bin/env bash
# The one test command (README): formatting, lints, the guest build, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
LAST_STEP="setup (scripts/setup.sh)"
STEP_T=$T0
# Each step's duration is printed when the next one starts, and at the end.
step() {
  printf '<== %s: %ds\n' "$LAST_STEP" "$(( $(date +%s) - STEP_T ))"
  LAST_STEP="$*"; STEP_T=$(date +%s)
  printf '\n==> %s\n' "$*"
}
finish() {
  local rc=$?
  printf '<== %s: %ds\n' "$LAST_STEP" "$(( $(date +%s) - STEP_T ))"
  printf 'ci/test.sh: %s after %ds\n' "$([ $rc -eq 0 ] && echo passed || echo "FAILED (exit $rc)")" "$(( $(date +%s) - T0 ))"
  rm -f "${log:-}"
}
trap finish EXIT
printf '==> %s\n' "$LAST_STEP"
bash scripts/setup.sh
step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
step "guest build and clippy (x86_64-unknown-none)"
cargo build -p tdxlab-guest --target x86_64-unknown-none --release
cargo clippy -p tdxlab-guest --target x86_64-unknown-none -- -D warnings
# The KVM integration tests are #[ignore]d: they run (--include-ignored) where /dev/kvm is
# usable, and are counted as skipped where it is not. The browser test runs apart, below.
BROWSER_TEST=the_map_renders_in_a_real_browser
test_args=(--skip "$BROWSER_TEST")
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
  test_args+=(--include-ignored)
  step "cargo test --workspace -- --include-ignored (/dev/kvm is usable)"
else
  step "cargo test --workspace (no usable /dev/kvm: the KVM tests are SKIPPED)"
fi
log=$(mktemp)
cargo test --workspace -- "${test_args[@]}" 2>&1 | tee "$log"

# The HTML map in a real browser: Debian's chromium, headless. Installed here if missing (it
# is only the test command's); where it cannot be had, the test is counted as SKIPPED.
step "browser test of the HTML map (Debian's chromium, headless)"
if ! command -v chromium >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing Debian's chromium (apt-get) for the browser test"
  install_chromium() {
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
      >/dev/null 2>&1
  }
  # Stale package lists are the usual reason an install fails: refresh them once.
  install_chromium || { $SUDO apt-get update -qq >/dev/null 2>&1 && install_chromium; } \
    || echo "apt-get install chromium failed"
fi
if command -v chromium >/dev/null; then
  TDXLAB_MAP_SCREENSHOT="$PWD/target/map.png" \
    cargo test -p tdxlab --test html_map -- --ignored "$BROWSER_TEST" 2>&1 | tee -a "$log"
else
  echo "test $BROWSER_TEST ... SKIPPED (no chromium)"
  echo "test result: ok. 0 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out (browser test SKIPPED)" >> "$log"
fi
# The README's main command on a new machine: a minimal Debian 12 root with gcc, git and the
# pinned Rust release only (scripts/fresh-machine.sh). Counted as one test; SKIPPED where this
# machine cannot build the root (not root, no /dev/kvm).
step "fresh-machine check (scripts/fresh-machine.sh)"
if [ "$(id -u)" -eq 0 ] && [ -c /dev/kvm ]; then
  if bash scripts/fresh-machine.sh; then
    echo "test result: ok. 1 passed; 0 failed; 0 ignored (fresh-machine check)" >> "$log"
  else
    echo "test result: FAILED. 0 passed; 1 failed; 0 ignored (fresh-machine check)" >> "$log"
    fresh_failed=1
  fi
else
  echo "fresh-machine check ... SKIPPED (needs root and /dev/kvm)"
  echo "test result: ok. 0 passed; 0 failed; 1 ignored (fresh-machine check SKIPPED)" >> "$log"
fi
# One closing line over every test binary (cargo's own last line is often an empty doc-test run).
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "\ntdxlab tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
[ -z "${fresh_failed:-}" ] || { echo "the fresh-machine check failed (above)"; exit 1; }

# The same KVM tests (and every run/stress shape) on stock kvm_amd, nested under QEMU's TCG,
# at MAXPHYADDR 48 and 39: this machine's /dev/kvm may be a KVM that behaves differently.
step "stock-KVM lane (scripts/kvm-lane.sh)"
bash scripts/kvm-lane.sh
