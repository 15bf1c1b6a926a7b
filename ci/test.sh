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
# usable, and are counted as skipped where it is not.
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
  kvm_args=(-- --include-ignored)
  step "cargo test --workspace -- --include-ignored (/dev/kvm is usable)"
else
  kvm_args=()
  step "cargo test --workspace (no usable /dev/kvm: the KVM tests are SKIPPED)"
fi
log=$(mktemp)
cargo test --workspace "${kvm_args[@]}" 2>&1 | tee "$log"
# One closing line over every test binary (cargo's own last line is often an empty doc-test run).
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "\ntdxlab tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"

# The same KVM tests (and every run/stress shape) on stock kvm_amd, nested under QEMU's TCG,
# at MAXPHYADDR 48 and 39: this machine's /dev/kvm may be a KVM that behaves differently.
step "stock-KVM lane (scripts/kvm-lane.sh)"
bash scripts/kvm-lane.sh
