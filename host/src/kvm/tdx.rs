//! The TDX hooks: how mirror-root changes reach the TDX module (`vmx/tdx.c`).

use super::{Kvm, KvmBug};
use crate::seam::{OpState, SeamResult, TdxModule};
use shared_abi::{Gpa, TdxStatus};
use std::sync::atomic::Ordering::*;

/// How a zap removes the private leaves of its range.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TdxRemove {
    /// KVM 6.16: each leaf on its own, BLOCK → TRACK → kick → REMOVE
    /// (`tdx_sept_remove_private_spte`), so a 2 MiB range of 4K leaves kicks 512 times.
    #[default]
    PerLeaf,
    /// Beyond upstream: BLOCK every leaf, one TRACK and one kick, then every REMOVE.
    Batched,
}

/// `KVM_MAX_VCPUS` on x86 (`CONFIG_KVM_MAX_NR_VCPUS`, 1024 without MAXSMP): the start of
/// every VM's `kvm->max_vcpus`.
pub const KVM_MAX_VCPUS: u32 = 1024;

/// TD_PARAMS.MAX_VCPUS as KVM 6.16 fills it when userspace leaves `KVM_CAP_MAX_VCPUS` alone
/// (QEMU 10.1 does): `tdx_vm_init` cuts `kvm->max_vcpus` to `num_present_cpus()` — the
/// host's logical CPUs, not the TD's vCPU count — and `setup_tdparams` copies it into
/// TD_PARAMS. `present` is `/sys/devices/system/cpu/present`.
pub fn tdx_vm_init_max_vcpus(present: &str) -> u32 {
    KVM_MAX_VCPUS.min(num_present_cpus(present))
}

/// The number of CPUs in a kernel CPU list ("0-3,8,10-11"); 1 where it cannot be read, as a
/// host running this has at least the CPU it runs on.
fn num_present_cpus(list: &str) -> u32 {
    let range = |r: &str| -> Option<u32> {
        match r.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (lo.parse::<u32>().ok()?, hi.parse::<u32>().ok()?);
                hi.checked_sub(lo)?.checked_add(1)
            }
            None => r.parse::<u32>().ok().map(|_| 1),
        }
    };
    let n = (list.trim().split(',').filter(|r| !r.is_empty()))
        .try_fold(0u32, |n, r| n.checked_add(range(r)?));
    n.unwrap_or(1).max(1)
}

impl TdxRemove {
    /// Both modes.
    pub const ALL: [TdxRemove; 2] = [TdxRemove::PerLeaf, TdxRemove::Batched];
    /// "per-leaf" / "batched".
    pub const fn name(self) -> &'static str {
        match self {
            TdxRemove::PerLeaf => "per-leaf",
            TdxRemove::Batched => "batched",
        }
    }
}

impl Kvm {
    fn tdx_module(&self) -> Result<&TdxModule, KvmBug> {
        self.tdx
            .as_deref()
            .ok_or_else(|| self.bug(KvmBug::NoTdxModule))
    }

    fn gfn_gpa(gfn: u64) -> Gpa {
        Gpa(gfn << 12)
    }

    /// `tdx_sept_link_private_spt`: TDH.MEM.SEPT.ADD for a new mirror table at `level`.
    pub(crate) fn tdx_sept_link_private_spt(&self, gfn: u64, level: u8) -> SeamResult<()> {
        let tdx = self.tdx.as_deref().ok_or(TdxStatus::OPERAND_INVALID)?;
        tdx.tdh_mem_sept_add(Self::gfn_gpa(gfn), level)
    }

    /// `tdx_sept_set_private_spte`: TDH.MEM.PAGE.AUG on a running TD (PAGE.ADD before
    /// finalize).
    pub(crate) fn tdx_sept_set_private_spte(
        &self,
        gfn: u64,
        level: u8,
        pfn: u64,
    ) -> SeamResult<()> {
        let tdx = self.tdx.as_deref().ok_or(TdxStatus::OPERAND_INVALID)?;
        if tdx.op_state() == OpState::Initialized && level == 0 {
            tdx.tdh_mem_page_add(Self::gfn_gpa(gfn), pfn)
        } else {
            tdx.tdh_mem_page_aug(Self::gfn_gpa(gfn), level, pfn)
        }
    }

