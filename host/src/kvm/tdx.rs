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

    /// Run a SEAMCALL; on contention kick every vCPU out and retry once (`tdh_do_no_vcpus`).
    fn tdh_do_no_vcpus<T>(
        &self,
        what: &'static str,
        f: impl Fn() -> SeamResult<T>,
    ) -> Result<T, KvmBug> {
        let busy = |s: &TdxStatus| {
            s.is(TdxStatus::OPERAND_BUSY) || s.is(TdxStatus::PREVIOUS_TLB_EPOCH_BUSY)
        };
        match f() {
            Err(s) if busy(&s) => {
                self.stats.kicks.fetch_add(1, Relaxed);
                self.backend.kick_all_vcpus(false);
                f().map_err(|status| self.seamcall_bug(what, status, true))
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
    /// (one call per run of adjacent leaves).
    pub(crate) fn tdx_sept_remove_private_spte(
        &self,
        gfn: u64,
        level: u8,
        pfn: u64,
    ) -> Result<(), KvmBug> {
        let gpa = Self::gfn_gpa(gfn);
        let _s =
            tracing::debug_span!(target: "kvm", "tdx_sept_remove_private_spte", gpa = %gpa, level)
                .entered();
        if self.tdx_module()?.op_state() == OpState::Runnable {
            self.tdx_sept_zap_private_spte(gfn, level)?;
            self.tdx_track()?;
        }
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
        if self.tdx_module()?.op_state() == OpState::Runnable {
            for &(gfn, level, _) in leaves {
                self.tdx_sept_zap_private_spte(gfn, level)?;
            }
            self.tdx_track()?;
        }
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
        match tdx.tdh_mem_range_block(gpa, level) {
            Ok(()) => Ok(()),
            Err(s) if s.is(TdxStatus::GPA_RANGE_ALREADY_BLOCKED) => Ok(()),
            Err(_) => self.tdh_do_no_vcpus("TDH.MEM.RANGE.BLOCK", || {
                tdx.tdh_mem_range_block(gpa, level)
            }),
        }
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
            tracing::debug_span!(target: "kvm", "tdx_sept_split_private_spte", gpa = %gpa, level)
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
