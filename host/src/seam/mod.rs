//! The TDX module (SEAM): TD state, the Secure EPT and its entry states, TLB epochs, the
//! SEAMCALLs the hypervisor uses and the TDCALLs the guest uses.
//!
//! Everything here follows the TDX module 1.5 ABI and base specifications (Intel). Private
//! page contents live behind [`PrivateMem`]: the hypervisor and VMM roles never read them.

mod epoch;
pub mod machine;
pub mod measure;
mod mem;
mod metadata;
mod seamcall;
mod sept;
mod tdcall;

pub use epoch::EpochState;
pub use mem::{CpuMapError, FrameWords, NullPrivateMem, PrivateMem, SimPrivateMem};
pub use sept::{Sept, SeptEntry, Walk};
pub use tdcall::{TdcallExit, VeInjection};

use crate::percpu::PerCpuCounter;
use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};
use crossbeam_utils::CachePadded;
use shared_abi::sept::{SeptLevel, SeptState};
use shared_abi::status::operand;
use shared_abi::{Gpa, Gpaw, TdxStatus};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::*};
use std::sync::Arc;

use crate::locks::{SpinMutex as Mutex, SpinMutexGuard as MutexGuard};

/// A host physical page number: the index of a 4 KiB frame in the private backing.
pub type Hpa = u64;

/// The TD's lifecycle, as far as memory operations care (module `op_state`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OpState {
    /// Built, not finalized: PAGE.ADD allowed, no blocking/tracking needed.
    Initialized = 0,
    /// Finalized and running: PAGE.AUG, and removal needs BLOCK + TRACK.
    Runnable = 1,
    /// Torn down (HKID released): table pages may be reclaimed.
    Teardown = 2,
}

impl OpState {
    fn from_u8(v: u8) -> OpState {
        match v {
            0 => OpState::Initialized,
            1 => OpState::Runnable,
            _ => OpState::Teardown,
        }
    }
}

/// TD-wide configuration.
#[derive(Clone, Copy, Debug)]
pub struct TdParams {
    /// Guest physical-address width.
    pub gpaw: Gpaw,
    /// TD ATTRIBUTES (SEPT_VE_DISABLE ...).
    pub attributes: u64,
    /// vCPUs initialized (TDH.VP.INIT), the module's TDCS NUM_VCPUS.
    pub num_vcpus: u32,
    /// TD_PARAMS.MAX_VCPUS: KVM passes its `max_vcpus`, which KVM 6.16 sets to the host's
    /// present CPUs (`tdx_vm_init`; QEMU 10.1 never changes it with KVM_CAP_MAX_VCPUS).
    pub max_vcpus: u32,
}

/// Counters of what the module did, for reports and invariants.
#[derive(Default, Debug)]
pub struct SeamStats {
    /// SEAMCALLs by kind.
    pub sept_add: PerCpuCounter,
    /// PAGE.ADD.
    pub page_add: PerCpuCounter,
    /// MR.EXTEND (256-byte chunks measured).
    pub mr_extend: PerCpuCounter,
    /// PAGE.AUG.
    pub page_aug: PerCpuCounter,
    /// RANGE.BLOCK.
    pub block: PerCpuCounter,
    /// RANGE.UNBLOCK.
    pub unblock: PerCpuCounter,
    /// TRACK that advanced the epoch.
    pub track: PerCpuCounter,
    /// PAGE.REMOVE.
    pub remove: PerCpuCounter,
    /// PAGE.DEMOTE.
    pub demote: PerCpuCounter,
    /// SEPT.REMOVE.
    pub sept_remove: PerCpuCounter,
    /// Pages accepted (4K units).
    pub accepted_4k: PerCpuCounter,
    /// S-EPT table pages freed while the TD was runnable (invariant 4: must stay 0).
    pub tables_freed_while_runnable: PerCpuCounter,
    /// Pages removed that were not blocked and tracked first (invariant 5: must stay 0).
    pub removed_untracked: PerCpuCounter,
    /// TDG.MEM.PAGE.ACCEPTs answered PAGE_SIZE_MISMATCH (the host mapped the range smaller).
    pub accept_size_mismatch: PerCpuCounter,
    /// TDG.MEM.PAGE.ACCEPTs answered OPERAND_BUSY by fault injection.
    pub accept_busy_injected: PerCpuCounter,
    /// Pages the host failed to make reachable when they became MAPPED, or unreachable when
    /// blocked (must stay 0).
    pub map_failures: PerCpuCounter,
}

