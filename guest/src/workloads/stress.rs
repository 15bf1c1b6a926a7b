//! The conversion stress workload (`tdxlab stress`): one scenario on every vCPU, each in its
//! own chunk of RAM, repeated until the host's deadline; every mismatch is fatal (a panic
//! reports it through ReportFatalError and the host fails the run).
//!
//! Scenarios follow KVM's private_mem_conversions_test selftest (tools/testing/selftests/kvm) with
//! TDX's differences: pages converted to private come back zeroed and must be accepted, and
//! QEMU discards the shared page on every conversion to private, so SYNC_PRIVATE expects the
//! host to see zeroes where the selftest (which keeps the shared page) expects the old pattern.

use crate::convert::{set_alias, to_private, to_shared};
use crate::workloads::round_trip::{median, null_tdcall_cycles, rdtsc, SHARED_WINDOW};
use alloc::vec;
use alloc::vec::Vec;
use shared_abi::hostcheck::{HostCheckOp, Window, HOST_CHECK_MAX_LEN};
use shared_abi::layout::hob::TdxlabHob;
use shared_abi::stress::{options, Scenario, MEASURE_AREA, MEASURE_LINE, PHASE_LINE, RESULT_LINE};
use shared_abi::{Gpa, GpaRange, Gpaw};
use tdcall::HostCheck;

const PAGE: u64 = 4096;
const MB2: u64 = 2 << 20;

/// The selftest's (offset, size) pairs.
const SELFTEST_RANGES: [(u64, u64); 5] =
    [(0, PAGE), (0, MB2), (PAGE, PAGE), (PAGE, MB2), (MB2, PAGE)];

/// (offset, size) pairs in an 8 MiB chunk that start, end or straddle 2 MiB boundaries.
const BOUNDARY_RANGES: [(u64, u64); 8] = [
    (MB2 - PAGE, 2 * PAGE),
    (MB2 - PAGE, PAGE),
    (MB2, PAGE),
    (PAGE, MB2 - PAGE),
    (MB2 - 2 * PAGE, MB2 + 4 * PAGE),
    (2 * MB2 - PAGE, MB2 + 2 * PAGE),
    (0, 3 * MB2 + PAGE),
    (3 * MB2 - 3 * PAGE, MB2 + 3 * PAGE),
];

/// Fill `[va, va + len)` (8-byte multiple) with `byte` in one `rep stosq`: where the guest
/// runs under instruction emulation a string instruction is decoded once, not per store.
fn fill_words(va: u64, len: u64, byte: u8) {
    let word = u64::from_ne_bytes([byte; 8]);
    // SAFETY: callers pass memory of their own chunk that is accepted or shared and mapped.
    unsafe {
        core::arch::asm!("rep stosq", inout("rcx") len / 8 => _, inout("rdi") va => _,
            in("rax") word, options(nostack))
    };
}

/// The address of the first byte in `[va, va + len)` that is not `byte` (one `repe scasq`,
/// then a byte search inside the differing word).
fn first_mismatch(va: u64, len: u64, byte: u8) -> Option<u64> {
    let word = u64::from_ne_bytes([byte; 8]);
    let (left, next): (u64, u64);
    // SAFETY: as in `fill_words`; scasq only reads. The direction flag is clear (ABI).
    unsafe {
        core::arch::asm!("repe scasq", inout("rcx") len / 8 => left, inout("rdi") va => next,
            in("rax") word, options(nostack, readonly))
    };
    // SAFETY: as above.
    let last = unsafe { ((next - 8) as *const u64).read_volatile() };
    if left == 0 && last == word {
        return None;
    }
    let at = next - 8;
    (0..8u64)
        .find(|i| last.to_ne_bytes()[*i as usize] != byte)
        .map(|i| at + i)
}

