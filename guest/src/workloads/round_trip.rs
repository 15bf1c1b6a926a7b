//! The default workload, on every vCPU: accept a private region, convert part of it to
//! shared, write a pattern through the shared alias, convert it back, and check that the
//! re-accepted pages read zero. Linux's order: to shared = MapGPA (the shared window is
//! always mapped); to private = MapGPA, then accept.

use shared_abi::hostcheck::HostCheckOp;
use shared_abi::td::VpInfo;
use shared_abi::{Gpa, GpaRange};
use tdcall::transport::AnyTransport;
use tdcall::{HostCheck, Tdx};

pub use shared_abi::workload::{CONVERT_PAGES, REGION, REGION_BASE, STRIDE};
/// Where the guest page tables map the shared alias.
pub const SHARED_WINDOW: u64 = 0xFFFF_8000_0000_0000;

fn private_ptr(gpa: u64) -> *mut u64 {
    gpa as *mut u64
}

fn shared_ptr(gpa: u64) -> *mut u64 {
    (SHARED_WINDOW + gpa) as *mut u64
}

fn pattern(vcpu: u32, page: u64, shared: bool) -> u64 {
    (if shared { 0x55 } else { 0xAA }) << 56 | (vcpu as u64) << 32 | page
}

/// Run the round trip; panics (and so reports a fatal error) on the first failure.
pub fn conversion_round_trip(vcpu: u32, info: &VpInfo) {
    let mut tdx = crate::arch::tdx();
    let base = REGION_BASE + vcpu as u64 * STRIDE;
    let region = GpaRange::new(Gpa(base), REGION);
    let acc = tdx
        .accept(region)
        .unwrap_or_else(|e| panic!("accept {region}: {e}"));
    for p in 0..REGION / 4096 {
        // SAFETY: the page was just accepted and is identity-mapped.
        unsafe { private_ptr(base + p * 4096).write_volatile(pattern(vcpu, p, false)) };
    }
    let conv = GpaRange::new(Gpa(base), CONVERT_PAGES * 4096);
    let mut checks = shared_phase(&mut tdx, conv, info);
    checks += private_phase(&mut tdx, conv, info);
    // SAFETY: untouched by the conversion, still private and accepted.
    let kept = unsafe { private_ptr(base + CONVERT_PAGES * 4096).read_volatile() };
    if kept != pattern(vcpu, CONVERT_PAGES, false) {
        panic!("page after the converted range lost its data: {kept:#x}");
    }
    let summary = alloc::format!(
        "vCPU {vcpu}: accepted {} KiB ({} calls, {} fallbacks); {CONVERT_PAGES} pages private -> shared -> private, re-accepted zeroed; {checks} host checks passed",
        acc.total_accepted() >> 10,
        acc.calls,
        acc.fallbacks
    );
    println!("{summary}");
}

/// Private → shared: no private data shows through, the guest fills the pages, the host
/// checks them from its side and rewrites them (SYNC_SHARED), the guest sees the host's
/// bytes. Returns the host checks that passed.
fn shared_phase(tdx: &mut Tdx<AnyTransport>, conv: GpaRange, info: &VpInfo) -> u32 {
    let base = conv.start.0;
    // The conversion engine flips the PTEs: the same address now reaches the shared alias.
    crate::convert::to_shared(conv, info.gpaw).unwrap_or_else(|e| panic!("{conv} to shared: {e}"));
    for p in 0..CONVERT_PAGES {
        let gpa = base + p * 4096;
        // SAFETY: the page is shared now; its PTE carries the shared bit.
        let before = unsafe { private_ptr(gpa).read_volatile() };
        if before >> 56 == 0xAA {
            panic!("private data {before:#x} visible through the shared alias of {gpa:#x}");
        }
        // SAFETY: as above; the first touch maps the page, then the fill runs at memory speed.
        unsafe {
            private_ptr(gpa).write_volatile(0x1111_1111_1111_1111);
            core::ptr::write_bytes(private_ptr(gpa) as *mut u8, 0x11, 4096);
        }
    }
    let mut checks = 0;
    match tdx.host_check(HostCheckOp::SyncShared, conv, 0x11, 0x22) {
        Ok(HostCheck::Passed) => checks += 1,
        Ok(HostCheck::Mismatch { offset, found }) => {
            panic!("SYNC_SHARED: host saw {found:#x} at {conv}+{offset:#x}, not 0x11")
        }
        // No tdxlab host (real TDX): do the host's write ourselves.
        // SAFETY: the range is shared and mapped.
        Ok(HostCheck::Unsupported(_)) => unsafe {
            core::ptr::write_bytes(private_ptr(base) as *mut u8, 0x22, conv.len as usize)
        },
        Err(e) => panic!("SYNC_SHARED: {e}"),
    }
    for p in 0..CONVERT_PAGES {
        for off in [0, 2048, 4095] {
            // SAFETY: shared and mapped.
            let b = unsafe {
                (private_ptr(base + p * 4096) as *const u8)
                    .add(off)
                    .read_volatile()
            };
            if b != 0x22 {
                panic!(
                    "shared page {:#x} reads {b:#x} at {off}, not the host's 0x22",
                    base + p * 4096
                );
            }
        }
    }
    checks
}