/// What the module keeps apart from the S-EPT, under one lock taken after the tree lock.
pub(crate) struct SeamInner {
    /// Per-vCPU pending #VE info (valid until VEINFO.GET).
    pub(crate) ve_info: Vec<Option<shared_abi::ve::VeInfo>>,
    /// Pages blocked since the last TRACK that the CPU may still reach (first GFN, pages):
    /// BLOCK stops new translations, but the CPU's cached ones live until TLB tracking, so
    /// the emulated CPU loses these pages at the next TRACK (one call per run of adjacent
    /// pages), or before an operation that needs them gone.
    pub(crate) cpu_unmap_pending: Vec<(u64, u64)>,
    /// MRTD, extended while the TD is built.
    pub(crate) mrtd: measure::Measurement,
    /// The TD-scope fields a guest may write (TDG.VM.WR).
    pub(crate) td_fields: metadata::TdFields,
    /// Each vCPU's guest-visible TDVPS fields (TDG.VP.RD/WR).
    pub(crate) vp_fields: Vec<metadata::VpFields>,
}

/// The TDX module of one TD.
pub struct TdxModule {
    params: TdParams,
    /// The S-EPT and its tree lock (`sept_lock`): shared by the walks and the calls that
    /// change one entry, exclusive for those that link, unlink or split tables. Sharded
    /// per CPU, so that vCPUs taking it shared do not move one reader count between cores.
    sept: ShardedLock<Sept>,
    /// (Written by the zapping vCPU while the others read the fields around: alone on its
    /// cache lines, like the next one.)
    inner: CachePadded<Mutex<SeamInner>>,
    /// `inner.cpu_unmap_pending` is not empty: a REMOVE looks before taking `inner`, as
    /// after a TRACK (which unmaps them all) it usually is.
    unmap_pending: CachePadded<AtomicBool>,
    /// The op-state, changed under `inner` and read without it: KVM asks at every removal
    /// and AUG (it keeps its own copy, `kvm_tdx->state`), and the answer only moves forward.
    op_state: AtomicU8,
    /// TLB epochs, apart from the S-EPT: vCPUs enter and leave the TD far more often than
    /// the S-EPT changes, and need nothing else (no lock: see [`EpochState`]).
    epoch: EpochState,
    mem: Arc<dyn PrivateMem>,
    /// What the module did.
    pub stats: SeamStats,
    /// Fault injection (beyond the module: an option of tdxlab's): TDG.MEM.PAGE.ACCEPT
    /// finds the S-EPT tree lock taken (OPERAND_BUSY). Set only at construction.
    inject_accept_busy: Option<crate::inject::Chance>,
}

/// A SEAMCALL result: success value or the module's status.
pub type SeamResult<T> = Result<T, TdxStatus>;

fn rcx_error(s: TdxStatus) -> TdxStatus {
    s.with_details(operand::RCX)
}

impl TdxModule {
    /// TDH.MNG.CREATE + TDH.MNG.INIT: a TD in op-state INITIALIZED with an empty S-EPT.
    pub fn new(params: TdParams, mem: Arc<dyn PrivateMem>) -> TdxModule {
        TdxModule {
            sept: ShardedLock::new(Sept::new()),
            inner: CachePadded::new(Mutex::new(SeamInner {
                ve_info: vec![None; params.num_vcpus as usize],
                cpu_unmap_pending: Vec::new(),
                mrtd: measure::Measurement::default(),
                td_fields: metadata::TdFields::new(params.attributes),
                vp_fields: vec![metadata::VpFields::default(); params.num_vcpus as usize],
            })),
            unmap_pending: CachePadded::new(AtomicBool::new(false)),
            op_state: AtomicU8::new(OpState::Initialized as u8),
            epoch: EpochState::new(params.num_vcpus),
            params,
            mem,
            stats: SeamStats::default(),
            inject_accept_busy: None,
        }
    }