/// splitmix64: small, seedable, the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One vCPU's run: its chunk, counters and the hash of its operation sequence.
struct Run {
    vcpu: u32,
    gpaw: Gpaw,
    base: u64,
    len: u64,
    deadline: u64,
    max_ops: u64,
    /// Operations: each step of a fixed scenario; each iteration of the random one.
    ops: u64,
    count_steps: bool,
    conversions: u64,
    pages: u64,
    checks: u64,
    /// FNV-1a over every operation and its arguments: equal seeds give equal hashes.
    hash: u64,
}

impl Run {
    fn done(&self) -> bool {
        rdtsc() >= self.deadline || (self.max_ops != 0 && self.ops >= self.max_ops)
    }
    fn record(&mut self, what: u64, a: u64, b: u64) {
        if self.count_steps {
            self.ops += 1;
        }
        for v in [what, a, b] {
            for byte in v.to_le_bytes() {
                self.hash = (self.hash ^ byte as u64).wrapping_mul(0x100_0000_01B3);
            }
        }
    }
    fn range(&self, off: u64, len: u64) -> GpaRange {
        GpaRange::new(Gpa(self.base + off), len)
    }
    fn convert_shared(&mut self, r: GpaRange) {
        self.record(1, r.start.0, r.len);
        to_shared(r, self.gpaw)
            .unwrap_or_else(|e| panic!("vCPU {}: {r} to shared: {e}", self.vcpu));
        self.conversions += 1;
        self.pages += r.len / PAGE;
    }
    fn convert_private(&mut self, r: GpaRange) {
        self.record(2, r.start.0, r.len);
        to_private(r, self.gpaw)
            .unwrap_or_else(|e| panic!("vCPU {}: {r} to private: {e}", self.vcpu));
        self.conversions += 1;
        self.pages += r.len / PAGE;
    }
    /// Accept `r` (already private by attribute): every page must come back fresh.
    fn accept_fresh(&mut self, r: GpaRange) {
        self.record(3, r.start.0, r.len);
        let s = crate::arch::tdx()
            .accept(r)
            .unwrap_or_else(|e| panic!("vCPU {}: accept {r}: {e}", self.vcpu));
        if s.already_accepted_bytes != 0 {
            panic!(
                "vCPU {}: {} bytes of {r} were still accepted: the host did not remove them",
                self.vcpu, s.already_accepted_bytes
            );
        }
    }
    fn fill(&mut self, r: GpaRange, byte: u8) {
        self.record(4, r.start.0, byte as u64);
        fill_words(r.start.0, r.len, byte);
    }
    /// Check that `r` reads `byte`: every byte of ranges up to 16 pages; of longer ranges the
    /// first and last 4 pages and every 64th page (the host's end-of-run audit and the host
    /// checks cover every byte; guest memory touches are costly where KVM emulates the guest).
    fn verify(&mut self, r: GpaRange, byte: u8, what: &str) {
        self.record(5, r.start.0, byte as u64);
        let pages = r.len / PAGE;
        for p in 0..pages {
            if pages <= 16 || p < 4 || p + 4 >= pages || p % 64 == 0 {
                let at = r.start.0 + p * PAGE;
                if let Some(bad) = first_mismatch(at, PAGE, byte) {
                    // SAFETY: inside the page just scanned.
                    let found = unsafe { (bad as *const u8).read_volatile() };
                    panic!(
                        "vCPU {}: gpa {bad:#x} reads {found:#04x}, expected {byte:#04x} ({what})",
                        self.vcpu
                    );
                }
            }
        }
    }
    /// SYNC_SHARED: the host sees `cur` in the shared range, then writes `new`.
    fn sync_shared(&mut self, r: GpaRange, cur: u8, new: u8) {
        self.host_check(HostCheckOp::SyncShared, r, cur, new);
    }
    /// SYNC_PRIVATE: the host sees `seen` where the guest wrote private data.
    fn sync_private(&mut self, r: GpaRange, seen: u8) {
        self.host_check(HostCheckOp::SyncPrivate, r, seen, 0);
    }
    fn host_check(&mut self, op: HostCheckOp, r: GpaRange, cur: u8, new: u8) {
        let mut at = r.start.0;
        while at < (r.start.0 + r.len) {
            let part = GpaRange::new(Gpa(at), ((r.start.0 + r.len) - at).min(HOST_CHECK_MAX_LEN));
            self.record(6 + op as u64, part.start.0, part.len);
            match crate::arch::tdx().host_check(op, part, cur, new) {
                Ok(HostCheck::Passed) => self.checks += 1,
                Ok(HostCheck::Mismatch { offset, found }) => panic!(
                    "vCPU {}: {}: the host sees {found:#04x} at {:#x}, expected {cur:#04x}",
                    self.vcpu,
                    op.name(),
                    part.start.0 + offset
                ),
                // Real TDX: no host to ask. Check our side and do the host's write ourselves.
                Ok(HostCheck::Unsupported(_)) => {
                    if op == HostCheckOp::SyncShared {
                        self.verify(part, cur, "SYNC_SHARED self-check");
                        self.fill(part, new);
                    }
                }
                Err(e) => panic!("vCPU {}: {}: {e}", self.vcpu, op.name()),
            }
            at = part.start.0 + part.len;
        }
    }
    /// The host discards the private backing of `r` (the attribute stays private).
    fn punch(&mut self, r: GpaRange) {
        self.record(9, r.start.0, r.len);
        match crate::arch::tdx().host_check(HostCheckOp::PunchHole, r, 0, 0) {
            Ok(HostCheck::Passed) => self.checks += 1,
            // Real TDX: a round trip through shared discards the pages as well.
            Ok(HostCheck::Unsupported(_)) => {
                self.convert_shared(r);
                set_alias(r, false, self.gpaw).unwrap_or_else(|e| panic!("{e}"));
                crate::arch::tdx()
                    .map_gpa(r, shared_abi::convert::ConversionTarget::Private, self.gpaw)
                    .unwrap_or_else(|e| panic!("vCPU {}: {r} MapGPA: {e}", self.vcpu));
            }
            other => panic!("vCPU {}: PUNCH_HOLE {r}: {other:?}", self.vcpu),
        }
    }
}

