//! The hypervisor MMU (KVM's `tdp_mmu.c`, `mmu.c`, `kvm_main.c`, `vmx/tdx.c`): memory
//! attributes, the mirror (private) and direct (shared) TDP roots, the fault path, the zap
//! path with its attribute filter, and the TDX hooks that forward mirror changes to the TDX
//! module.

mod attributes;
mod backend;
mod cpuid;
mod fault;
mod hypercall;
mod msr;
mod policy;
mod tdp;
mod tdvmcall;
mod tdx;
mod zap;

pub use attributes::Attributes;
pub use backend::{Alias, Backend, BackendError, NullBackend};
pub use cpuid::CpuidEntry;
pub use fault::{FaultError, FaultOutcome};
pub use hypercall::KVM_ENOSYS;
pub use msr::tdx_has_emulated_msr;
pub use policy::{
    root_action, FilterZeroBug, RootAction, ZapCaller, ZapPolicy, KVM_FILTER_PRIVATE,
    KVM_FILTER_SHARED,
};
pub use tdp::{MapOutcome, RootKind, TdpRoot};
pub use tdvmcall::{HypercallFailed, VmmExits};
pub use tdx::{tdx_vm_init_max_vcpus, TdxRemove};
pub use zap::KvmGfnRange;

use crate::locks::{PerCpuRwLock, SpinMutex};
use crate::percpu::PerCpuCounter;
use crate::seam::TdxModule;
use crossbeam_utils::sync::ShardedLock;
use crossbeam_utils::CachePadded;
use shared_abi::convert::MemoryAttributes;
use shared_abi::{Gpa, Gpaw, PageLevel, TdxStatus};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex, RwLock};

/// `INVALID_GPA` as the invalidation range's "unset".
const INVALID_GFN: u64 = u64::MAX;

/// How the VM is built.
#[derive(Clone, Debug)]
pub struct KvmConfig {
    /// A TD (mirror + direct roots) or a plain VM (direct root only).
    pub is_td: bool,
    /// Zap semantics.
    pub policy: ZapPolicy,
    /// Root allocation order: the zap walks roots in this order.
    pub root_order: Vec<RootKind>,
    /// Largest private mapping (KVM today: 4K).
    pub private_max_level: PageLevel,
    /// GFNs of guest RAM.
    pub mem_pages: u64,
    /// Guest physical-address width.
    pub gpaw: Gpaw,
    /// Behaviour beyond upstream KVM (all off by default).
    pub beyond: BeyondUpstream,
    /// GFNs of the firmware window: a guest_memfd memslot that QEMU makes private for good
    /// before it populates it (KVM_TDX_INIT_MEM_REGION); empty without one.
    pub firmware: std::ops::Range<u64>,
}

/// Behaviour beyond upstream KVM, each selectable and off by default, so the model keeps
/// teaching what KVM does (docs/performance.md measures each against upstream).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BeyondUpstream {
    /// How a zap removes private leaves (`--tdx-remove`; KVM: one at a time).
    pub tdx_remove: TdxRemove,
    /// AUG the pages of a MapGPA-to-private range at once (`--prefault`), so the guest's
    /// ACCEPTs find them PENDING instead of raising EPT violations.
    pub prefault: bool,
}

impl BeyondUpstream {
    /// The options that are on, as their flags: `", beyond upstream: --tdx-remove batched
    /// --prefault"`, or nothing under upstream behaviour. Headers and summaries append it,
    /// since both options change what the counters count (fewer kicks, fewer EPT
    /// violations) and a reader must not take those figures for upstream's.
    pub fn describe(&self) -> String {
        let mut on = Vec::new();
        if self.tdx_remove != TdxRemove::PerLeaf {
            on.push(format!("--tdx-remove {}", self.tdx_remove.name()));
        }
        if self.prefault {
            on.push("--prefault".to_string());
        }
        match on.is_empty() {
            true => String::new(),
            false => format!(", beyond upstream: {}", on.join(" ")),
        }
    }
}

impl KvmConfig {
    /// A TD with `mem_pages` of RAM and guest physical-address width `gpaw` (the TD's
    /// TD_PARAMS: KVM takes the shared bit from it), default policy, direct root first.
    pub fn td(mem_pages: u64, gpaw: Gpaw) -> KvmConfig {
        KvmConfig {
            is_td: true,
            policy: ZapPolicy::Filter,
            root_order: vec![RootKind::Direct, RootKind::Mirror],
            private_max_level: PageLevel::Size4K,
            mem_pages,
            gpaw,
            beyond: BeyondUpstream::default(),
            firmware: 0..0,
        }
    }
}