/// Shared → private: the re-accepted pages read zero, and private writes stay invisible to
/// the host, which discarded the shared pages (SYNC_PRIVATE: it sees zeroes). Returns the
/// host checks that passed.
fn private_phase(tdx: &mut Tdx<AnyTransport>, conv: GpaRange, info: &VpInfo) -> u32 {
    let base = conv.start.0;
    crate::convert::to_private(conv, info.gpaw)
        .unwrap_or_else(|e| panic!("{conv} to private: {e}"));
    for p in 0..CONVERT_PAGES {
        let gpa = base + p * 4096;
        // SAFETY: re-accepted just now; its PTE is private again.
        let v = unsafe { private_ptr(gpa).read_volatile() };
        if v != 0 {
            panic!("re-accepted page {gpa:#x} reads {v:#x}, not zero");
        }
    }
    // SAFETY: re-accepted, identity-mapped.
    unsafe { core::ptr::write_bytes(private_ptr(base) as *mut u8, 0x33, conv.len as usize) };
    match tdx.host_check(HostCheckOp::SyncPrivate, conv, 0, 0) {
        Ok(HostCheck::Passed) => 1,
        Ok(HostCheck::Mismatch { offset, found }) => {
            panic!("SYNC_PRIVATE: host sees {found:#x} at {conv}+{offset:#x} after private writes")
        }
        Ok(HostCheck::Unsupported(_)) => 0,
        Err(e) => panic!("SYNC_PRIVATE: {e}"),
    }
}