/// Where vCPU `vcpu`'s chunk lies for `scenario`, given RAM and the vCPU count (the host's
/// map draws the same chunks: `Scenario::chunk`).
fn chunk_of(scenario: Scenario, vcpu: u32, vcpus: u32, ram: u64, measure: bool) -> (u64, u64) {
    scenario
        .chunk(vcpu, vcpus, ram, measure)
        .unwrap_or_else(|| {
            panic!(
                "{} MiB of RAM is too little for {vcpus} vCPUs of the {} scenario",
                ram >> 20,
                scenario.name()
            )
        })
}

/// Run the stress workload on this vCPU.
pub fn run(vcpu: u32, vcpus: u32, gpaw: Gpaw) {
    let hob = crate::boot::info::get().tdxlab_hob();
    let scenario = Scenario::from_u32(hob.param)
        .unwrap_or_else(|| panic!("unknown stress scenario {}", hob.param));
    let measure = hob.options & options::MEASURE != 0;
    let ram = crate::boot::info::get().low_ram_end;
    if vcpu == 0 && measure {
        measure_round_trips(ram - MEASURE_AREA, gpaw, ROUND_TRIPS_4K);
    }
    let (base, len) = chunk_of(scenario, vcpu, vcpus, ram, measure);
    let mut run = Run {
        vcpu,
        gpaw,
        base,
        len,
        deadline: rdtsc().saturating_add(hob.duration_tsc),
        max_ops: hob.ops as u64,
        ops: 0,
        count_steps: scenario != Scenario::Random,
        conversions: 0,
        pages: 0,
        checks: 0,
        hash: 0xCBF2_9CE4_8422_2325,
    };
    println!("{PHASE_LINE} vcpu={vcpu} phase=scenario");
    match scenario {
        Scenario::Explicit => repeat(&mut run, explicit),
        Scenario::PunchHole => repeat(&mut run, punch_hole),
        Scenario::Implicit => repeat(&mut run, implicit),
        Scenario::Boundary => repeat(&mut run, boundary),
        Scenario::Random => random(&mut run, &hob),
        Scenario::Alternate => alternate(&mut run),
    }
    println!(
        "{RESULT_LINE} vcpu={vcpu} ops={} conversions={} pages={} checks={} hash={:#x}",
        run.ops, run.conversions, run.pages, run.checks, run.hash
    );
}