    /// Run a SEAMCALL; on OPERAND_BUSY (contention with a TD entry or a TDCALL) keep every
    /// vCPU out of the TD, kick them and retry once (`tdx_no_vcpus_enter_start`, the retry,
    /// `tdx_no_vcpus_enter_stop`). Any other failure — PREVIOUS_TLB_EPOCH_BUSY and
    /// GPA_RANGE_ALREADY_BLOCKED included — is a KVM bug, as `KVM_BUG_ON(err)` makes it.
    fn tdh_do_no_vcpus<T>(
        &self,
        what: &'static str,
        f: impl Fn() -> SeamResult<T>,
    ) -> Result<T, KvmBug> {
        match f() {
            Err(s) if s.is(TdxStatus::OPERAND_BUSY) => {
                self.backend.hold_vcpus_out(true);
                self.stats.kicks.fetch_add(1, Relaxed);
                self.backend.kick_all_vcpus(false);
                let r = f();
                self.backend.hold_vcpus_out(false);
                r.map_err(|status| self.seamcall_bug(what, status, true))
            }
            r => r.map_err(|status| self.seamcall_bug(what, status, false)),
        }
    }

    fn seamcall_bug(&self, what: &'static str, status: TdxStatus, retried: bool) -> KvmBug {
        let epochs = if status.is(TdxStatus::TLB_TRACKING_NOT_DONE) {
            self.tdx.as_deref().map(TdxModule::epoch_summary)
        } else {
            None
        };
        self.bug(KvmBug::Seamcall {
            what,
            status,
            retried,
            epochs,
        })
    }

    /// `tdx_track`: TDH.MEM.TRACK, then kick every vCPU so none stays in the old epoch.
    fn tdx_track(&self) -> Result<(), KvmBug> {
        let tdx = self.tdx_module()?;
        if tdx.op_state() != OpState::Runnable {
            return Ok(());
        }
        self.tdh_do_no_vcpus("TDH.MEM.TRACK", || tdx.tdh_mem_track())?;
        tracing::trace!(target: "kvm", "kick all vCPUs and wait (KVM_REQ_OUTSIDE_GUEST_MODE)");
        self.stats.kicks.fetch_add(1, Relaxed);
        self.backend.kick_all_vcpus(false);
        Ok(())
    }

    /// `tdx_sept_remove_private_spte`: BLOCK → TRACK → kick → REMOVE → WBINVD + clear, one
    /// leaf at a time, as KVM 6.16 does. The caller makes the frame unreachable afterwards
    /// (one call per run of adjacent leaves). Before TDH.MR.FINALIZE KVM still BLOCKs
    /// (`tdx_sept_zap_private_spte` has no state check) and skips only the TRACK
    /// (`tdx_track` returns early unless the TD is RUNNABLE: "If TD isn't finalized, it's
    /// before any vcpu running"), Linux 6.16 `arch/x86/kvm/vmx/tdx.c`.
    pub(crate) fn tdx_sept_remove_private_spte(
        &self,
        gfn: u64,
        level: u8,
        pfn: u64,
    ) -> Result<(), KvmBug> {
        let gpa = Self::gfn_gpa(gfn);
        let _s =
            tracing::debug_span!(target: "kvm", "tdx_sept_remove_private_spte", gpa = %gpa, level = %crate::trace::PageSize(level as u64))
                .entered();
        self.tdx_sept_zap_private_spte(gfn, level)?;
        self.tdx_track()?;
        self.tdx_sept_drop_private_spte(gfn, level, pfn)?;
        tracing::trace!(target: "kvm", hpa = pfn, "TDH.PHYMEM.PAGE.WBINVD + tdx_clear_page");
        self.tdx_module()?
            .tdx_clear_page(pfn, shared_abi::sept::level_pages(level));
        Ok(())
    }

