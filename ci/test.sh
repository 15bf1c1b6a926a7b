#!/usr/bin/env bash
# The one test command (README): formatting, lints, the guest build, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

step() { printf '\n==> %s\n' "$*"; }
step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
step "guest build and clippy (x86_64-unknown-none)"
cargo build -p tdxlab-guest --target x86_64-unknown-none --release
cargo clippy -p tdxlab-guest --target x86_64-unknown-none -- -D warnings
step "cargo test --workspace"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
# One closing line over every test binary (cargo's own last line is often an empty doc-test run).
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "\ntdxlab tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
# cargo hides a passing test's output, so say it here too when the KVM tests could not run.
{ [ -r /dev/kvm ] && [ -w /dev/kvm ]; } || echo "SKIPPED: no usable /dev/kvm (KVM integration tests passed without running)"

# The same KVM tests (and every run/stress shape) on stock kvm_amd, nested under QEMU's TCG,
# at MAXPHYADDR 48 and 39: this machine's /dev/kvm may be a KVM that behaves differently.
step "stock-KVM lane (scripts/kvm-lane.sh)"
bash scripts/kvm-lane.sh