/// Passes of a fixed scenario until the deadline (at least one).
fn repeat(run: &mut Run, pass: fn(&mut Run, u64)) {
    let mut n = 0;
    loop {
        pass(run, n);
        n += 1;
        if run.done() {
            break;
        }
    }
}

/// private_mem_conversions_test's explicit sequence. The chunk starts (and every pass ends)
/// all shared.
fn explicit(run: &mut Run, _pass: u64) {
    let chunk = run.range(0, run.len);
    run.convert_shared(chunk);
    run.fill(chunk, 0xAA);
    run.verify(chunk, 0xAA, "guest fill");
    run.sync_shared(chunk, 0xAA, 0xCC);
    run.verify(chunk, 0xCC, "the host's SYNC_SHARED write");
    for (off, size) in SELFTEST_RANGES {
        let r = run.range(off, size);
        run.fill(r, 0x11);
        run.convert_private(r);
        run.verify(r, 0, "a page converted to private comes back zeroed");
        // QEMU discarded the shared pages: the host sees zeroes, never the guest's 0x11.
        run.sync_private(r, 0);
        if size > PAGE {
            run.fill(run.range(off, PAGE), 0x22);
        } else {
            run.fill(r, 0x22);
            run.sync_private(r, 0);
            run.verify(r, 0x22, "private data");
            verify_outside(run, r, 0xCC);
            // The selftest's per-page loop; with its sizes (4K here) only the even branch
            // runs, so the whole range is still private for the zero check below.
            for p in 0..size / PAGE {
                let page = run.range(off + p * PAGE, PAGE);
                if p % 2 == 1 {
                    run.convert_shared(page);
                    run.sync_shared(page, 0, 0x33);
                    run.verify(page, 0x33, "the host's write to a page converted back");
                } else {
                    run.sync_private(page, 0);
                }
            }
        }
        run.convert_shared(r);
        run.verify(
            r,
            0,
            "nothing private shows through a page converted to shared",
        );
        run.fill(r, 0x33);
        run.sync_shared(r, 0x33, 0x44);
        run.verify(r, 0x44, "the host's SYNC_SHARED write");
        run.fill(r, 0xCC);
        run.convert_shared(chunk);
    }
}

/// Every other page of the chunk private, the pages between shared, over the whole chunk
/// (all of RAM between the vCPUs): the even page of each pair is accepted (4K) and written
/// through the private alias, the odd one written through the shared window without MapGPA
/// (the host converts it on that first touch, as QEMU does). The host's view of what the
/// guest may reach alternates page by page across all RAM. Then every page is read back,
/// and every 64th pair is checked from the host's side. One pass: the pattern is the test.
fn alternate(run: &mut Run) {
    let tag = |gpa: u64, shared: bool| gpa ^ if shared { 0x5555 << 48 } else { 0xAAAA << 48 };
    let pairs = run.len / (2 * PAGE);
    for i in 0..pairs {
        let private = run.base + 2 * i * PAGE;
        let shared = private + PAGE;
        run.accept_fresh(run.range(2 * i * PAGE, PAGE));
        run.record(11, shared, PAGE);
        // SAFETY: this vCPU's own pages: `private` just accepted (identity-mapped), `shared`
        // reached through the shared window; one word each.
        unsafe {
            (private as *mut u64).write_volatile(tag(private, false));
            ((SHARED_WINDOW + shared) as *mut u64).write_volatile(tag(shared, true));
        }
        run.conversions += 1;
        run.pages += 1;
    }
    for i in 0..pairs {
        let private = run.base + 2 * i * PAGE;
        let shared = private + PAGE;
        // SAFETY: as above; reads only.
        let (p, s) = unsafe {
            (
                (private as *const u64).read_volatile(),
                ((SHARED_WINDOW + shared) as *const u64).read_volatile(),
            )
        };
        if p != tag(private, false) || s != tag(shared, true) {
            panic!(
                "vCPU {}: alternating pages at {private:#x} read {p:#x} / {s:#x}",
                run.vcpu
            );
        }
        if i % 64 == 0 {
            // The host sees zeroes behind the private page, and the shared page as the guest
            // wrote it (then writes it anew, which the guest must see).
            run.sync_private(GpaRange::new(Gpa(private), PAGE), 0);
            fill_words(SHARED_WINDOW + shared, PAGE, 0x5C);
            run.sync_shared(GpaRange::new(Gpa(shared), PAGE), 0x5C, 0x5D);
            if let Some(bad) = first_mismatch(SHARED_WINDOW + shared, PAGE, 0x5D) {
                panic!(
                    "vCPU {}: the host's SYNC_SHARED write is missing at {:#x}",
                    run.vcpu,
                    bad - SHARED_WINDOW
                );
            }
        }
    }
}