/// Counters for reports.
#[derive(Default, Debug)]
pub struct KvmStats {
    /// Leaves zapped from direct roots (4K units).
    pub zapped_direct: PerCpuCounter,
    /// Leaves zapped from mirror roots (4K units).
    pub zapped_mirror: PerCpuCounter,
    /// Calls of kvm_tdp_mmu_unmap_gfn_range.
    pub zap_calls: PerCpuCounter,
    /// Remote TLB flushes.
    pub flushes: PerCpuCounter,
    /// Flushes a zap needed but did not report (v19's dropped flush).
    pub flushes_dropped: PerCpuCounter,
    /// Kick-all-vCPUs requests (TRACK and flushes).
    pub kicks: PerCpuCounter,
    /// EPT violations handled (`kvm_mmu_page_fault`; not a prefault's mappings).
    pub faults: PerCpuCounter,
    /// Faults that had to retry (stale seq / in-progress range / frozen SPTE).
    pub fault_retries: PerCpuCounter,
    /// Faults that became memory-fault exits (attribute mismatch).
    pub memory_faults: PerCpuCounter,
    /// Pages mapped ahead of the guest (`--prefault`).
    pub prefaulted: PerCpuCounter,
    /// Mappings `--prefault` asked the fault path for (`kvm_tdp_map_page`): counted apart
    /// from `faults`, since no EPT violation caused them.
    pub prefault_maps: PerCpuCounter,
    /// Leaves installed, direct and mirror.
    pub installed_direct: PerCpuCounter,
    /// Mirror leaves installed.
    pub installed_mirror: PerCpuCounter,
}

/// The invalidation protocol's shared state (`mmu_invalidate_*`), written under mmu_lock
/// held for write.
#[derive(Debug)]
struct Invalidation {
    in_progress: AtomicU32,
    start: AtomicU64,
    end: AtomicU64,
    seq: AtomicU64,
}

/// The VM as KVM's MMU sees it.
pub struct Kvm {
    cfg: KvmConfig,
    /// The vCPUs' CPUID table (KVM_SET_CPUID2).
    cpuid: RwLock<Vec<CpuidEntry>>,
    /// `kvm->mmu_lock`: read for faults, write for zaps. (This and the next three fields
    /// are written by one vCPU while others read the fields around them: each sits alone
    /// on its cache lines, so that the configuration every fault reads does not move
    /// between cores with them.)
    mmu_lock: PerCpuRwLock,
    /// `kvm->slots_lock`: serialises attribute changes and memslot updates.
    slots_lock: CachePadded<SpinMutex<()>>,
    roots: Vec<TdpRoot>,
    attrs: CachePadded<ShardedLock<Attributes>>,
    inval: CachePadded<Invalidation>,
    tdx: Option<Arc<TdxModule>>,
    backend: Arc<dyn Backend>,
    bugged: AtomicBool,
    /// The first KVM_BUG's message.
    first_bug: Mutex<Option<KvmBug>>,
    /// What the MMU did.
    pub stats: KvmStats,
    /// Each vCPU's emulated MSRs (TDVMCALL<RDMSR/WRMSR>), made at its first access.
    msrs: Mutex<std::collections::HashMap<u32, msr::VcpuMsrs>>,
}