    /// Beyond upstream (`--tdx-remove batched`): BLOCK every leaf of the zap, then one TRACK
    /// and one kick for all of them, then every REMOVE. The module's rule is the same —
    /// REMOVE needs its BLOCK tracked and every vCPU out of the older epoch — so one TRACK
    /// covers all the BLOCKs before it.
    pub(crate) fn tdx_sept_remove_private_sptes_batched(
        &self,
        leaves: &[(u64, u8, u64)],
    ) -> Result<(), KvmBug> {
        let _s = tracing::debug_span!(target: "kvm", "tdx_sept_remove_private_sptes_batched", leaves = leaves.len())
            .entered();
        // As one leaf at a time: BLOCK whatever the op-state, TRACK only once finalized.
        for &(gfn, level, _) in leaves {
            self.tdx_sept_zap_private_spte(gfn, level)?;
        }
        self.tdx_track()?;
        for &(gfn, level, pfn) in leaves {
            self.tdx_sept_drop_private_spte(gfn, level, pfn)?;
        }
        // The frames go back to the host per run of adjacent frames (one hole each on KVM).
        let tdx = self.tdx_module()?;
        let mut run: Option<(u64, u64)> = None;
        for &(_, level, pfn) in leaves {
            let n = shared_abi::sept::level_pages(level);
            run = match run {
                Some((s, len)) if s + len == pfn => Some((s, len + n)),
                Some((s, len)) => {
                    tdx.tdx_clear_pages_released(s, len);
                    Some((pfn, n))
                }
                None => Some((pfn, n)),
            };
        }
        if let Some((s, len)) = run {
            tdx.tdx_clear_pages_released(s, len);
        }
        Ok(())
    }

    /// `tdx_sept_zap_private_spte`: TDH.MEM.RANGE.BLOCK (the module stops new translations
    /// and unmaps the frame for the CPU).
    fn tdx_sept_zap_private_spte(&self, gfn: u64, level: u8) -> Result<(), KvmBug> {
        let tdx = self.tdx_module()?;
        let gpa = Self::gfn_gpa(gfn);
        self.tdh_do_no_vcpus("TDH.MEM.RANGE.BLOCK", || {
            tdx.tdh_mem_range_block(gpa, level)
        })
    }

    /// `tdx_sept_drop_private_spte`: TDH.MEM.PAGE.REMOVE, checking the frame it returns (the
    /// caller then clears it: TDH.PHYMEM.PAGE.WBINVD and `tdx_clear_page`).
    fn tdx_sept_drop_private_spte(&self, gfn: u64, level: u8, pfn: u64) -> Result<(), KvmBug> {
        let tdx = self.tdx_module()?;
        let gpa = Self::gfn_gpa(gfn);
        let hpa = self.tdh_do_no_vcpus("TDH.MEM.PAGE.REMOVE", || {
            tdx.tdh_mem_page_remove(gpa, level)
        })?;
        if hpa != pfn {
            return Err(self.bug(KvmBug::RemovedWrongFrame {
                gpa,
                got: hpa,
                want: pfn,
            }));
        }
        Ok(())
    }