/// The rest of the chunk outside `r` still reads `byte`.
fn verify_outside(run: &mut Run, r: GpaRange, byte: u8) {
    let (lo, hi) = (r.start.0 - run.base, (r.start.0 + r.len) - run.base);
    if lo > 0 {
        let before = run.range(0, lo);
        run.verify(before, byte, "memory outside the converted range");
    }
    if hi < run.len {
        let after = run.range(hi, run.len - hi);
        run.verify(after, byte, "memory outside the converted range");
    }
}

/// private_mem_conversions_test's punch-hole sequence, TDX-style: a punched private page is
/// gone from the S-EPT, so the guest re-accepts it (it must come back fresh) and reads zeroes.
/// Passes alternate non-precise (the whole chunk faulted back) and precise (only the range).
fn punch_hole(run: &mut Run, pass: u64) {
    let chunk = run.range(0, run.len);
    if pass == 0 {
        run.convert_private(chunk);
    }
    let precise = pass % 2 == 1;
    for (off, size) in SELFTEST_RANGES {
        let r = run.range(off, size);
        run.punch(chunk);
        run.accept_fresh(chunk);
        run.verify(chunk, 0, "a re-accepted punched page reads zero");
        let touched = if precise { r } else { chunk };
        run.fill(touched, 0xCC);
        run.verify(touched, 0xCC, "guest fill");
        run.punch(r);
        run.accept_fresh(r);
        run.verify(r, 0, "a punched page re-accepted reads zero");
        if !precise {
            verify_outside(run, r, 0xCC);
        }
        run.sync_private(chunk, 0);
    }
}

/// Implicit conversions: the guest reaches the other alias without MapGPA. To shared: the PTE
/// flips and the first access takes a memory fault the host converts. To private: the guest
/// accepts the shared pages; the accept's EPT violation is the memory fault.
fn implicit(run: &mut Run, pass: u64) {
    let chunk = run.range(0, run.len);
    if pass == 0 {
        run.accept_fresh(chunk);
    }
    run.fill(chunk, 0x5A);
    for (off, size) in SELFTEST_RANGES {
        let r = run.range(off, size);
        run.record(10, r.start.0, r.len);
        set_alias(r, true, run.gpaw).unwrap_or_else(|e| panic!("{e}"));
        run.verify(r, 0, "a page implicitly converted to shared reads zero");
        run.fill(r, 0x77);
        run.sync_shared(r, 0x77, 0x78);
        run.verify(r, 0x78, "the host's SYNC_SHARED write");
        run.accept_fresh(r);
        set_alias(r, false, run.gpaw).unwrap_or_else(|e| panic!("{e}"));
        run.verify(r, 0, "a page implicitly converted to private reads zero");
        run.fill(r, 0x5B);
        run.sync_private(r, 0);
        run.verify(r, 0x5B, "private data");
        run.fill(r, 0x5A);
        run.conversions += 2;
        run.pages += 2 * size / PAGE;
    }
    run.verify(
        chunk,
        0x5A,
        "private data kept across implicit conversions nearby",
    );
}

