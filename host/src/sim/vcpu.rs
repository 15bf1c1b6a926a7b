//! A simulated vCPU: guest code (the workload, calling the real `tdcall` crate), a software
//! TLB filled on access and emptied only by a flush, and TD entry/exit around host work.

use super::backend::{SimBackend, IN_GUEST, OUTSIDE_GUEST};
use super::{Counters, SimConfig, World};
use crate::kvm::Alias;
use crate::seam::{PrivateMem, Walk};
use crate::vmm::{handle_tdcall, resolve_ept_violation};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shared_abi::convert::ConversionTarget;
use shared_abi::sept::SeptState;
use shared_abi::{Gpa, GpaRange, PageLevel};
use std::collections::HashMap;
use std::sync::atomic::Ordering::*;
use tdcall::{Regs, Tdx, Transport};

/// Top byte of every word the guest writes privately: finding it through the shared alias
/// is a leak.
pub const PRIVATE_TAG: u64 = 0xAA << 56;
/// Top byte of every word the guest writes through the shared alias.
pub const SHARED_TAG: u64 = 0x55 << 56;
/// The words of a page the workload writes and checks (first, middle, last): the only words
/// the simulator's frames keep.
pub(super) const WORDS: [u64; 3] = [0, 255, 511];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Contents not defined (a page just made shared).
    Unknown,
    /// All zero (just accepted).
    Zero,
    /// This value in every checked word.
    Value(u64),
}

impl std::fmt::Debug for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Unknown => f.write_str("anything"),
            Expect::Zero => f.write_str("0"),
            Expect::Value(v) => write!(f, "{v:#x}"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Page {
    shared: bool,
    expect: Expect,
}

#[derive(Clone, Copy)]
struct TlbEntry {
    frame: u64,
    gen: u64,
    /// The TLB's flush counts when the entry was filled: a flush bumps a count instead of
    /// visiting every entry, as a hardware flush costs no more for a full TLB.
    flushes: Flushes,
}

/// How many times the TLB was flushed whole, and of its private translations.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Flushes {
    all: u64,
    private: u64,
}

/// A guest-visible failure: the run records it and the vCPU stops.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The host stopped the TD during a TDCALL.
    #[error(transparent)]
    Host(#[from] crate::vmm::TdcallError),
    /// Private access to a PENDING page (SEPT_VE_DISABLE: the host kills the TD).
    #[error("vCPU {vcpu}: access before accept at {gpa}")]
    AccessBeforeAccept {
        /// vCPU.
        vcpu: u32,
        /// GPA.
        gpa: Gpa,
    },
    /// tdcall's MapGPA loop failed.
    #[error("vCPU {0}: {1}")]
    MapGpa(u32, tdcall::MapGpaError),
    /// tdcall's accept loop failed.
    #[error("vCPU {0}: {1}")]
    Accept(u32, tdcall::AcceptError),
    /// A page kept faulting.
    #[error("vCPU {vcpu}: access to {gpa} still faulting after {}s of EPT violations", crate::vmm::FAULT_PROGRESS_TIMEOUT.as_secs())]
    Livelock {
        /// vCPU.
        vcpu: u32,
        /// GPA.
        gpa: Gpa,
    },
}

/// One simulated vCPU.
pub struct Vcpu<'w> {
    id: u32,
    w: &'w World,
    tlb: HashMap<(u64, Alias), TlbEntry>,
    flushes: Flushes,
    pages: Vec<Page>,
    first_gfn: u64,
    rng: StdRng,
    counter: u64,
    fatal: Option<GuestError>,
    /// What this vCPU saw.
    pub c: Counters,
}

/// The transport the guest's `tdcall` crate uses: a TD exit into the emulated host.
struct SimTransport<'a, 'w>(&'a mut Vcpu<'w>);

impl Transport for SimTransport<'_, '_> {
    fn emulated(&self) -> bool {
        true
    }
    fn call(&mut self, regs: &mut Regs) {
        let v = &mut *self.0;
        v.exit();
        if let Err(e) = handle_tdcall(&v.w.seam, &v.w.vmm, v.id, regs) {
            v.fatal.get_or_insert(GuestError::Host(e));
            // The TD is dead; give the guest code a status that stops it.
            regs.rax = shared_abi::TdxStatus::OPERAND_INVALID.0;
        }
        v.enter();
    }
}

