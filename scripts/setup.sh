#!/usr/bin/env bash
# Installs what tdxlab's commands need on a fresh Debian machine: the Rust toolchain named in
# rust-toolchain.toml (with rustfmt, clippy and the x86_64-unknown-none target) and the Debian
# packages listed below. Safe to run repeatedly; does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: ovmf ships /usr/share/ovmf/OVMF.fd, a third-party TDVF image
# that `tdxlab inspect` is tested against.
PACKAGES=(ovmf)

if command -v rustup >/dev/null; then
  # Reads rust-toolchain.toml; installs the channel, components and targets it lists.
  rustup toolchain install >/dev/null 2>&1 || true
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
  rustup target add x86_64-unknown-none >/dev/null 2>&1 || true
  rustup target list --installed | grep -qx x86_64-unknown-none \
    || { echo "setup: could not install the x86_64-unknown-none target" >&2; exit 1; }
else
  echo "setup: rustup is required (https://rustup.rs)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