    /// Split a private huge leaf before a partial zap: BLOCK → TRACK → kick → DEMOTE
    /// (the boundary split of the huge-page RFC, so no GFN outside the range loses its page).
    pub(crate) fn tdx_sept_split_private_spte(&self, gfn: u64, level: u8) -> Result<(), KvmBug> {
        let tdx = self.tdx_module()?;
        let gpa = Self::gfn_gpa(gfn);
        let _s =
            tracing::debug_span!(target: "kvm", "tdx_sept_split_private_spte", gpa = %gpa, level = %crate::trace::PageSize(level as u64))
                .entered();
        if tdx.op_state() == OpState::Runnable {
            self.tdh_do_no_vcpus("TDH.MEM.RANGE.BLOCK", || {
                tdx.tdh_mem_range_block(gpa, level)
            })?;
            self.tdx_track()?;
        }
        self.tdh_do_no_vcpus("TDH.MEM.PAGE.DEMOTE", || {
            tdx.tdh_mem_page_demote(gpa, level)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{num_present_cpus, tdx_vm_init_max_vcpus};

    /// KVM 6.16's TD_PARAMS.MAX_VCPUS is the host's present CPUs, up to KVM_MAX_VCPUS.
    #[test]
    fn max_vcpus_is_the_hosts_present_cpus() {
        assert_eq!(tdx_vm_init_max_vcpus("0-1\n"), 2);
        assert_eq!(tdx_vm_init_max_vcpus("0-3,8,10-11"), 7);
        assert_eq!(tdx_vm_init_max_vcpus("0-8191"), 1024);
        assert_eq!(num_present_cpus(""), 1);
        assert_eq!(num_present_cpus("3-1"), 1, "a list the kernel never writes");
    }

    use super::*;
    use crate::kvm::{Alias, Backend, BackendError, KvmConfig};
    use crate::seam::{SimPrivateMem, TdParams};
    use shared_abi::Gpaw;
    use std::cell::Cell;
    use std::sync::{Arc, Mutex};

    /// Records hold / kick / release in order.
    #[derive(Default)]
    struct Rec(Mutex<Vec<&'static str>>);
    impl Backend for Rec {
        fn set_accessible(&self, _: Alias, _: u64, _: u64, _: bool) -> Result<(), BackendError> {
            Ok(())
        }
        fn discard(&self, _: Alias, _: u64, _: u64) -> Result<(), BackendError> {
            Ok(())
        }
        fn kick_all_vcpus(&self, _: bool) {
            self.0.lock().unwrap().push("kick");
        }
        fn shared_pfn(&self, gfn: u64) -> u64 {
            gfn
        }
        fn hold_vcpus_out(&self, hold: bool) {
            self.0
                .lock()
                .unwrap()
                .push(if hold { "hold" } else { "release" });
        }
    }

    fn kvm(rec: Arc<Rec>) -> Kvm {
        let p = TdParams {
            gpaw: Gpaw::GPAW_48,
            attributes: 0,
            num_vcpus: 1,
            max_vcpus: 1,
        };
        let m = TdxModule::runnable(p, Arc::new(SimPrivateMem::new(16)));
        Kvm::new(KvmConfig::td(16, Gpaw::GPAW_48), Some(m), rec)
    }

    #[test]
    fn operand_busy_holds_the_vcpus_out_kicks_and_retries_once() {
        let rec = Arc::new(Rec::default());
        let k = kvm(rec.clone());
        let calls = Cell::new(0);
        let r = k.tdh_do_no_vcpus("TEST", || {
            calls.set(calls.get() + 1);
            if calls.get() == 1 {
                Err(TdxStatus::OPERAND_BUSY)
            } else {
                Ok(7)
            }
        });
        assert_eq!(r, Ok(7));
        assert_eq!(calls.get(), 2);
        assert_eq!(*rec.0.lock().unwrap(), ["hold", "kick", "release"]);
    }

    /// Before TDH.MR.FINALIZE, removing a PAGE.ADDed page still BLOCKs it; only the TRACK
    /// (and its kick) is skipped.
    #[test]
    fn before_finalize_removal_blocks_but_does_not_track() {
        let p = TdParams {
            gpaw: Gpaw::GPAW_48,
            attributes: 0,
            num_vcpus: 1,
            max_vcpus: 1,
        };
        let m = Arc::new(TdxModule::new(p, Arc::new(SimPrivateMem::new(16))));
        let gpa = Gpa(0x1000);
        for l in [3, 2, 1] {
            m.tdh_mem_sept_add(gpa, l).unwrap();
        }
        m.tdh_mem_page_add(gpa, 3).unwrap();
        let rec = Arc::new(Rec::default());
        let k = Kvm::new(
            KvmConfig::td(16, Gpaw::GPAW_48),
            Some(m.clone()),
            rec.clone(),
        );
        k.tdx_sept_remove_private_spte(1, 0, 3).unwrap();
        assert_eq!(m.stats.block.load(Relaxed), 1, "BLOCKed");
        assert_eq!(m.stats.track.load(Relaxed), 0, "not tracked");
        assert_eq!(m.stats.remove.load(Relaxed), 1);
        assert!(rec.0.lock().unwrap().is_empty(), "no kick");
        assert_eq!(
            m.entry_state(gpa, 0),
            Some(shared_abi::sept::SeptState::Free)
        );
    }

    #[test]
    fn epoch_busy_and_already_blocked_are_kvm_bugs_without_a_retry() {
        for status in [
            TdxStatus::PREVIOUS_TLB_EPOCH_BUSY,
            TdxStatus::GPA_RANGE_ALREADY_BLOCKED,
        ] {
            let rec = Arc::new(Rec::default());
            let k = kvm(rec.clone());
            let calls = Cell::new(0);
            let r: Result<(), _> = k.tdh_do_no_vcpus("TEST", || {
                calls.set(calls.get() + 1);
                Err(status)
            });
            assert!(
                matches!(r, Err(KvmBug::Seamcall { retried: false, .. })),
                "{r:?}"
            );
            assert_eq!(calls.get(), 1);
            assert!(rec.0.lock().unwrap().is_empty());
            assert!(k.is_bugged());
        }
    }
}
