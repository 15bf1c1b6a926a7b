#!/usr/bin/env bash
# Boot tdxlab's guest image in QEMU's TDX mode on a TDX host (docs/tdx-hardware.md).
#
#   scripts/qemu-tdx.sh [--dry-run] [--no-debug-exit] [--mem SIZE] [--smp N] [--qemu PATH]
#                       [QEMU ARGS...]
#
# Writes the built-in guest image (`tdxlab image -o`), checks the host one line per problem
# (QEMU 10.1 or newer with a tdx-guest object, kvm_intel loaded with tdx=Y, KVM offering the
# TDX VM type), then runs QEMU with the command line of QEMU's own TDX documentation
# (docs/system/i386/tdx.rst) plus isa-debug-exit for the verdict. The guest writes 0 to the
# exit port on success, so QEMU exits (0 << 1) | 1 = 1; this script turns that into 0 and
# anything else into 1. With --no-debug-exit there is no exit device: the guest finds QEMU's
# ACPI tables through fw_cfg and powers off (S5), QEMU exits 0, and the verdict is read from
# the console (the power-off line, and no PANIC). --dry-run prints the QEMU command and stops
# (no checks, no QEMU).
# Extra arguments go to QEMU as they are. Exit codes: 0 the guest passed; 1 it failed or QEMU
# could not run it; 2 bad usage; 3 the host cannot run a TD (a preflight check failed).
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
DEBUG_EXIT=1
MEM=2G
SMP=2
QEMU=${QEMU:-qemu-system-x86_64}
EXTRA=()
# A flag's value, or one line and the usage exit code 2 (bash's own ${2:?} would exit 1
# with its line number).
need() {
  if [ -z "${3-}" ]; then echo "qemu-tdx: $1 needs $2" >&2; exit 2; fi
}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1; shift ;;
    --mem) need --mem "a size" "${2-}"; MEM=$2; shift 2 ;;
    --smp) need --smp "a count" "${2-}"; SMP=$2; shift 2 ;;
    --qemu) need --qemu "a path" "${2-}"; QEMU=$2; shift 2 ;;
    --no-debug-exit) DEBUG_EXIT=0; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) EXTRA+=("$1"); shift ;;
  esac
done
case "$SMP" in ''|*[!0-9]*) echo "qemu-tdx: --smp $SMP is not a number" >&2; exit 2 ;; esac

TDXLAB=${TDXLAB:-target/release/tdxlab}
IMAGE=${TDXLAB_IMAGE:-target/tdxlab-guest.fd}
CMD=("$QEMU" -accel kvm -cpu host
  -object tdx-guest,id=tdx0
  -machine q35,kernel-irqchip=split,confidential-guest-support=tdx0
  -bios "$IMAGE" -m "$MEM" -smp "$SMP" -nographic)
[ $DEBUG_EXIT -eq 0 ] || CMD+=(-device isa-debug-exit,iobase=0xf4,iosize=0x04)
CMD+=("${EXTRA[@]}")

# The command as a shell would take it: arguments quoted only where they need it.
show() {
  local out="" a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./,=:+@%-]+$ ]]; then out+=" $a"; else out+=" $(printf '%q' "$a")"; fi
  done
  echo "${out# }"
}
if [ $DRY -eq 1 ]; then
  show "${CMD[@]}"
  exit 0
fi

fail() { echo "qemu-tdx: $*" >&2; status=3; }
status=0
if [ ! -x "$TDXLAB" ]; then
  echo "qemu-tdx: building tdxlab (cargo build --release)" >&2
  cargo build --release -q -p tdxlab --bin tdxlab || { echo "qemu-tdx: the build failed" >&2; exit 1; }
fi
# 1. QEMU: present, 10.1 or newer, and built with TDX (a tdx-guest object).
if ! command -v "$QEMU" >/dev/null 2>&1; then
  fail "no $QEMU: install QEMU 10.1 or newer (or pass --qemu PATH)"
else
  ver=$("$QEMU" --version | sed -n 's/.*version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | head -n 1)
  read -r major minor <<<"${ver:-0 0}"
  if [ "$major" -lt 10 ] || { [ "$major" -eq 10 ] && [ "$minor" -lt 1 ]; }; then
    fail "$QEMU is version $major.$minor; TDX guests need QEMU 10.1 or newer"
  elif ! "$QEMU" -object help 2>/dev/null | grep -qw tdx-guest; then
    fail "$QEMU has no tdx-guest object (built without TDX support)"
  fi
fi
# 2. The host kernel: kvm_intel loaded with TDX enabled.
tdx_param=/sys/module/kvm_intel/parameters/tdx
if [ ! -r "$tdx_param" ]; then
  fail "kvm_intel is not loaded with TDX support ($tdx_param is missing): this is not a TDX host"
elif [ "$(cat "$tdx_param")" != "Y" ]; then
  fail "kvm_intel has tdx=$(cat "$tdx_param"): load it with tdx=1 on a TDX-enabled host"
fi
# 3. KVM offers the TDX VM type (KVM_X86_TDX_VM = 5 in KVM_CAP_VM_TYPES), as tdxlab caps reads it.
types=$("$TDXLAB" caps --json 2>/dev/null | sed -n 's/.*"vm_types": *\([0-9]*\).*/\1/p' | head -n 1)
if [ -z "$types" ]; then
  fail "tdxlab caps could not read KVM's VM types (is /dev/kvm usable?)"
elif [ $(( types >> 5 & 1 )) -ne 1 ]; then
  fail "KVM does not offer the TDX VM type (KVM_CAP_VM_TYPES = $types, bit 5 clear)"
fi
[ $status -eq 0 ] || exit $status

mkdir -p "$(dirname "$IMAGE")"
"$TDXLAB" image -o "$IMAGE"
echo "qemu-tdx: $(show "${CMD[@]}")" >&2
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
set +e
"${CMD[@]}" | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e
if [ $DEBUG_EXIT -eq 0 ]; then
  if [ $rc -eq 0 ] && grep -q "powering off: S5" "$LOG" && ! grep -q "PANIC:" "$LOG"; then
    echo "qemu-tdx: PASSED (the guest powered off through ACPI after passing)" >&2
    exit 0
  fi
  echo "qemu-tdx: FAILED (QEMU exited $rc; no ACPI power-off after a pass on the console)" >&2
  exit 1
fi
if [ $rc -eq 1 ]; then
  echo "qemu-tdx: PASSED (the guest wrote 0 to isa-debug-exit)" >&2
  exit 0
fi
echo "qemu-tdx: FAILED (QEMU exited $rc: the guest wrote a failure code to isa-debug-exit, or QEMU itself failed)" >&2
exit 1