/// A fatal inconsistency (`KVM_BUG_ON`): the VM is marked dead. Each variant is one of the
/// model's `KVM_BUG_ON` sites.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum KvmBug {
    /// The VM was already bugged by an earlier one.
    #[error("KVM_BUG: VM is bugged: {0}")]
    AlreadyBugged(Box<KvmBug>),
    /// A mirror-root operation on a VM without a TDX module.
    #[error("KVM_BUG: mirror root without a TDX module")]
    NoTdxModule,
    /// A SEAMCALL failed (after one retry with every vCPU kicked out, if it was busy);
    /// `epochs` says which vCPUs were still in which epoch when TRACK was not done.
    #[error("KVM_BUG: {what}{}: {status}{}", if *.retried { " failed twice" } else { "" }, .epochs.as_ref().map(|e| format!(" ({e})")).unwrap_or_default())]
    Seamcall {
        /// TDH.MEM.RANGE.BLOCK, TDH.MEM.TRACK, ...
        what: &'static str,
        /// The module's status.
        status: TdxStatus,
        /// It was busy the first time and failed again after the kick.
        retried: bool,
        /// The epoch summary, for TLB_TRACKING_NOT_DONE.
        epochs: Option<String>,
    },
    /// TDH.MEM.PAGE.REMOVE handed back another frame than the mirror leaf held.
    #[error("KVM_BUG: TDH.MEM.PAGE.REMOVE of {gpa} returned frame {got:#x}, mirror had {want:#x}")]
    RemovedWrongFrame {
        /// The GPA.
        gpa: Gpa,
        /// What the module returned.
        got: u64,
        /// What the mirror leaf held.
        want: u64,
    },
    /// Installing a private leaf failed with something other than BUSY.
    #[error("KVM_BUG: mapping private gpa {gpa}: {status}")]
    MapPrivate {
        /// The GPA.
        gpa: Gpa,
        /// The module's status.
        status: TdxStatus,
    },
    /// An attribute change outside the memslots.
    #[error("KVM_BUG: set attributes on gfns [{start:#x}, {end:#x}) outside the memslots")]
    OutsideMemslots {
        /// First GFN.
        start: u64,
        /// One past the last.
        end: u64,
    },
    /// `kvm_unmap_gfn_range` called outside an invalidation.
    #[error("KVM_BUG: kvm_unmap_gfn_range outside an invalidation")]
    UnmapOutsideInvalidation,
    /// A zap with attr_filter 0 on a TD (upstream's "poison 0").
    #[error(transparent)]
    FilterZero(#[from] FilterZeroBug),
    /// The backend failed (a system call on guest memory).
    #[error("KVM_BUG: {0}")]
    Backend(#[from] BackendError),
}

impl Kvm {
    /// Build the VM. A TD needs its TDX module. All RAM starts private on a TD, shared otherwise.
    pub fn new(cfg: KvmConfig, tdx: Option<Arc<TdxModule>>, backend: Arc<dyn Backend>) -> Kvm {
        let roots = cfg
            .root_order
            .iter()
            .filter(|k| cfg.is_td || **k == RootKind::Direct)
            .map(|k| TdpRoot::new(*k))
            .collect();
        let init = if cfg.is_td {
            MemoryAttributes::PRIVATE
        } else {
            MemoryAttributes::SHARED
        };
        Kvm {
            cpuid: RwLock::new(Vec::new()),
            attrs: CachePadded::new(ShardedLock::new(Attributes::new(cfg.mem_pages, init))),
            cfg,
            mmu_lock: PerCpuRwLock::default(),
            slots_lock: CachePadded::new(SpinMutex::new(())),
            roots,
            inval: CachePadded::new(Invalidation {
                in_progress: AtomicU32::new(0),
                start: AtomicU64::new(INVALID_GFN),
                end: AtomicU64::new(INVALID_GFN),
                seq: AtomicU64::new(0),
            }),
            tdx,
            backend,
            bugged: AtomicBool::new(false),
            first_bug: Mutex::new(None),
            stats: KvmStats::default(),
            msrs: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &KvmConfig {
        &self.cfg
    }
    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }
    /// True once a KVM_BUG fired.
    pub fn is_bugged(&self) -> bool {
        self.bugged.load(Relaxed)
    }
    /// Why the VM is bugged (the first KVM_BUG), if it is.
    pub fn bug_reason(&self) -> Option<KvmBug> {
        self.first_bug
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    fn bug(&self, b: impl Into<KvmBug>) -> KvmBug {
        let b = b.into();
        self.first_bug
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| b.clone());
        self.bugged.store(true, Relaxed);
        tracing::error!(target: "kvm", "{b}");
        b
    }
    /// The root of `kind`, if the VM has one.
    pub fn root(&self, kind: RootKind) -> Option<&TdpRoot> {
        self.roots.iter().find(|r| r.kind() == kind)
    }
    /// The roots in allocation order.
    pub fn roots(&self) -> &[TdpRoot] {
        &self.roots
    }
    /// `kvm_mem_is_private(gfn)`.
    pub(crate) fn kvm_mem_is_private(&self, gfn: u64) -> bool {
        if self.cfg.firmware.contains(&gfn) {
            return true;
        }
        self.attrs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(gfn)
            .is_private()
    }
    /// A copy of the attributes.
    pub fn attributes(&self) -> Attributes {
        self.attrs.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// The GFN of a GPA, shared bit stripped (`gpa_to_gfn` + `kvm_gfn_to_private`).
    pub(crate) fn gfn_of(&self, gpa: Gpa) -> u64 {
        self.cfg.gpaw.to_private(gpa).0 >> 12
    }
    /// Check invariants 1 and 2 (docs/model.md) over every leaf; returns a description of
    /// each violation.
    pub fn check_invariants(&self) -> Vec<String> {
        let _r = self.mmu_lock.read();
        let attrs = self.attributes();
        let mut bad = Vec::new();
        let mut private_gfns = std::collections::HashSet::new();
        if let Some(tdx) = &self.tdx {
            for (gpa, level, state) in tdx.leaves() {
                let n = shared_abi::sept::level_pages(level);
                for gfn in gpa.0 >> 12..(gpa.0 >> 12) + n {
                    private_gfns.insert(gfn);
                    if !attrs.get(gfn).is_private() && !self.cfg.firmware.contains(&gfn) {
                        bad.push(format!(
                            "S-EPT leaf {} ({}) at gfn {gfn:#x} whose attribute is shared",
                            state.name(),
                            level
                        ));
                    }
                }
            }
        }
        if let Some(direct) = self.root(RootKind::Direct) {
            for (gfn, level, _) in direct.leaves() {
                for g in gfn..gfn + (shared_abi::sept::level_pages(level)) {
                    if self.cfg.is_td && attrs.get(g).is_private() {
                        bad.push(format!(
                            "direct leaf at gfn {g:#x} whose attribute is private"
                        ));
                    }
                    if private_gfns.contains(&g) {
                        bad.push(format!("gfn {g:#x} reachable through both aliases"));
                    }
                }
            }
        }
        bad
    }
}