/// Negative tests the host asks for through the tdxlab HOB's flags.
pub fn misbehave_if_asked(flags: u32) {
    use shared_abi::layout::hob::config::{
        ALIAS_MISMATCH, FAULT, HALT, HANG, RAW_IO, TOUCH_UNACCEPTED, TRIPLE_FAULT,
    };
    if flags & TRIPLE_FAULT != 0 {
        println!("loading an empty IDT and faulting, as asked");
        let empty = [0u16; 5];
        // SAFETY: deliberately fatal: #UD with no IDT escalates to a triple fault.
        unsafe { core::arch::asm!("lidt [{}]", "ud2", in(reg) empty.as_ptr()) };
    }
    if flags & RAW_IO != 0 {
        // Raw port I/O #VEs in a TD; the handler does it through TDVMCALL<Instruction.IO>.
        for b in b"raw OUT to COM1 through #VE\n" {
            // SAFETY: served by the #VE handler.
            unsafe {
                core::arch::asm!("out dx, al", in("dx") 0x3F8u16, in("al") *b, options(nomem, nostack))
            };
        }
        let lsr: u8;
        // SAFETY: as above.
        unsafe {
            core::arch::asm!("in al, dx", in("dx") 0x3FDu16, out("al") lsr, options(nomem, nostack))
        };
        let post: u8;
        // SAFETY: as above (imm8 form).
        unsafe {
            core::arch::asm!("out 0x80, al", in("al") 0x42u8, options(nomem, nostack));
            core::arch::asm!("in al, 0x80", out("al") post, options(nomem, nostack));
        }
        println!("raw IN through #VE: COM1 LSR {lsr:#x}, port 0x80 {post:#x}");
    }
    if flags & FAULT != 0 {
        println!("executing ud2, as asked");
        // SAFETY: deliberately raises #UD; the exception handler stops the TD.
        unsafe { core::arch::asm!("ud2") };
    }
    if flags & HALT != 0 {
        println!("halting with interrupts off, as asked");
        // SAFETY: the #VE handler turns it into TDVMCALL<HLT>, which never returns here.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
    if flags & HANG != 0 {
        println!("spinning forever, as asked");
        loop {
            core::hint::spin_loop();
        }
    }
    if flags & TOUCH_UNACCEPTED != 0 {
        let gpa = 64u64 << 20;
        println!("touching private gpa {gpa:#x} before accepting it, as asked");
        // SAFETY: deliberately wrong: the host must stop the TD here.
        let v = unsafe { private_ptr(gpa).read_volatile() };
        panic!("read {v:#x} from unaccepted memory and the host let it happen");
    }
    if flags & ALIAS_MISMATCH != 0 {
        let gpa = 96u64 << 20;
        println!("writing private gpa {gpa:#x} through the shared alias without MapGPA, as asked");
        // SAFETY: deliberately wrong alias; without --strict the host converts implicitly.
        unsafe { shared_ptr(gpa).write_volatile(0x1234) };
        // SAFETY: as above.
        let back = unsafe { shared_ptr(gpa).read_volatile() };
        println!("implicit conversion to shared: read back {back:#x}");
    }
}

/// The time-stamp counter (guest timing: cycles at the rate the host reports).
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The median of `samples` (sorted in place).
pub fn median(samples: &mut [u64]) -> u64 {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// The doorbell floor: median cycles of a null TDCALL (TDG.VP.INFO), one per sample slot.
/// Never inlined: where KVM emulates guest instructions (PVM), the cost of the same loop
/// moved by 50% with where the compiler placed an inlined copy; one copy for every caller
/// keeps `bench doorbell` and the stress measurements comparable.
#[inline(never)]
pub fn null_tdcall_cycles(samples: &mut [u64]) -> u64 {
    let mut tdx = crate::arch::tdx();
    for x in samples.iter_mut() {
        let t = rdtsc();
        let _ = tdx.tdg_vp_info();
        *x = rdtsc() - t;
    }
    median(samples)
}

/// (min, median, p90) of samples sorted ascending.
fn spread(sorted: &[u64]) -> (u64, u64, u64) {
    let n = sorted.len();
    (sorted[0], sorted[n / 2], sorted[(n * 9 / 10).min(n - 1)])
}

/// Time a null TDCALL (TDG.VP.INFO) and a bare port-I/O exit: min, median and p90 of each,
/// over the number of samples the host asked for (the tdxlab HOB's `ops`; 0: the default).
pub fn bench_doorbell() {
    use crate::layout::{BENCH_BARE_PORT, BENCH_SAMPLES, MAX_BENCH_SAMPLES};
    let n = match crate::boot::info::get().tdxlab_hob().ops as usize {
        0 => BENCH_SAMPLES,
        n => n.min(MAX_BENCH_SAMPLES),
    };
    let mut s = alloc::vec![0u64; n];
    null_tdcall_cycles(&mut s); // leaves the samples sorted
    let (t_min, tdcall, t_p90) = spread(&s);
    for x in s.iter_mut() {
        let t = rdtsc();
        // SAFETY: an OUT to the host's benchmark port, which it answers by re-entering.
        unsafe {
            core::arch::asm!("out dx, al", in("dx") BENCH_BARE_PORT, in("al") 0u8, options(nomem, nostack))
        };
        *x = rdtsc() - t;
    }
    let bare = median(&mut s);
    let (b_min, _, b_p90) = spread(&s);
    println!(
        "bench-doorbell n={n} tdcall_min={t_min} tdcall_cycles={tdcall} tdcall_p90={t_p90} bare_min={b_min} bare_cycles={bare} bare_p90={b_p90}"
    );
}

/// Accept every unaccepted range of the TD HOB and report how long it took.
pub fn accept_all_ram() {
    let ranges = crate::boot::info::get().unaccepted_ram();
    let mut tdx = crate::arch::tdx();
    let t = rdtsc();
    let mut bytes = 0;
    for &(start, len) in ranges {
        let s = tdx
            .accept(GpaRange::new(Gpa(start), len))
            .unwrap_or_else(|e| panic!("accepting RAM: {e}"));
        bytes += s.total_accepted();
    }
    println!("accepted all RAM: {bytes} bytes in {} cycles", rdtsc() - t);
}