    /// The module with injected accept contention: each accept that would succeed answers
    /// OPERAND_BUSY with probability `p` (seeded).
    pub fn with_accept_busy(self, p: f64, seed: u64) -> TdxModule {
        TdxModule {
            inject_accept_busy: (p > 0.0).then(|| crate::inject::Chance::new(p, seed)),
            ..self
        }
    }

    /// A TD already finalized (TDH.MNG.CREATE, TDH.MNG.INIT, TDH.MR.FINALIZE): op-state
    /// RUNNABLE, ready for PAGE.AUG and guest TDCALLs.
    pub fn runnable(params: TdParams, mem: Arc<dyn PrivateMem>) -> Arc<TdxModule> {
        let td = TdxModule::new(params, mem);
        td.set_op_state(OpState::Runnable);
        Arc::new(td)
    }

    /// The TD's parameters.
    pub(crate) fn params(&self) -> &TdParams {
        &self.params
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SeamInner> {
        self.inner.lock()
    }

    /// The S-EPT with its tree lock held shared. A poisoned lock means a panic elsewhere
    /// already failed the run; keep reporting.
    pub(crate) fn tree(&self) -> ShardedLockReadGuard<'_, Sept> {
        self.sept.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The S-EPT with its tree lock held exclusively.
    pub(crate) fn tree_mut(&self) -> ShardedLockWriteGuard<'_, Sept> {
        self.sept.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The TLB epochs.
    fn epochs(&self) -> &EpochState {
        &self.epoch
    }

    /// The TD's op-state.
    pub fn op_state(&self) -> OpState {
        OpState::from_u8(self.op_state.load(Acquire))
    }

    /// Move to `s` (the caller holds `inner`, or owns the module).
    fn set_op_state(&self, s: OpState) {
        self.op_state.store(s as u8, Release);
    }

    /// TDH.MR.FINALIZE: INITIALIZED → RUNNABLE (`tdh_mr_finalize`).
    pub fn tdh_mr_finalize(&self) -> SeamResult<()> {
        let mut g = self.lock();
        if self.op_state() != OpState::Initialized {
            return Err(TdxStatus::LIFECYCLE_STATE_INCORRECT);
        }
        self.set_op_state(OpState::Runnable);
        g.mrtd.finalize();
        Ok(())
    }

    /// Tear the TD down (TDH.MNG.VPFLUSHDONE + KEY.FREEID): S-EPT pages may now be reclaimed.
    pub fn teardown(&self) {
        let _g = self.lock();
        self.set_op_state(OpState::Teardown);
    }

    fn check_gpa(&self, gpa: Gpa) -> SeamResult<()> {
        if !self.params.gpaw.is_valid(gpa) || self.params.gpaw.is_shared(gpa) || gpa.0 & 0xFFF != 0
        {
            return Err(rcx_error(TdxStatus::OPERAND_INVALID));
        }
        Ok(())
    }

    /// A leaf just became MAPPED: let the CPU reach it (the caller holds the entry, as
    /// [`PrivateMem::map`] says).
    /// The module itself cannot fail here, so a host failure is counted and logged; the
    /// guest's next touch of the page then reaches the host's fault path, which reports it.
    pub(crate) fn map_for_cpu(&self, gpa: Gpa, hpa: Hpa, pages: u64) {
        if let Err(e) = self.mem.map(gpa, hpa, pages) {
            self.stats.map_failures.fetch_add(1, Relaxed);
            tracing::error!(target: "seam", gpa = %gpa, pages, "mapping an accepted page failed: {e}");
        }
    }

    /// The guest touched private `gpa` and the host saw it: if the leaf covering it is
    /// MAPPED, map it for the CPU again. `inner` is held throughout, as BLOCK holds it from
    /// the state change to queueing the page's unmap, so a BLOCK (and the TRACK that
    /// unmaps) falls wholly before or after this.
    /// Returns the leaf's state and level, `None` when no leaf covers `gpa`.
    pub(crate) fn remap_if_mapped(
        &self,
        gpa: Gpa,
    ) -> Result<Option<(SeptState, SeptLevel)>, CpuMapError> {
        let tree = self.tree();
        let _g = self.lock();
        match tree.walk(gpa, 0) {
            Walk::Leaf { entry, level } => {
                if entry.state == SeptState::Mapped {
                    let pages = shared_abi::sept::level_pages(level);
                    let base = Gpa(gpa.0 & !((pages << 12) - 1));
                    self.mem.map(base, entry.hpa, pages)?;
                }
                Ok(Some((entry.state, level)))
            }
            _ => Ok(None),
        }
    }

    /// TDH.PHYMEM.PAGE.WBINVD then the host's MOVDIR64B clear (`tdx_clear_page`): the frame
    /// holds no TD data afterwards.
    pub(crate) fn tdx_clear_page(&self, hpa: Hpa, pages: u64) {
        self.mem.zero(hpa, pages);
    }

    /// [`Self::tdx_clear_page`] over a run of frames the host takes back at once (batched
    /// removal): the backing may drop them instead of zeroing each.
    pub(crate) fn tdx_clear_pages_released(&self, hpa: Hpa, pages: u64) {
        self.mem.release(hpa, pages);
    }

    /// A vCPU enters the TD (TDH.VP.ENTER): it joins the current epoch. Returns true when the
    /// module must flush the vCPU's TLB because the epoch moved since its last entry.
    pub fn td_vcpu_enter(&self, vcpu: u32) -> bool {
        self.epochs().enter(vcpu)
    }

    /// The TD epoch and the vCPUs inside it, in one line (for diagnostics).
    pub(crate) fn epoch_summary(&self) -> String {
        self.epochs().describe()
    }

    /// The vCPU left the TD (TD exit).
    pub fn td_vcpu_exit(&self, vcpu: u32) {
        self.epochs().exit(vcpu)
    }

    /// The hardware's view: where a private GPA translates now.
    pub(crate) fn translate(&self, gpa: Gpa) -> Walk {
        self.tree().walk(gpa, 0)
    }

    /// Test and invariant support: every leaf (gpa, level, state).
    pub fn leaves(&self) -> Vec<(Gpa, SeptLevel, SeptState)> {
        self.tree().leaves()
    }

    /// The private memory this module guards.
    pub fn mem(&self) -> &Arc<dyn PrivateMem> {
        &self.mem
    }

    /// The state of the entry at exactly `level` for `gpa`, if the walk reaches it.
    pub fn entry_state(&self, gpa: Gpa, level: SeptLevel) -> Option<SeptState> {
        self.tree().entry_at(gpa, level).ok().map(|e| e.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runnable() -> Arc<TdxModule> {
        let params = TdParams {
            gpaw: Gpaw::GPAW_48,
            attributes: 0,
            num_vcpus: 1,
            max_vcpus: 1,
        };
        TdxModule::runnable(params, Arc::new(NullPrivateMem))
    }

    /// After teardown the module refuses to add pages to the TD (its op-state is TEARDOWN).
    #[test]
    fn a_torn_down_td_takes_no_new_pages() {
        let m = runnable();
        for level in [3, 2, 1] {
            m.tdh_mem_sept_add(Gpa(0), level).unwrap();
        }
        m.tdh_mem_page_aug(Gpa(0x1000), 0, 1).unwrap();
        m.teardown();
        assert_eq!(m.op_state(), OpState::Teardown);
        assert_eq!(
            m.tdh_mem_page_aug(Gpa(0x2000), 0, 2),
            Err(TdxStatus::LIFECYCLE_STATE_INCORRECT)
        );
    }
}
