#!/usr/bin/env bash
# The fresh-machine check: the README's main command, exactly as written, on a new machine.
#
#   scripts/fresh-machine.sh [--rev REV] [--command CMD]
#
# A new machine of the kind this project runs on is Debian 12 with gcc, rustup and one Rust
# release, and nothing else. This script builds such a machine as a minimal Debian 12 root
# (debootstrap --variant=minbase with gcc, libc6-dev, ca-certificates and git; rustup, with
# the release rust-toolchain.toml pins as its only toolchain, without the guest's target and
# with RUSTUP_AUTO_INSTALL=0, as a new machine runs), bind-mounts /dev/kvm into it, clones
# this repository (REV, default HEAD) into it afresh, and runs the main command with an empty
# CARGO_HOME (so every crate comes from crates.io) and nothing from scripts/setup.sh. It
# passes only if the command exits 0 and prints PASSED.
#
# The root is cached in target/fresh-machine (or $TDXLAB_FRESH_DIR): the Debian packages and
# the toolchain are fetched once; the clone, the registry, the build and the guest's target
# are new each run. Needs root (chroot, mounts), /dev/kvm, and debootstrap (installed with
# apt-get when missing: it is the test command's own need). Exit codes: 0 passed, 1 the
# command failed or did not print PASSED, 2 bad usage, 3 this machine cannot build the root.
set -euo pipefail
cd "$(dirname "$0")/.."

REV=HEAD
COMMAND="cargo run --release -- stress"
while [ $# -gt 0 ]; do
  case "$1" in
    --rev) [ $# -ge 2 ] || { echo "fresh-machine: --rev needs a value" >&2; exit 2; }; REV="$2"; shift 2 ;;
    --command) [ $# -ge 2 ] || { echo "fresh-machine: --command needs a value" >&2; exit 2; }; COMMAND="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fresh-machine: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

T0=$(date +%s)
step() { printf '[fresh-machine %4ds] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { echo "fresh-machine: $*" >&2; exit "${2:-3}"; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot and mounts)"
[ -c /dev/kvm ] || die "needs /dev/kvm"
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
PIN=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
[ -n "$PIN" ] || die "no channel in rust-toolchain.toml"
COMMIT=$(git rev-parse --verify "$REV^{commit}") || die "no commit $REV" 2
RUSTUP_BIN=$(command -v rustup) || die "needs rustup (its binary installs rustup in the root)"
RUSTUP_BIN=$(readlink -f "$RUSTUP_BIN")

WORK="${TDXLAB_FRESH_DIR:-$PWD/target/fresh-machine}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
ROOT="$WORK/root-$SUITE-$PIN"
LOG="$WORK/run.log"

# Run CMD... chrooted in ROOT, in a mount namespace of its own: /proc, /sys, a small /dev with
# /dev/kvm bind-mounted. The mounts vanish with the namespace, so nothing is left mounted
# under the work folder whatever happens.
in_root() { # ROOT CMD...
  unshare --mount --propagation private bash -c '
    set -e
    root=$1; shift
    mount -t proc proc "$root/proc"
    mount -t sysfs sys "$root/sys"
    mount -t tmpfs -o mode=0755 dev "$root/dev"
    for d in null zero full random urandom tty kvm; do
      [ -e "/dev/$d" ] || continue
      touch "$root/dev/$d"; mount --bind "/dev/$d" "$root/dev/$d"
    done
    mkdir -p "$root/dev/shm" "$root/dev/pts"
    mount -t tmpfs -o mode=1777 shm "$root/dev/shm"
    ln -s /proc/self/fd "$root/dev/fd"
    exec chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb \
      PATH=/root/.cargo/bin:/usr/bin:/bin:/usr/sbin:/sbin RUSTUP_AUTO_INSTALL=0 "$@"
  ' in-root "$@"
}
# Remove a root, refusing if anything is still mounted under it.
remove_root() { # DIR
  if grep -q " $1/" /proc/mounts; then die "something is still mounted under $1"; fi
  rm -rf "$1"
}

# --- 1. The machine: Debian 12 minbase, gcc, git, rustup with the pinned release ---------
if [ ! -e "$ROOT/.tdxlab-root-ready" ]; then
  if ! command -v debootstrap >/dev/null; then
    step "installing debootstrap (apt-get)"
    { apt-get install -y -qq --no-install-recommends debootstrap >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 \
           && apt-get install -y -qq --no-install-recommends debootstrap >/dev/null 2>&1; }; } \
      || die "apt-get install debootstrap failed"
  fi
  remove_root "$ROOT"; remove_root "$ROOT.tmp"
  step "debootstrap --variant=minbase $SUITE (gcc, libc6-dev, ca-certificates, git)"
  # In its own mount namespace: debootstrap mounts /proc in the root while it installs.
  unshare --mount --propagation private debootstrap --variant=minbase \
    --include=gcc,libc6-dev,ca-certificates,git "$SUITE" "$ROOT.tmp" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
  cp /etc/resolv.conf "$ROOT.tmp/etc/resolv.conf"
  # The machine's own network set-up goes along: certificate authorities installed locally
  # (a network that inspects TLS) are trusted in the root as on the machine.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOT.tmp/usr/local/share/ca-certificates/"
    in_root "$ROOT.tmp" update-ca-certificates >/dev/null 2>&1 \
      || die "update-ca-certificates failed in the root"
  fi
  step "rustup with Rust $PIN only (profile minimal, as a new machine has it)"
  install -m 0755 "$RUSTUP_BIN" "$ROOT.tmp/tmp/rustup-init"
  in_root "$ROOT.tmp" /tmp/rustup-init -y -q --no-modify-path --profile minimal \
    --default-toolchain "$PIN" >"$WORK/rustup.log" 2>&1 \
    || { tail -n 20 "$WORK/rustup.log" >&2; die "installing rustup failed"; }
  rm -f "$ROOT.tmp/tmp/rustup-init"
  touch "$ROOT.tmp/.tdxlab-root-ready"
  mv "$ROOT.tmp" "$ROOT"
fi
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"

# What a run must not inherit: the guest's target (the build script adds it, as on a new
# machine), an earlier clone, registry or build.
if in_root "$ROOT" rustup target list --installed --toolchain "$PIN" 2>/dev/null \
    | grep -qx x86_64-unknown-none; then
  in_root "$ROOT" rustup target remove --toolchain "$PIN" x86_64-unknown-none >/dev/null 2>&1 || true
fi
rm -rf "$ROOT/fresh"
mkdir -p "$ROOT/fresh/cargo-home"
step "clone of $(git rev-parse --short "$COMMIT") into the root"
git clone -q --no-hardlinks "$PWD" "$ROOT/fresh/tdxlab"
git -C "$ROOT/fresh/tdxlab" checkout -q "$COMMIT"
in_root "$ROOT" rustc --version | sed 's/^/  toolchain: /'

# --- 2. The main command, as the README writes it -----------------------------------------
step "running: $COMMAND (empty CARGO_HOME, RUSTUP_AUTO_INSTALL=0, /dev/kvm bind-mounted)"
set +e
in_root "$ROOT" CARGO_HOME=/fresh/cargo-home bash -c "cd /fresh/tdxlab && $COMMAND" 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -eq 0 ] && grep -q 'PASSED' "$LOG"; then
  step "PASSED: the main command works on a new machine (log: $LOG)"
  exit 0
fi
step "FAILED: '$COMMAND' exited $rc$(grep -q PASSED "$LOG" || echo ', no PASSED') (log: $LOG)"
exit 1
