#!/usr/bin/env bash
# The stock-KVM lane: tdxlab on a real, hardware-assisted kvm_amd (Debian's stock kernel),
# inside QEMU's TCG emulation of AMD SVM with nested paging, at several MAXPHYADDR widths.
#
#   scripts/kvm-lane.sh [--phys-bits "48 39"] [--soak SECONDS] [--keep]
#                       [--only TEST_FILTER] [--repeat N] [--linux-td]
#
# Everything comes from Debian's archive through a private apt state in the work folder
# (target/kvm-lane, or $TDXLAB_LANE_DIR; downloads are cached there); nothing is installed on
# the machine. For each width it boots the kernel with an initramfs holding busybox, the KVM
# modules, the release `tdxlab` and the KVM integration tests, and runs inside: `tdxlab caps`,
# `run` on 1, 2 and 4 vCPUs, every `stress` scenario briefly with and without injection, and
# the integration test binaries. Each inner command's exit code comes back as one line; the
# script prints a verdict per width and exits non-zero if anything failed or a boot did not
# finish. Widths run in parallel (single-threaded TCG uses one host core each).
#
# --soak SECONDS adds the long checks (not run by CI): a 4-vCPU random stress of that length
# with injection on, the alternating-pages scenario over 2 GiB of RAM, and `bench convert`. --keep leaves the
# initramfs (the per-width logs always stay in the work folder). --only TEST_FILTER runs just
# the integration tests whose names contain it, --repeat N runs the test binaries N times: both
# for chasing an intermittent failure. A failed command's whole output (up to 400 lines) goes
# to the width's log, and its failure lines to this script's output. --linux-td also boots
# the lane's own Debian kernel as a TD under tdxlab (`run --kernel`, docs/linux-td.md) with a
# busybox initramfs; with --only linux-td, nothing else runs ($TDXLAB_LINUX_TD_APPEND adds to
# its kernel command line).
set -euo pipefail
cd "$(dirname "$0")/.."

PHYS_BITS="48 39"
SOAK=0
KEEP=0
ONLY=""
REPEAT=1
LINUX_TD=0
while [ $# -gt 0 ]; do
  case "$1" in
    --phys-bits) PHYS_BITS="$2"; shift 2 ;;
    --soak) SOAK="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --only) ONLY="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    --linux-td) LINUX_TD=1; shift ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "kvm-lane: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

# Debian's packages: QEMU 10.0 from bookworm-backports (bookworm's 7.2 TCG corrupts the nested
# kernel), the 6.12 cloud kernel (small, with kvm.ko and kvm-amd.ko), a static busybox.
SUITES="bookworm bookworm-backports"
QEMU_PKGS="qemu-system-x86 qemu-system-common qemu-system-data seabios"
KERNEL_META="linux-image-cloud-amd64"
# The integration tests that need /dev/kvm (the others run the same on any host).
LANE_TESTS="kvm_boot stress cli perf_counts"
INNER_TIMEOUT=600   # one inner command, seconds
BOOT_TIMEOUT=1500   # one boot, seconds

