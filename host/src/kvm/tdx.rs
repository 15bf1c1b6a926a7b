//! The TDX hooks: how mirror-root changes reach the TDX module (`vmx/tdx.c`).

use super::{Alias, Kvm, KvmBug};
use crate::seam::{OpState, SeamResult, TdxModule};
use shared_abi::{Gpa, TdxStatus};
use std::sync::atomic::Ordering::*;

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

    /// `tdx_sept_remove_private_spte`: BLOCK → TRACK → kick → REMOVE → WBINVD + clear, then
    /// the frame is unreachable (`tdx_sept_zap_private_spte`, `tdx_sept_drop_private_spte`).
    pub(crate) fn tdx_sept_remove_private_spte(
        &self,
        gfn: u64,
        level: u8,
        pfn: u64,
    ) -> Result<(), KvmBug> {
        let tdx = self.tdx_module()?;
        let gpa = Self::gfn_gpa(gfn);
        let _s =
            tracing::debug_span!(target: "kvm", "tdx_sept_remove_private_spte", gpa = %gpa, level)
                .entered();
        if tdx.op_state() == OpState::Runnable {
            match tdx.tdh_mem_range_block(gpa, level) {
                Ok(()) => {}
                Err(s) if s.is(TdxStatus::GPA_RANGE_ALREADY_BLOCKED) => {}
                Err(_) => self.tdh_do_no_vcpus("TDH.MEM.RANGE.BLOCK", || {
                    tdx.tdh_mem_range_block(gpa, level)
                })?,
            }
            self.tdx_track()?;
        }
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
        tracing::trace!(target: "kvm", hpa, "TDH.PHYMEM.PAGE.WBINVD + tdx_clear_page");
        tdx.tdx_clear_page(hpa, level);
        self.backend
            .set_accessible(
                Alias::Private,
                gfn,
                shared_abi::sept::level_pages(level),
                false,
            )
            .map_err(|e| self.bug(e))
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
