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
step "guest build (x86_64-unknown-none)"
cargo build -p tdxlab-guest --target x86_64-unknown-none --release
step "cargo test --workspace"
cargo test --workspace