impl<'w> Vcpu<'w> {
    /// vCPU `id` owning gfns `[first_gfn, first_gfn + pages)`.
    pub fn new(id: u32, w: &'w World, cfg: &SimConfig) -> Vcpu<'w> {
        let first_gfn = id as u64 * cfg.region_pages;
        Vcpu {
            id,
            w,
            tlb: HashMap::new(),
            flushes: Flushes::default(),
            pages: vec![
                Page {
                    shared: false,
                    expect: Expect::Unknown
                };
                cfg.region_pages as usize
            ],
            first_gfn,
            rng: StdRng::seed_from_u64(cfg.seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            counter: 0,
            fatal: None,
            c: Counters::default(),
        }
    }

    fn backend(&self) -> &SimBackend {
        &self.w.backend
    }
    fn sh(&self) -> &super::backend::VcpuShared {
        &self.w.backend.vcpus[self.id as usize]
    }

    /// TD entry: process pending requests (KVM_REQ_TLB_FLUSH flushes everything); on a new
    /// epoch the TDX module flushes the translations it tracks, those through the Secure EPT.
    /// Shared-EPT translations are KVM's to flush: that is why v19's dropped flush matters.
    fn enter(&mut self) {
        while self.backend().hold_out.load(SeqCst) {
            std::thread::yield_now();
        }
        self.sh().mode.store(IN_GUEST, SeqCst);
        if self.sh().flush_req.swap(false, SeqCst) {
            self.flushes.all += 1;
        }
        if self.w.seam.td_vcpu_enter(self.id) {
            self.flushes.private += 1;
        }
    }

    /// TD exit.
    fn exit(&mut self) {
        self.w.seam.td_vcpu_exit(self.id);
        let sh = self.sh();
        sh.mode.store(OUTSIDE_GUEST, SeqCst);
        sh.kick_req.store(false, SeqCst);
        sh.exits.fetch_add(1, SeqCst);
    }

    fn gpa(&self, gfn: u64, alias: Alias) -> Gpa {
        let g = Gpa(gfn << 12);
        match alias {
            Alias::Private => g,
            Alias::Shared => self.w.gpaw.to_shared(g),
        }
    }

    /// One guest memory access to word `word` of `gfn` through `alias`.
    fn access(
        &mut self,
        gfn: u64,
        alias: Alias,
        word: u64,
        write: Option<u64>,
    ) -> Result<u64, GuestError> {
        if self.sh().kick_req.load(SeqCst) {
            self.exit();
            self.enter();
        }
        let entry = match self.tlb.get(&(gfn, alias)) {
            Some(e) if self.is_current(e, alias) => *e,
            _ => self.fill_tlb(gfn, alias)?,
        };
        let current_gen = match alias {
            Alias::Shared => self.backend().shared.gen(entry.frame),
            Alias::Private => self.backend().private_gen(entry.frame),
        };
        if current_gen != entry.gen {
            self.c.stale_tlb_reads += 1;
        }
        let b = self.backend();
        Ok(match (alias, write) {
            (Alias::Shared, Some(v)) => {
                b.shared.write(entry.frame, word, v);
                v
            }
            (Alias::Shared, None) => b.shared.read(entry.frame, word),
            (Alias::Private, Some(v)) => {
                b.private.write(entry.frame, word * 8, v);
                v
            }
            (Alias::Private, None) => b.private.read(entry.frame, word * 8),
        })
    }

    /// The entry survived every flush since it was filled (a shared one, every flush of
    /// the whole TLB; a private one, also every flush of the private translations).
    fn is_current(&self, e: &TlbEntry, alias: Alias) -> bool {
        e.flushes.all == self.flushes.all
            && (alias == Alias::Shared || e.flushes.private == self.flushes.private)
    }

    /// The hardware page walk on a TLB miss, taking EPT-violation exits as needed.
    fn fill_tlb(&mut self, gfn: u64, alias: Alias) -> Result<TlbEntry, GuestError> {
        let gpa = self.gpa(gfn, alias);
        // A fault that waited behind a zap sees the sequence moved and retries, as in KVM;
        // only a long stretch without success means the host is stuck.
        // Read the clock only once a fault has been retried: the usual miss (a walk, a
        // fault, a walk that hits) never needs it.
        let mut since = None;
        let mut attempt = 0u32;
        while since
            .is_none_or(|t: std::time::Instant| t.elapsed() < crate::vmm::FAULT_PROGRESS_TIMEOUT)
        {
            if attempt == 2 {
                since = Some(std::time::Instant::now());
            }
            if attempt > 1 {
                // The usual miss faults once and then hits; a second miss means the fault
                // was retried (it raced a zap): let the zapping thread finish.
                std::thread::yield_now();
            }
            attempt += 1;
            let hit = match alias {
                Alias::Shared => self
                    .w
                    .kvm
                    .root(crate::kvm::RootKind::Direct)
                    .and_then(|r| r.lookup(gfn))
                    .map(|(pfn, _)| pfn),
                Alias::Private => match self.w.seam.translate(gpa) {
                    Walk::Leaf { entry, level } if entry.state == SeptState::Mapped => {
                        Some(entry.hpa + (gfn & ((shared_abi::sept::level_pages(level)) - 1)))
                    }
                    Walk::Leaf { entry, .. } if entry.state == SeptState::Pending => {
                        return Err(GuestError::AccessBeforeAccept { vcpu: self.id, gpa })
                    }
                    _ => None,
                },
            };
            if let Some(frame) = hit {
                let gen = match alias {
                    Alias::Shared => self.backend().shared.gen(frame),
                    Alias::Private => self.backend().private_gen(frame),
                };
                let e = TlbEntry {
                    frame,
                    gen,
                    flushes: self.flushes,
                };
                self.tlb.insert((gfn, alias), e);
                return Ok(e);
            }
            self.exit();
            self.c.ept_violations += 1;
            let r = resolve_ept_violation(&self.w.vmm, self.id, gpa, PageLevel::Size4K);
            self.enter();
            r?;
        }
        Err(GuestError::Livelock { vcpu: self.id, gpa })
    }

    fn next_value(&mut self, alias: Alias) -> u64 {
        self.counter += 1;
        let tag = if alias == Alias::Private {
            PRIVATE_TAG
        } else {
            SHARED_TAG
        };
        tag | (self.id as u64) << 40 | (self.counter & 0xFF_FFFF_FFFF)
    }

    fn alias_of(&self, i: usize) -> Alias {
        if self.pages[i].shared {
            Alias::Shared
        } else {
            Alias::Private
        }
    }

    /// Read and check page `i` of the region.
    fn check_page(&mut self, i: usize) -> Result<(), GuestError> {
        let alias = self.alias_of(i);
        let gfn = self.first_gfn + i as u64;
        for word in WORDS {
            let v = self.access(gfn, alias, word, None)?;
            self.c.reads += 1;
            if alias == Alias::Shared && v >> 56 == PRIVATE_TAG >> 56 {
                self.c.private_leaks += 1;
                self.c.note(format!(
                    "vCPU {}: private data {v:#x} read through the shared alias of gfn {gfn:#x}",
                    self.id
                ));
            }
            let ok = match self.pages[i].expect {
                Expect::Unknown => true,
                Expect::Zero => v == 0,
                Expect::Value(x) => v == x,
            };
            if !ok {
                self.c.data_mismatches += 1;
                self.c.note(format!(
                    "vCPU {}: gfn {gfn:#x} word {word} via {alias:?} read {v:#x}, expected {:?}",
                    self.id, self.pages[i].expect
                ));
            }
        }
        Ok(())
    }

    fn write_page(&mut self, i: usize) -> Result<(), GuestError> {
        let alias = self.alias_of(i);
        let v = self.next_value(alias);
        for word in WORDS {
            self.access(self.first_gfn + i as u64, alias, word, Some(v))?;
            self.c.writes += 1;
        }
        self.pages[i].expect = Expect::Value(v);
        Ok(())
    }

    fn range(&self, i: usize, n: usize) -> GpaRange {
        GpaRange::new(Gpa((self.first_gfn + i as u64) << 12), n as u64 * 4096)
    }

    fn flush_local(&mut self, i: usize, n: usize, alias: Alias) {
        for p in i..i + n {
            self.tlb.remove(&(self.first_gfn + p as u64, alias));
        }
    }

    /// Accept `[i, i+n)`; the pages must come back fresh (zeroed by this accept).
    fn accept(&mut self, i: usize, n: usize) -> Result<(), GuestError> {
        let range = self.range(i, n);
        guest_step(
            range,
            "TDG.MEM.PAGE.ACCEPT each page (2M where aligned, else 4K)",
        );
        let r = Tdx::new(SimTransport(self)).accept(range);
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
        let stats = r.map_err(|e| GuestError::Accept(self.id, e))?;
        self.c.accepted_bytes += stats.total_accepted();
        if stats.already_accepted_bytes != 0 {
            self.c.data_mismatches += 1;
            self.c.note(format!(
                "vCPU {}: {} bytes of {range} were already accepted (not fresh)",
                self.id, stats.already_accepted_bytes
            ));
        }
        for p in i..i + n {
            self.pages[p] = Page {
                shared: false,
                expect: Expect::Zero,
            };
        }
        Ok(())
    }

    fn map_gpa(&mut self, i: usize, n: usize, to: ConversionTarget) -> Result<(), GuestError> {
        let range = self.range(i, n);
        guest_step(range, &format!("TDG.VP.VMCALL<MapGPA> to {}", to.name()));
        let gpaw = self.w.gpaw;
        let r = Tdx::new(SimTransport(self)).map_gpa(range, to, gpaw);
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
        let s = r.map_err(|e| GuestError::MapGpa(self.id, e))?;
        self.c.map_gpa_retries += s.retries as u64;
        self.c.conversions += 1;
        Ok(())
    }

    /// Private → shared in Linux's order: PTE gets the shared bit, local flush, MapGPA.
    fn convert_to_shared(&mut self, i: usize, n: usize) -> Result<(), GuestError> {
        guest_step(
            self.range(i, n),
            "PTEs get the shared bit; INVLPG each page",
        );
        self.flush_local(i, n, Alias::Private);
        self.map_gpa(i, n, ConversionTarget::Shared)?;
        (i..i + n).try_for_each(|p| self.became_shared(p))
    }

    /// Page `p` was just converted to shared: its contents are undefined until written; read
    /// it (nothing private may show) and write it.
    fn became_shared(&mut self, p: usize) -> Result<(), GuestError> {
        self.pages[p] = Page {
            shared: true,
            expect: Expect::Unknown,
        };
        self.check_page(p)?;
        self.write_page(p)
    }

    /// The whole region to shared in one MapGPA (private and shared pages alike, as a guest
    /// releasing a buffer does): with more than 2 MiB, KVM forwards it in chunks and may
    /// answer RETRY between them. Pages already shared keep their contents.
    fn region_to_shared(&mut self) -> Result<(), GuestError> {
        let n = self.pages.len();
        let was: Vec<bool> = self.pages.iter().map(|p| p.shared).collect();
        self.flush_local(0, n, Alias::Private);
        self.map_gpa(0, n, ConversionTarget::Shared)?;
        (was.into_iter().enumerate())
            .filter(|(_, shared)| !shared)
            .try_for_each(|(p, _)| self.became_shared(p))
    }

    /// Shared → private in Linux's order: MapGPA, accept, then the PTE turns private.
    fn convert_to_private(&mut self, i: usize, n: usize) -> Result<(), GuestError> {
        self.map_gpa(i, n, ConversionTarget::Private)?;
        self.accept(i, n)?;
        guest_step(
            self.range(i, n),
            "PTEs lose the shared bit; INVLPG each page",
        );
        self.flush_local(i, n, Alias::Shared);
        for p in i..i + n {
            self.check_page(p)?;
            self.write_page(p)?;
        }
        Ok(())
    }

    /// The host migrates one of our shared pages under an mmu-notifier invalidation (as
    /// numad does), then the guest touches it again.
    fn host_invalidate(&mut self, i: usize) -> Result<(), GuestError> {
        let gfn = self.first_gfn + i as u64;
        self.exit();
        let b = &self.w.backend;
        let r = self
            .w
            .kvm
            .kvm_mmu_notifier_invalidate_range(gfn, gfn + 1, || b.shared.migrate(gfn));
        self.enter();
        if let Err(e) = r {
            self.c.note(format!("vCPU {}: {e}", self.id));
        }
        self.c.host_invalidations += 1;
        self.check_page(i)?;
        self.write_page(i)?;
        self.check_page(i)
    }

    /// Boot: accept the whole region and write every page privately.
    pub fn boot(&mut self) -> Result<(), GuestError> {
        self.enter();
        let n = self.pages.len();
        self.accept(0, n)?;
        for p in 0..n {
            self.write_page(p)?;
        }
        self.exit();
        Ok(())
    }

    /// One random operation.
    pub fn step(&mut self) -> Result<(), GuestError> {
        self.enter();
        let n = self.pages.len();
        let roll = self.rng.random_range(0..100);
        let i = self.rng.random_range(0..n);
        let r = if roll < 35 && self.rng.random_range(0..16) == 0 {
            self.region_to_shared()
        } else if roll < 35 {
            let want = match self.rng.random_range(0..4) {
                0 => 1,
                1 => self.rng.random_range(1..=16),
                2 => 512,
                _ => self.rng.random_range(1..=n),
            };
            let shared = self.pages[i].shared;
            let len = (i..n.min(i + want))
                .take_while(|p| self.pages[*p].shared == shared)
                .count();
            if shared {
                self.convert_to_private(i, len)
            } else {
                self.convert_to_shared(i, len)
            }
        } else if roll < 45 && self.pages[i].shared {
            self.host_invalidate(i)
        } else {
            let r = self.check_page(i);
            if r.is_ok() && self.rng.random_bool(0.5) {
                self.write_page(i)
            } else {
                r
            }
        };
        self.exit();
        r
    }
}

/// One step of the guest's own, for the trace (what Linux does around a TDCALL).
pub(super) fn guest_step(range: GpaRange, what: &str) {
    tracing::debug!(target: "guest", gpa = %range.start, bytes = range.len, "guest: {what}");
}