/// Conversions at and across 2 MiB boundaries of a private chunk; each range's neighbours
/// keep their private data.
fn boundary(run: &mut Run, pass: u64) {
    let chunk = run.range(0, run.len);
    if pass == 0 {
        run.convert_private(chunk);
    }
    run.fill(chunk, 0xB0);
    for (off, size) in BOUNDARY_RANGES {
        let r = run.range(off, size);
        run.convert_shared(r);
        run.verify(
            r,
            0,
            "nothing private shows through a page converted to shared",
        );
        run.fill(r, 0xE1);
        run.sync_shared(r, 0xE1, 0xE2);
        run.verify(r, 0xE2, "the host's SYNC_SHARED write");
        verify_outside(run, r, 0xB0);
        run.convert_private(r);
        run.verify(r, 0, "a page converted to private comes back zeroed");
        run.fill(r, 0xB0);
        run.sync_private(r, 0);
    }
    run.verify(chunk, 0xB0, "private data");
}

/// Page states of the random scenario.
#[derive(Clone, Copy, PartialEq, Eq)]
enum St {
    Unaccepted,
    Private,
    Shared,
}

/// Seeded random operations. Each page's state and content byte are tracked, so every read
/// knows what it must see.
fn random(run: &mut Run, hob: &TdxlabHob) {
    let n = (run.len / PAGE) as usize;
    let mut st = vec![St::Unaccepted; n];
    let mut tag: Vec<u8> = vec![0; n];
    let mut rng = Rng(hob.seed ^ (run.vcpu as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F));
    loop {
        if run.ops > 0 && run.done() {
            break;
        }
        let choice = rng.below(100);
        run.ops += 1;
        run.record(0, choice, 0);
        match choice {
            0..40 => random_convert(run, &mut rng, &mut st, &mut tag),
            40..65 => {
                let p = rng.below(n as u64) as usize;
                let k = run_len(&st, &tag, p, 1 + rng.below(8) as usize);
                if st[p] == St::Unaccepted {
                    continue;
                }
                let r = run.range(p as u64 * PAGE, k as u64 * PAGE);
                run.verify(r, tag[p], "data written earlier");
                let t = 1 + rng.below(255) as u8;
                run.fill(r, t);
                tag[p..p + k].fill(t);
            }
            65..80 => {
                let p = rng.below(n as u64) as usize;
                if st[p] != St::Unaccepted {
                    let r = run.range(p as u64 * PAGE, PAGE);
                    run.verify(r, tag[p], "data written earlier");
                }
            }
            _ => {
                let p = rng.below(n as u64) as usize;
                let k = run_len(&st, &tag, p, 1024);
                let r = run.range(p as u64 * PAGE, k as u64 * PAGE);
                match st[p] {
                    St::Shared => {
                        let t = 1 + rng.below(255) as u8;
                        run.sync_shared(r, tag[p], t);
                        tag[p..p + k].fill(t);
                        run.verify(r, t, "the host's SYNC_SHARED write");
                    }
                    // QEMU discarded the shared page when it turned private.
                    St::Private => run.sync_private(r, 0),
                    St::Unaccepted => {}
                }
            }
        }
    }
    // Every page still holds what was last written to it.
    println!("{PHASE_LINE} vcpu={} phase=sweep", run.vcpu);
    for p in 0..n {
        if st[p] != St::Unaccepted {
            run.verify(run.range(p as u64 * PAGE, PAGE), tag[p], "final sweep");
        }
    }
}

/// Pages from `p` (at most `max`) in `p`'s state and with `p`'s content.
fn run_len(st: &[St], tag: &[u8], p: usize, max: usize) -> usize {
    let mut k = 1;
    while k < max && p + k < st.len() && st[p + k] == st[p] && tag[p + k] == tag[p] {
        k += 1;
    }
    k
}