WORK="${TDXLAB_LANE_DIR:-$PWD/target/kvm-lane}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
T0=$(date +%s)
step() { printf '[kvm-lane %4ds] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { echo "kvm-lane: $*" >&2; exit 1; }

for tool in apt-get apt-cache dpkg-deb cargo; do
  command -v "$tool" >/dev/null || die "$tool is required"
done

# --- 1. Debian packages through a private apt state ------------------------------------
APT_DIR="$WORK/apt"
mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$WORK/debs"
: > "$APT_DIR/sources.list"
for s in $SUITES; do echo "deb http://deb.debian.org/debian $s main" >> "$APT_DIR/sources.list"; done
APT=(-o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Etc::SourceList=$APT_DIR/sources.list"
     -o "Dir::Etc::SourceParts=/dev/null" -o "Dir::Cache=$APT_DIR/cache"
     -o "APT::Default-Release=bookworm" -o "APT::Sandbox::User=$(id -un)" -o "Debug::NoLocking=1")
step "apt-get update (private state in $APT_DIR)"
apt-get "${APT[@]}" update -qq >"$WORK/apt-update.log" 2>&1 || { cat "$WORK/apt-update.log" >&2; die "apt-get update failed"; }

# The kernel: the package the backports metapackage depends on (linux-image-6.12.*-cloud-amd64).
KERNEL_PKG=$(apt-cache "${APT[@]}" depends "$KERNEL_META/bookworm-backports" 2>/dev/null \
  | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\).*/\1/p' | head -n 1)
[ -n "$KERNEL_PKG" ] || die "no linux-image-*-cloud-amd64 in bookworm-backports"
# QEMU and the libraries it needs that this machine lacks, as apt would install them.
mapfile -t QEMU_SET < <(apt-get "${APT[@]}" -s install --no-install-recommends \
  $(for p in $QEMU_PKGS; do echo "$p/bookworm-backports"; done) 2>&1 \
  | awk '/^Inst / { v = $3; gsub(/[()]/, "", v); print $2 "=" v }')
[ ${#QEMU_SET[@]} -gt 0 ] || die "apt could not resolve $QEMU_PKGS from bookworm-backports"
WANT=("${QEMU_SET[@]}" "$KERNEL_PKG" busybox-static)
step "downloading ${#WANT[@]} packages (cached in $WORK/debs)"
(
  cd "$WORK/debs"
  for p in "${WANT[@]}"; do
    name=${p%%=*}
    ls "${name}"_*.deb >/dev/null 2>&1 && continue
    apt-get "${APT[@]}" download -qq "$p" >/dev/null 2>>"$WORK/apt-download.log" \
      || { cat "$WORK/apt-download.log" >&2; exit 1; }
  done
) || die "downloading packages failed"

ROOT="$WORK/root"
if [ ! -f "$ROOT/.complete" ] || [ "$(cat "$ROOT/.complete")" != "${WANT[*]}" ]; then
  step "unpacking into $ROOT"
  rm -rf "$ROOT"; mkdir -p "$ROOT"
  for p in "${WANT[@]}"; do dpkg-deb -x "$WORK/debs/${p%%=*}"_*.deb "$ROOT"; done
  echo "${WANT[*]}" > "$ROOT/.complete"
fi
QEMU="$ROOT/usr/bin/qemu-system-x86_64"
export LD_LIBRARY_PATH="$ROOT/usr/lib/x86_64-linux-gnu:$ROOT/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$QEMU" --version | head -n 1 | sed 's/^/  /'
KVER=$(ls "$ROOT/lib/modules" | head -n 1)
VMLINUZ="$ROOT/boot/vmlinuz-$KVER"
[ -f "$VMLINUZ" ] || die "no kernel image in $KERNEL_PKG"
echo "  kernel $KVER"

# --- 2. What runs inside: tdxlab and the KVM integration tests (release) ----------------
step "cargo build --release (tdxlab and the KVM integration tests)"
cargo build --release -q -p tdxlab --bin tdxlab
# Chasing the Linux TD alone needs no test binaries (a smaller initramfs boots faster).
[ "$ONLY" = linux-td ] && LANE_TESTS=""
TESTS_JSON=""
[ -z "$LANE_TESTS" ] || TESTS_JSON=$(cargo test --release -q -p tdxlab --no-run \
  --message-format=json $(for t in $LANE_TESTS; do echo "--test $t"; done))
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
TDXLAB="$TARGET_DIR/release/tdxlab"   # where the test binaries look for it (CARGO_BIN_EXE_tdxlab)
[ -x "$TDXLAB" ] || die "no $TDXLAB"
declare -A TEST_BIN
for t in $LANE_TESTS; do
  TEST_BIN[$t]=$(echo "$TESTS_JSON" | grep "\"name\":\"$t\"" | grep -o '"executable":"[^"]*"' | cut -d'"' -f4 | tail -n 1)
  [ -x "${TEST_BIN[$t]}" ] || die "no test binary for $t"
done

# The lane's kernel is also the kernel a Linux TD boots: read it as tdxlab reads a kernel
# (PVH entry, TDCALL sites inside Linux's TDX_MODULE_CALL). Its 6.12 build has exactly 3.
step "tdxlab inspect $(basename "$VMLINUZ") (what a Linux TD boots)"
KINFO=$("$TDXLAB" inspect "$VMLINUZ") || die "tdxlab cannot read $VMLINUZ"
echo "$KINFO" | sed 's/^/  /'
grep -q '^  PVH entry *0x' <<<"$KINFO" || die "$VMLINUZ has no PVH entry"
grep -q '^  TDCALL sites: 3,' <<<"$KINFO" || die "$VMLINUZ does not hold Linux 6.12's 3 TDCALL sites"

# --- 3. The initramfs --------------------------------------------------------------------
IR="$WORK/initramfs"
step "initramfs in $IR"
rm -rf "$IR"; mkdir -p "$IR"/{bin,proc,sys,dev,tmp,lib/modules,tests}
cp "$ROOT/bin/busybox" "$IR/bin/busybox"
for m in virt/lib/irqbypass arch/x86/kvm/kvm arch/x86/kvm/kvm-amd; do
  src="$ROOT/lib/modules/$KVER/kernel/$m.ko"
  if [ -f "$src.xz" ]; then "$IR/bin/busybox" xz -dc "$src.xz" > "$IR/lib/modules/$(basename "$m").ko"
  elif [ -f "$src" ]; then cp "$src" "$IR/lib/modules/"
  else die "module $m missing from $KERNEL_PKG"; fi
done
mkdir -p "$IR$(dirname "$TDXLAB")"
cp "$TDXLAB" "$IR$TDXLAB"
for t in $LANE_TESTS; do cp "${TEST_BIN[$t]}" "$IR/tests/$t"; done
for bin in "$TDXLAB" "${TEST_BIN[@]}"; do
  for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    mkdir -p "$IR$(dirname "$lib")"; cp -L "$lib" "$IR$lib"
  done
done
# The Linux TD: the lane's kernel again, with an initramfs whose init says it ran (through
# /dev/kmsg: the kernel's console) and what the kernel found, then powers off.
if [ $LINUX_TD -eq 1 ]; then
  TDIR="$WORK/linux-td-initramfs"
  rm -rf "$TDIR"; mkdir -p "$TDIR"/{bin,proc,sys,dev}
  cp "$ROOT/bin/busybox" "$TDIR/bin/busybox"
  cat > "$TDIR/init" <<'TDEOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
# KERN_ERR: shown on the console under `quiet` (every console byte is a #VE and a TDVMCALL).
say() { echo "<3>LINUX-TD $*" > /dev/kmsg; }
say "init runs: $(uname -r), $(grep -c ^processor /proc/cpuinfo) CPUs"
grep -q tdx_guest /proc/cpuinfo && say "cpuinfo has tdx_guest"
dmesg | grep -E 'tdx|TDX|Memory Encryption|idle routine|software IO TLB|swiotlb' | while read -r l; do say "dmesg: $l"; done
say "done"
poweroff -f
TDEOF
  chmod +x "$TDIR/init"
  mkdir -p "$IR/linux-td"
  cp "$VMLINUZ" "$IR/linux-td/vmlinuz"
  (cd "$TDIR" && find . | "$TDIR/bin/busybox" cpio -o -H newc 2>/dev/null) > "$IR/linux-td/initrd.cpio"
fi
LINUX_TD_APPEND="console=ttyS0 earlycon=uart8250,io,0x3f8,115200 quiet swiotlb=4096 rdinit=/init panic=-1${TDXLAB_LINUX_TD_APPEND:+ $TDXLAB_LINUX_TD_APPEND}"

STRESS_SECONDS=2
cat > "$IR/init" <<EOF
#!/bin/busybox sh
# tdxlab's stock-KVM lane, inside the nested VM: each command's exit code on one line.
# (The initramfs is the writable root; no tmpfs over /tmp, where tdxlab may live.)
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
insmod /lib/modules/irqbypass.ko && insmod /lib/modules/kvm.ko && insmod /lib/modules/kvm-amd.ko npt=1
echo "LANE-HOST kvm_amd npt=\$(cat /sys/module/kvm_amd/parameters/npt) \$(grep -m1 'address sizes' /proc/cpuinfo)"
# QEMU's TCG restores CR0 before CR4/EFER on #VMEXIT and loses paging with the TD start state
# (EFER.LME set, CR4.PAE clear); tdxlab sets CR4.PAE in the start state for this lane only.
export TDXLAB_LANE_CR4_PAE=1 RUST_BACKTRACE=1
T=$TDXLAB
n=0
lane() { # NAME COMMAND...: run it, print its output and one result line
  name=\$1; shift; n=\$((n+1))
  timeout $INNER_TIMEOUT "\$@" > /tmp/out 2>&1; rc=\$?
  if [ \$rc -ne 0 ]; then echo "LANE-OUTPUT \$name begin"; head -n 400 /tmp/out; echo "LANE-OUTPUT \$name end"; fi
  echo "LANE-RESULT \$name rc=\$rc"
}
if [ $LINUX_TD -eq 1 ] && { [ -z "$ONLY" ] || [ "$ONLY" = linux-td ]; }; then
  # Streamed to the console as it runs (a boot is slow under nested TCG); passes when the
  # exit code is the expected one and every pattern is in the output.
  linux_td() { # NAME VCPUS EXPECTED_RC TD_ATTRIBUTES PATTERN...
    name=\$1 v=\$2 want=\$3 attrs=\$4; shift 4; n=\$((n+1))
    ( TDXLAB_TEST_TD_ATTRIBUTES=\$attrs timeout $INNER_TIMEOUT \$T run --kernel /linux-td/vmlinuz \
        --initrd /linux-td/initrd.cpio --vcpus \$v --mem 512M --timeout 500 \
        --append "$LINUX_TD_APPEND" --report /tmp/ltd.json 2>&1; echo \$? > /tmp/rc ) \
      | tee /tmp/out | sed "s/^/LANE-LINUX-TD \$name: /"
    grep -E '"(pages_added|mr_extends|conversions_to_shared|conversions_to_private|pages_converted|MapGPA|Instruction.HLT|ReportFatalError|TDG.VP.INFO|TDG.VP.VEINFO.GET|TDG.VM.RD|TDG.VM.WR|TDG.VP.VMCALL|TDG.MEM.PAGE.ACCEPT)"' \
      /tmp/ltd.json 2>/dev/null | tr -d ' ' | sed "s/^/LANE-LINUX-TD \$name: report /"
    rc=\$(cat /tmp/rc)
    for p in "\$@"; do grep -q -- "\$p" /tmp/out || { echo "LANE-LINUX-TD \$name: missing '\$p'"; rc=99; }; done
    [ "\$rc" = "\$want" ] && rc=0
    echo "LANE-RESULT \$name rc=\$rc"
  }
  linux_td linux-td-1vcpu 1 0 0x10000000 "tdx: Guest detected" "using TDX aware idle routine" \
    "LINUX-TD init runs: .*, 1 CPUs" "cpuinfo has tdx_guest" "power_off"
  linux_td linux-td-2vcpu 2 0 0x10000000 "tdx: Guest detected" "LINUX-TD init runs: .*, 2 CPUs" "power_off"
  # Without SEPT_VE_DISABLE (and DEBUG), Linux refuses to run and says so through
  # TDVMCALL<ReportFatalError> (disable_sept_ve in arch/x86/coco/tdx/tdx.c).
  linux_td linux-td-sept-ve 1 1 0x0 "SEPT #VE has to be disabled"
fi
if [ -z "$ONLY" ]; then
lane caps \$T caps
lane bench-doorbell \$T bench doorbell; sed 's/^/LANE-BENCH /' /tmp/out
for v in 1 2 4; do lane run-\${v}vcpu \$T run --vcpus \$v --timeout 120; done
for s in explicit punch-hole implicit boundary random alternate; do
  lane stress-\$s \$T stress --scenario \$s --vcpus 2 --seconds $STRESS_SECONDS --timeout 300
  lane stress-\$s-inject \$T stress --scenario \$s --vcpus 4 --seconds $STRESS_SECONDS --timeout 300 \\
    --inject retry=0.2,busy=0.1,private-page-size=2m,host-invalidate-hz=50
done
if [ $SOAK -gt 0 ]; then
  lane soak-${SOAK}s \$T stress --scenario random --vcpus 4 --seconds $SOAK --timeout $((SOAK + 600)) \\
    --inject retry=0.2,busy=0.1,private-page-size=2m,host-invalidate-hz=50
  grep -E 'PASSED|FAILED|conversions  |pages converted|mismatches|audit|injected' /tmp/out | sed 's/^/LANE-SOAK /'
  lane alternate-2G \$T stress --scenario alternate --vcpus 4 --mem 2G --no-measure --timeout 3000
  grep -E 'PASSED|FAILED|conversions  |audit' /tmp/out | sed 's/^/LANE-SOAK /'
  lane bench-convert \$T bench convert; sed 's/^/LANE-BENCH /' /tmp/out
fi
fi
[ "$ONLY" = linux-td ] || for i in \$(seq $REPEAT); do
for t in $LANE_TESTS; do
  cd /tmp; lane test-\$t /tests/\$t --test-threads=2 --include-ignored $ONLY
  grep '^test result:' /tmp/out | sed "s/^/LANE-TESTS \$t /"
done
done
echo "LANE-DONE \$n"
poweroff -f
EOF
chmod +x "$IR/init"
(cd "$IR" && find . | "$IR/bin/busybox" cpio -o -H newc 2>/dev/null) > "$WORK/initramfs.cpio"
echo "  $(du -h "$WORK/initramfs.cpio" | cut -f1) initramfs"

# --- 4. Boot each width ------------------------------------------------------------------
# Single-threaded TCG: multi-threaded TCG corrupts nested SVM state under this load (L1
# kernel addresses in the L2 guest's RIP, CPUs that stop taking interrupts).
boot() { # PHYS_BITS LOG
  timeout "$BOOT_TIMEOUT" "$QEMU" -L "$ROOT/usr/share/seabios" -L "$ROOT/usr/share/qemu" \
    -accel tcg,thread=single -cpu "EPYC,+svm,+npt,phys-bits=$1" -m "$VM_MEM" -smp 2 \
    -kernel "$VMLINUZ" -initrd "$WORK/initramfs.cpio" \
    -append "console=ttyS0 panic=-1 quiet" \
    -display none -vga none -nic none -serial stdio -no-reboot </dev/null >"$2" 2>&1
}
VM_MEM=4G
[ "$SOAK" -gt 0 ] && VM_MEM=6G   # the 2 GiB alternating TD, its two backings and the tests
declare -A PID LOG
for b in $PHYS_BITS; do
  LOG[$b]="$WORK/lane-phys$b.log"
  step "booting stock kvm_amd at phys-bits=$b (log: ${LOG[$b]})"
  boot "$b" "${LOG[$b]}" & PID[$b]=$!
done
status=0
for b in $PHYS_BITS; do
  wait "${PID[$b]}" || true
  log=${LOG[$b]}
  sed -i 's/\r$//' "$log"   # the serial console ends lines with CR LF
  step "phys-bits=$b: $(grep -m1 '^LANE-HOST' "$log" | cut -d' ' -f2- || echo 'no host line')"
  failed=$(grep '^LANE-RESULT' "$log" | grep -v 'rc=0$' || true)
  passed=$(grep -c '^LANE-RESULT .* rc=0$' "$log" || true)
  grep '^LANE-TESTS\|^LANE-SOAK\|^LANE-BENCH' "$log" | sed 's/^LANE-[A-Z]* /  /' || true
  grep '^LANE-LINUX-TD' "$log" | sed 's/^LANE-LINUX-TD /  linux-td | /' | tail -n 60 || true
  if ! grep -q '^LANE-DONE' "$log"; then
    echo "  FAILED: the boot did not finish (see $log)"; tail -n 30 "$log" | sed 's/^/  | /'; status=1
  elif [ -n "$failed" ]; then
    echo "$failed" | sed 's/^LANE-RESULT /  FAILED: /'; status=1
    # What failed, in the CI log too: the failure lines of each failed command's output.
    sed -n '/^LANE-OUTPUT .* begin$/,/^LANE-OUTPUT .* end$/p' "$log" \
      | grep -E 'LANE-OUTPUT .* begin|panicked at|FAILED|[Ee]rror|fatal|timed out|exit' \
      | head -n 60 | sed 's/^/  | /' || true
  fi
  echo "  phys-bits=$b: $passed passed$( [ -n "$failed" ] && echo ", $(echo "$failed" | wc -l) failed")"
done
[ $KEEP -eq 1 ] || rm -rf "$IR"
if [ $status -eq 0 ]; then
  step "stock-KVM lane PASSED at phys-bits $PHYS_BITS"
else
  step "stock-KVM lane FAILED (logs in $WORK)"
fi
exit $status
