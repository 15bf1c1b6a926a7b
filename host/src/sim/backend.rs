//! The simulator's backend: in-process shared frames, the private frames the TDX module
//! guards, and per-vCPU state for kick-and-wait.
//!
//! Every frame carries a generation, bumped whenever the frame stops backing what it backed
//! (discarded, migrated, removed from the TD). A software-TLB entry remembers the generation it
//! was filled at, so using a translation that outlived its frame is detected exactly.

use crate::kvm::{Alias, Backend, BackendError};
use crate::percpu::PerCpuCounter;
use crate::seam::{FrameWords, PrivateMem, SimPrivateMem};
use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::*};
use std::sync::{Arc, Mutex};

/// Written into a frame when it is retired: a stale access reads this.
pub const POISON: u64 = 0xDEAD_BEEF_DEAD_BEEF;
const NO_FRAME: u64 = u64::MAX;
/// vCPU mode: executing guest code.
pub(crate) const IN_GUEST: u8 = 1;
/// vCPU mode: in the host (handling an exit, or between operations).
pub(crate) const OUTSIDE_GUEST: u8 = 0;

/// Per-vCPU state a kicker can see.
#[derive(Default)]
pub struct VcpuShared {
    /// IN_GUEST or OUTSIDE_GUEST (`vcpu->mode`).
    pub mode: AtomicU8,
    /// KVM_REQ_TLB_FLUSH pending.
    pub flush_req: AtomicBool,
    /// An IPI is pending: leave guest mode at the next instruction.
    pub kick_req: AtomicBool,
    /// Exits from guest mode so far.
    pub exits: AtomicU64,
}

/// Host memory that backs the shared alias, frame by frame.
///
/// The frames are split into one pool per vCPU region, as a host's allocator keeps per-CPU
/// free lists: a vCPU converts its own region, so the frames it frees and takes stay in its
/// core's cache instead of crossing to the other core's at every allocation.
pub struct SharedFrames {
    words: Vec<AtomicU64>,
    layout: FrameWords,
    gen: Vec<AtomicU64>,
    /// Free frames per pool, oldest retired first: a retired frame is reused as late as
    /// possible, so a stale translation to it reads the poison for long.
    free: Vec<CachePadded<Mutex<std::collections::VecDeque<u64>>>>,
    /// GFNs per pool (the last pool takes the remainder).
    gfns_per_pool: u64,
    map: Vec<AtomicU64>,
}

impl SharedFrames {
    /// `frames` frames keeping the words of `layout` for `gfns` GFNs, in `pools` pools of
    /// equal GFN ranges.
    fn new(gfns: u64, frames: u64, pools: u64, layout: FrameWords) -> SharedFrames {
        let pools = pools.clamp(1, gfns.max(1));
        let per = frames / pools;
        SharedFrames {
            words: (0..frames * layout.per_frame())
                .map(|_| AtomicU64::new(0))
                .collect(),
            layout,
            gen: (0..frames).map(|_| AtomicU64::new(0)).collect(),
            free: (0..pools)
                .map(|p| {
                    let end = if p + 1 == pools {
                        frames
                    } else {
                        (p + 1) * per
                    };
                    CachePadded::new(Mutex::new((p * per..end).collect()))
                })
                .collect(),
            gfns_per_pool: gfns.div_ceil(pools).max(1),
            map: (0..gfns).map(|_| AtomicU64::new(NO_FRAME)).collect(),
        }
    }
    /// The free list that serves `gfn`.
    fn pool(&self, gfn: u64) -> &Mutex<std::collections::VecDeque<u64>> {
        let p = (gfn / self.gfns_per_pool) as usize;
        &self.free[p.min(self.free.len() - 1)]
    }
    fn alloc(&self, gfn: u64) -> u64 {
        let f = self
            .pool(gfn)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
            .expect("shared frame pool sized for the run");
        self.gen[f as usize].fetch_add(1, AcqRel);
        for w in &self.words[self.layout.frames(f, 1)] {
            w.store(0, Relaxed);
        }
        f
    }
    fn retire(&self, gfn: u64, f: u64) {
        self.gen[f as usize].fetch_add(1, AcqRel);
        for w in &self.words[self.layout.frames(f, 1)] {
            w.store(POISON, Relaxed);
        }
        self.pool(gfn)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(f);
    }
    /// The frame backing `gfn`, allocated (zeroed) on first touch.
    pub(crate) fn frame_of(&self, gfn: u64) -> u64 {
        let slot = &self.map[gfn as usize];
        let cur = slot.load(Acquire);
        if cur != NO_FRAME {
            return cur;
        }
        let f = self.alloc(gfn);
        match slot.compare_exchange(NO_FRAME, f, AcqRel, Acquire) {
            Ok(_) => f,
            Err(other) => {
                self.retire(gfn, f);
                other
            }
        }
    }
    /// The frame backing `gfn` if any.
    pub fn current(&self, gfn: u64) -> Option<u64> {
        Some(self.map[gfn as usize].load(Acquire)).filter(|f| *f != NO_FRAME)
    }
    /// A frame's generation.
    pub(crate) fn gen(&self, f: u64) -> u64 {
        self.gen[f as usize].load(Acquire)
    }
    /// Read a word.
    pub fn read(&self, f: u64, word: u64) -> u64 {
        self.words[self.layout.index(f, word)].load(Relaxed)
    }
    /// Write a word.
    pub fn write(&self, f: u64, word: u64, v: u64) {
        self.words[self.layout.index(f, word)].store(v, Relaxed)
    }
    fn discard(&self, gfn: u64) {
        let old = self.map[gfn as usize].swap(NO_FRAME, AcqRel);
        if old != NO_FRAME {
            self.retire(gfn, old);
        }
    }
    /// Move `gfn` to a new frame with the same contents (what numad / compaction do).
    pub fn migrate(&self, gfn: u64) {
        let Some(old) = self.current(gfn) else { return };
        let new = self.alloc(gfn);
        for w in self.layout.kept() {
            self.write(new, w, self.read(old, w));
        }
        self.map[gfn as usize].store(new, Release);
        self.retire(gfn, old);
    }
}