/// A random range converted to a random side; each maximal run of pages on the other side
/// is converted (to shared: MapGPA; to private: MapGPA + accept of fresh pages).
fn random_convert(run: &mut Run, rng: &mut Rng, st: &mut [St], tag: &mut [u8]) {
    let n = st.len() as u64;
    let (start, len) = match rng.below(100) {
        0..60 => (rng.below(n), 1 + rng.below(16)),
        60..85 => (rng.below(n), 1 + rng.below(512)),
        // Whole 2 MiB blocks, where private memory can be mapped and accepted at 2 MiB.
        _ => (rng.below(n) & !511, 512 * (1 + rng.below(2))),
    };
    let end = (start + len).min(n) as usize;
    let shared = rng.chance(50);
    let mut p = start as usize;
    while p < end {
        let want = if shared { St::Shared } else { St::Private };
        if st[p] == want {
            p += 1;
            continue;
        }
        let mut q = p + 1;
        while q < end && st[q] != want {
            q += 1;
        }
        let r = run.range(p as u64 * PAGE, (q - p) as u64 * PAGE);
        if shared {
            run.convert_shared(r);
        } else {
            run.convert_private(r);
        }
        // Fresh either way: zeroed private pages, discarded shared pages. Sample the first and
        // last page (each first touch of a shared page is an exit; the host's audit covers
        // every byte at the end).
        run.verify(
            run.range(p as u64 * PAGE, PAGE),
            0,
            "a freshly converted page",
        );
        if q - p > 1 {
            run.verify(
                run.range((q - 1) as u64 * PAGE, PAGE),
                0,
                "a freshly converted page",
            );
        }
        st[p..q].fill(want);
        tag[p..q].fill(0);
        p = q;
    }
}

/// vCPU 0's measurements, in the area at the top of RAM: the doorbell floor (null TDCALL), a
/// 4 KiB private → shared → private round trip including the first touch of the shared page,
/// and the same for a 2 MiB block (first page touched).
/// 4 KiB round trips the stress measurements time (2 MiB ones: an eighth, at least 4).
const ROUND_TRIPS_4K: usize = 32;

/// Time `n4k` 4 KiB and `max(n4k / 8, 4)` 2 MiB private → shared → private round trips in
/// `area`, and the doorbell floor; print them (median, min, p90).
pub fn measure_round_trips(area: u64, gpaw: Gpaw, n4k: usize) {
    let floor = null_tdcall_cycles(&mut [0u64; 64]);
    let mut tdx = crate::arch::tdx();
    let block = GpaRange::new(Gpa(area), MB2);
    let page = GpaRange::new(Gpa(area + MB2), PAGE);
    for r in [block, page] {
        tdx.accept(r)
            .unwrap_or_else(|e| panic!("measure: accept {r}: {e}"));
    }
    let p90 = |s: &[u64]| s[(s.len() * 9 / 10).min(s.len() - 1)];
    let mut t4 = Trips::new(n4k.max(1));
    t4.run(
        &mut tdx,
        page,
        gpaw,
        [Window::ToShared4k, Window::Touch4k, Window::ToPrivate4k],
    );
    let mut t2 = Trips::new((n4k / 8).max(4));
    t2.run(
        &mut tdx,
        block,
        gpaw,
        [Window::ToShared2m, Window::Touch2m, Window::ToPrivate2m],
    );
    let (rt4k, sh4k, pr4k) = t4.medians();
    let (rt2m, sh2m, pr2m) = t2.medians();
    println!(
        "{MEASURE_LINE} floor={floor} rt4k={rt4k} rt2m={rt2m} n4k={} n2m={} rt4k_min={} rt4k_p90={} rt2m_min={} rt2m_p90={} sh4k={sh4k} pr4k={pr4k} sh2m={sh2m} pr2m={pr2m}",
        t4.rt.len(),
        t2.rt.len(),
        t4.rt[0],
        p90(&t4.rt),
        t2.rt[0],
        p90(&t2.rt)
    );
}

type Tdx = tdcall::Tdx<tdcall::transport::AnyTransport>;

