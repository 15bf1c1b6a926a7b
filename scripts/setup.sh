#!/usr/bin/env bash
# Installs what the test command (ci/test.sh) needs on a fresh Debian machine: the Rust
# toolchain pinned in rust-toolchain.toml (with rustfmt, clippy and the x86_64-unknown-none
# target) and the Debian packages listed below. The main command needs none of this (cargo and
# the host's build script fetch what it needs). It never changes the machine's default
# toolchain. Safe to run repeatedly; does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: ovmf ships /usr/share/ovmf/OVMF.fd, a third-party TDVF image that
# `tdxlab inspect` is tested against. Building needs nothing but a C linker (no build script
# compiles C or runs bindgen).
PACKAGES=(ovmf)

# Run a step quietly; if it fails, say which and show what it printed.
quiet() { # WHAT COMMAND...
  local what=$1 out; shift
  if ! out=$("$@" 2>&1); then
    echo "setup: $what failed ($*):" >&2
    printf '%s\n' "$out" | tail -n 20 | sed 's/^/  | /' >&2
    return 1
  fi
}

if command -v rustup >/dev/null; then
  # The pinned release, by name: `rustup toolchain install` of a named release touches neither
  # the default toolchain nor `stable`. A failure here is reported; the checks below decide
  # whether it matters.
  TOOLCHAIN=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
  [ -n "$TOOLCHAIN" ] || { echo "setup: no channel in rust-toolchain.toml" >&2; exit 1; }
  quiet "installing toolchain $TOOLCHAIN" rustup toolchain install "$TOOLCHAIN" --profile minimal \
    --component rustfmt --component clippy --target x86_64-unknown-none || true
  quiet "adding rustfmt and clippy" rustup component add --toolchain "$TOOLCHAIN" rustfmt clippy || true
  quiet "adding the x86_64-unknown-none target" \
    rustup target add --toolchain "$TOOLCHAIN" x86_64-unknown-none || true
  rustup target list --installed --toolchain "$TOOLCHAIN" | grep -qx x86_64-unknown-none \
    || { echo "setup: could not install the x86_64-unknown-none target (see above)" >&2; exit 1; }
  for c in rustfmt clippy; do
    rustup component list --installed --toolchain "$TOOLCHAIN" | grep -q "^$c" \
      || { echo "setup: could not install $c for $TOOLCHAIN (see above)" >&2; exit 1; }
  done
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
  quiet "apt-get update" $SUDO apt-get update -qq || exit 1
  quiet "apt-get install ${missing[*]}" env DEBIAN_FRONTEND=noninteractive \
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" || exit 1
fi