/// The words of a frame the simulator keeps: those the workload writes and checks.
fn layout() -> FrameWords {
    FrameWords::sampled(&super::vcpu::WORDS)
}

/// The simulator's backend.
pub struct SimBackend {
    /// vCPUs, each on its own cache line: every vCPU writes its mode at every entry and
    /// exit, and a line shared with another vCPU's would cross cores each time.
    pub vcpus: Vec<CachePadded<VcpuShared>>,
    /// Shared alias backing.
    pub shared: SharedFrames,
    /// Private backing (frame = gfn: one guest_memfd at offset 0).
    pub private: Arc<SimPrivateMem>,
    private_gen: Vec<AtomicU64>,
    /// Kick requests served.
    pub kicks: PerCpuCounter,
    /// KVM's `wait_for_sept_zap`: no simulated vCPU enters the TD while it is set.
    /// (Read at every entry, written rarely: on a line of its own.)
    pub hold_out: CachePadded<AtomicBool>,
}

impl SimBackend {
    /// A backend for `gfns` of RAM, with `spare` extra shared frames for migrations. The
    /// RAM is one region per vCPU, each with its own share of the shared frames.
    pub fn new(vcpus: u32, gfns: u64, spare: u64) -> SimBackend {
        SimBackend {
            vcpus: (0..vcpus).map(|_| CachePadded::default()).collect(),
            shared: SharedFrames::new(gfns, gfns + spare, vcpus.into(), layout()),
            private: Arc::new(SimPrivateMem::with_layout(gfns, layout())),
            private_gen: (0..gfns).map(|_| AtomicU64::new(0)).collect(),
            kicks: PerCpuCounter::default(),
            hold_out: CachePadded::new(AtomicBool::new(false)),
        }
    }
    /// A private frame's generation.
    pub(crate) fn private_gen(&self, hpa: u64) -> u64 {
        self.private_gen[hpa as usize].load(Acquire)
    }
}

impl Backend for SimBackend {
    fn set_accessible(
        &self,
        alias: Alias,
        gfn: u64,
        npages: u64,
        accessible: bool,
    ) -> Result<(), BackendError> {
        if alias == Alias::Private && !accessible {
            for g in gfn..gfn + npages {
                self.private_gen[g as usize].fetch_add(1, AcqRel);
            }
        }
        Ok(())
    }
    fn discard(&self, alias: Alias, gfn: u64, npages: u64) -> Result<(), BackendError> {
        match alias {
            Alias::Shared => (gfn..gfn + npages).for_each(|g| self.shared.discard(g)),
            Alias::Private => {
                self.private.zero(gfn, npages);
                for g in gfn..gfn + npages {
                    self.private_gen[g as usize].fetch_add(1, AcqRel);
                }
            }
        }
        Ok(())
    }
    fn kick_all_vcpus(&self, flush_tlb: bool) {
        self.kicks.fetch_add(1, Relaxed);
        for v in &self.vcpus {
            if flush_tlb {
                v.flush_req.store(true, SeqCst);
            }
            v.kick_req.store(true, SeqCst);
        }
        for v in &self.vcpus {
            let seen = v.exits.load(SeqCst);
            // The kicked vCPU notices at its next access, normally within a few hundred
            // nanoseconds if its thread is running: spin first, give up the CPU only if it
            // is not (more simulated vCPUs than host CPUs).
            let mut spins = 0u32;
            while v.mode.load(SeqCst) == IN_GUEST && v.exits.load(SeqCst) == seen {
                if spins < 4096 {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
    }
    fn shared_pfn(&self, gfn: u64) -> u64 {
        self.shared.frame_of(gfn)
    }
    fn hold_vcpus_out(&self, hold: bool) {
        self.hold_out.store(hold, SeqCst);
    }
}