/// Timed round trips of one range: each whole trip, and its two conversions apart.
struct Trips {
    rt: alloc::vec::Vec<u64>,
    sh: alloc::vec::Vec<u64>,
    pr: alloc::vec::Vec<u64>,
}

impl Trips {
    fn new(n: usize) -> Trips {
        let v = || alloc::vec![0u64; n];
        Trips {
            rt: v(),
            sh: v(),
            pr: v(),
        }
    }

    /// Each trip: to shared, the first touch, to private, each step timed alone and inside
    /// its window's marks (the host counts the exits of each; the marks' own exits fall
    /// outside both the windows and the timings).
    fn run(&mut self, tdx: &mut Tdx, r: GpaRange, gpaw: Gpaw, w: [Window; 3]) {
        let step = |tdx: &mut Tdx, w: Window, f: &mut dyn FnMut()| {
            tdx.mark(w, false);
            let t = rdtsc();
            f();
            let dt = rdtsc() - t;
            tdx.mark(w, true);
            dt
        };
        for i in 0..self.rt.len() {
            let sh = step(tdx, w[0], &mut || {
                to_shared(r, gpaw).unwrap_or_else(|e| panic!("measure: {r} to shared: {e}"));
            });
            // SAFETY: shared now; the PTE carries the shared bit. The first touch faults it in.
            let touch = step(tdx, w[1], &mut || unsafe {
                (r.start.0 as *mut u64).write_volatile(0x5EED)
            });
            let pr = step(tdx, w[2], &mut || {
                to_private(r, gpaw).unwrap_or_else(|e| panic!("measure: {r} to private: {e}"));
            });
            (self.rt[i], self.sh[i], self.pr[i]) = (sh + touch + pr, sh, pr);
        }
    }

    /// Medians of the trips and of each conversion (sorts the samples: min first).
    fn medians(&mut self) -> (u64, u64, u64) {
        (
            median(&mut self.rt),
            median(&mut self.sh),
            median(&mut self.pr),
        )
    }
}

/// The round trips alone, at the top of RAM, `ops` 4 KiB ones (0: the default).
pub fn bench_round_trips(gpaw: Gpaw) {
    let ram = crate::boot::info::get().low_ram_end;
    let n4k = match crate::boot::info::get().tdxlab_hob().ops as usize {
        0 => ROUND_TRIPS_4K,
        n => n.min(crate::layout::MAX_BENCH_SAMPLES),
    };
    measure_round_trips(ram - MEASURE_AREA, gpaw, n4k);
}

/// The conversion benchmark (vCPU 0 only): the round trips, then 1 GiB accepted with 2 MiB
/// pages next to memset over the same memory (cold: first touch; warm: again).
pub fn bench_convert(gpaw: Gpaw) {
    let ram = crate::boot::info::get().low_ram_end;
    bench_round_trips(gpaw);
    let len = 1u64 << 30;
    let start = 256u64 << 20;
    if start + len > ram - MEASURE_AREA {
        panic!(
            "bench-convert needs {} MiB of RAM",
            (start + len + MEASURE_AREA) >> 20
        );
    }
    let r = GpaRange::new(Gpa(start), len);
    let t = rdtsc();
    let s = crate::arch::tdx()
        .accept(r)
        .unwrap_or_else(|e| panic!("accepting {r}: {e}"));
    let accept = rdtsc() - t;
    // The guest's own memset (rep stosq) over the first 64 MiB: under instruction emulation
    // a full GiB would take minutes; the host measures native memset over 1 GiB itself.
    let span = 64u64 << 20;
    let mut memset = [0u64; 2];
    for (i, m) in memset.iter_mut().enumerate() {
        let t = rdtsc();
        fill_words(start, span, 0x42 + i as u8);
        *m = rdtsc() - t;
    }
    println!(
        "bench-convert bytes={len} accept={accept} accept_calls={} fallbacks={} memset_bytes={span} memset_cold={} memset_warm={}",
        s.calls, s.fallbacks, memset[0], memset[1]
    );
}
