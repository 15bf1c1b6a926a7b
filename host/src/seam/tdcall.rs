//! The guest-facing side of the module: TDCALL dispatch (`tdx_td_dispatcher`).

use super::sept::{CasError, EntryRef};
use super::{SeptEntry, TdxModule, Walk};
use shared_abi::sept::{SeptLevel, SeptState};
use shared_abi::status::operand;
use shared_abi::tdcall::{decode_gpa_level, decode_rax, TdcallLeaf};
use shared_abi::vmcall::select;
use shared_abi::{Gpa, TdxStatus};
use std::sync::atomic::Ordering::Relaxed;
use tdcall::Regs;

/// How a TDCALL left the module.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TdcallExit {
    /// Completed: RAX holds the status, outputs are in place, RIP advances.
    Done,
    /// TDG.VP.VMCALL: a TD exit to the host with the selected registers. The host answers in
    /// the view it was given, then calls [`TdxModule::tdg_vp_vmcall_complete`].
    Vmcall,
    /// An EPT violation of type ACCEPT: the host must map (AUG) or unblock `gpa`; RIP stays on
    /// the TDCALL so it re-executes.
    EptViolation {
        /// Private GPA.
        gpa: Gpa,
        /// The level ACCEPT asked for.
        level: SeptLevel,
    },
}

/// The exception a #VE conversion injects.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum VeInjection {
    /// #VE (vector 20), VE_INFO filled.
    Ve,
    /// #DF (vector 8, error code 0): VE_INFO was still valid and is kept.
    DoubleFault,
}

impl VeInjection {
    /// The vector and the error code, if the exception has one.
    pub fn vector_and_error_code(self) -> (u8, Option<u32>) {
        match self {
            VeInjection::Ve => (shared_abi::ve::X86_TRAP_VE, None),
            VeInjection::DoubleFault => (8, Some(0)),
        }
    }
}

impl TdxModule {
    /// Execute one TDCALL for `vcpu` on `regs` (RAX = leaf).
    pub fn tdcall(&self, vcpu: u32, regs: &mut Regs) -> TdcallExit {
        let fail = |regs: &mut Regs, s: TdxStatus| {
            regs.rax = s.0;
            TdcallExit::Done
        };
        let Some((leaf, version)) = decode_rax(regs.rax) else {
            return fail(regs, TdxStatus::OPERAND_INVALID.with_details(operand::RAX));
        };
        // Only TDG.VM.RD has versions beyond 0 (`tdx_td_dispatcher`); it checks its own.
        let leaf = TdcallLeaf::from_number(leaf);
        if version != 0 && leaf != Some(TdcallLeaf::VmRd) {
            return fail(regs, TdxStatus::OPERAND_INVALID.with_details(operand::RAX));
        }
        match leaf {
            Some(TdcallLeaf::VpInfo) => {
                self.tdg_vp_info(vcpu, regs);
                TdcallExit::Done
            }
            Some(TdcallLeaf::SysRd) => {
                self.tdg_sys_rd(regs);
                TdcallExit::Done
            }
            Some(TdcallLeaf::VpVeinfoGet) => {
                self.tdg_vp_veinfo_get(vcpu, regs);
                TdcallExit::Done
            }
            Some(TdcallLeaf::VmRd) => {
                self.tdg_vm_rd(vcpu, regs, version);
                TdcallExit::Done
            }
            Some(TdcallLeaf::VmWr) => {
                self.tdg_vm_wr(regs);
                TdcallExit::Done
            }
            Some(TdcallLeaf::VpRd) => {
                self.tdg_vp_rd(vcpu, regs);
                TdcallExit::Done
            }
            Some(TdcallLeaf::VpWr) => {
                self.tdg_vp_wr(vcpu, regs);
                TdcallExit::Done
            }
            Some(TdcallLeaf::VpCpuidveSet) => {
                self.tdg_vp_cpuidve_set(vcpu, regs);
                TdcallExit::Done
            }
            Some(TdcallLeaf::MemPageAccept) => self.tdg_mem_page_accept(regs),
            Some(TdcallLeaf::VpVmcall) => self.tdg_vp_vmcall(regs),
            // Leaves the emulated module does not implement (reports, RTMRs, TD partitioning):
            // refused the way the module refuses an unknown leaf.
            _ => fail(regs, TdxStatus::OPERAND_INVALID.with_details(operand::RAX)),
        }
    }

    /// TDG.VP.INFO (`tdg_vp_info`): NUM_VCPUS from the TDCS, MAX_VCPUS from TD_PARAMS, and
    /// R10 bit 0 set: module 1.5 always offers TDG.SYS.RD.
    fn tdg_vp_info(&self, vcpu: u32, regs: &mut Regs) {
        let p = self.params();
        let info = shared_abi::td::VpInfo {
            gpaw: p.gpaw,
            attributes: p.attributes,
            num_vcpus: p.num_vcpus,
            max_vcpus: p.max_vcpus,
            vcpu_index: vcpu,
            sys_rd_available: true,
        };
        set_outputs(regs, info.encode());
        regs.r11 = 0;
    }

    /// TDG.VP.VEINFO.GET (`tdg_vp_veinfo_get`): read and clear this vCPU's #VE info. The
    /// outputs are zeroed first, so with nothing pending the guest reads zeros beside
    /// NO_VALID_VE_INFO, as the module leaves them.
    fn tdg_vp_veinfo_get(&self, vcpu: u32, regs: &mut Regs) {
        let taken = self
            .lock()
            .ve_info
            .get_mut(vcpu as usize)
            .and_then(Option::take);
        match taken {
            None => {
                set_outputs(regs, (0, 0, 0, 0, 0));
                regs.rax = TdxStatus::NO_VALID_VE_INFO.0;
            }
            Some(ve) => set_outputs(regs, ve.encode()),
        }
    }

    /// A #VE conversion for `vcpu` (module 1.5 `tdx_inject_ve`, `td_other_exits.c`): with
    /// VE_INFO free, fill it and inject #VE; with VE_INFO still valid (the guest has not read
    /// it with TDG.VP.VEINFO.GET), inject #DF with error code 0 and leave VE_INFO as it was.
    /// (The comment above that code says #GP(0); the code calls `inject_df`.) The host's
    /// emulated CPU raises the returned exception.
    pub fn tdx_inject_ve(&self, vcpu: u32, ve: shared_abi::ve::VeInfo) -> VeInjection {
        let mut g = self.lock();
        match g.ve_info.get_mut(vcpu as usize) {
            Some(slot @ None) => {
                *slot = Some(ve);
                VeInjection::Ve
            }
            Some(Some(_)) => VeInjection::DoubleFault,
            // No such vCPU: nothing to inject into.
            None => VeInjection::Ve,
        }
    }

    /// TDG.MEM.PAGE.ACCEPT (`tdg_mem_page_accept`).
    fn tdg_mem_page_accept(&self, regs: &mut Regs) -> TdcallExit {
        let invalid = TdxStatus::OPERAND_INVALID.with_details(operand::RCX);
        let gpaw = self.params().gpaw;
        let (gpa, level) = match decode_gpa_level(regs.rcx) {
            Some((g, l))
                if l <= 1
                    && gpaw.is_valid(g)
                    && !gpaw.is_shared(g)
                    && g.0 & (shared_abi::sept::level_bytes(l) - 1) == 0 =>
            {
                (g, l)
            }
            _ => {
                regs.rax = invalid.0;
                return TdcallExit::Done;
            }
        };
        let tree = self.tree();
        let status = loop {
            break match tree.walk(gpa, level) {
                Walk::Leaf { entry, level: at } if at > level => match entry.state {
                    SeptState::Mapped => TdxStatus::PAGE_ALREADY_ACCEPTED.with_details(at as u32),
                    // A pending or blocked leaf larger than asked: the host must split it.
                    _ => return TdcallExit::EptViolation { gpa, level },
                },
                Walk::Leaf { entry, .. } => match entry.state {
                    // Injected contention on the S-EPT entry (the module's guest-exclusive
                    // entry lock, taken by cmpxchg: OPERAND_BUSY naming RCX, as
                    // `tdg_mem_page_accept` does), rolled once per accept that would succeed
                    // (not per re-execution after an EPT-violation exit, which would compound
                    // the probability): the guest retries the same call.
                    SeptState::Pending
                        if self.inject_accept_busy.as_ref().is_some_and(|c| c.hit()) =>
                    {
                        self.stats.accept_busy_injected.fetch_add(1, Relaxed);
                        TdxStatus::OPERAND_BUSY.with_details(operand::RCX)
                    }
                    SeptState::Pending => {
                        let slot = tree.slot(gpa, level);
                        match slot.lock(entry) {
                            Ok(()) => self.accept_locked(slot, gpa, level, entry),
                            Err(CasError::Changed) => continue,
                            Err(CasError::Locked) => {
                                TdxStatus::OPERAND_BUSY.with_details(operand::RCX)
                            }
                        }
                    }
                    SeptState::Mapped => {
                        TdxStatus::PAGE_ALREADY_ACCEPTED.with_details(level as u32)
                    }
                    _ => return Self::accept_ept_violation(gpa, level),
                },
                Walk::NonLeaf { .. } => {
                    self.stats.accept_size_mismatch.fetch_add(1, Relaxed);
                    TdxStatus::PAGE_SIZE_MISMATCH.with_details(level as u32)
                }
                Walk::Free { .. } => return Self::accept_ept_violation(gpa, level),
            };
        };
        regs.rax = status.0;
        TdcallExit::Done
    }

    /// The rest of an ACCEPT whose PENDING entry it holds locked: the page is zeroed and made
    /// reachable before the entry turns MAPPED and unlocks, so a removal racing with this
    /// accept finds the page either PENDING and locked (BLOCK waits for it) or MAPPED and
    /// reachable.
    fn accept_locked(
        &self,
        slot: EntryRef<'_>,
        gpa: Gpa,
        level: SeptLevel,
        entry: SeptEntry,
    ) -> TdxStatus {
        let pages = shared_abi::sept::level_pages(level);
        self.mem().zero(entry.hpa, pages);
        self.map_for_cpu(gpa, entry.hpa, pages);
        let mapped = SeptEntry {
            state: SeptState::Mapped,
            ..entry
        };
        slot.store(mapped);
        self.stats.accepted_4k.fetch_add(pages, Relaxed);
        tracing::trace!(target: "seam", gpa = %gpa, level = %crate::trace::PageSize(level as u64), "TDG.MEM.PAGE.ACCEPT");
        TdxStatus::SUCCESS
    }

    /// The ACCEPT cannot complete on this entry: the TD exits to KVM with an EPT violation
    /// (`tdaccept_ept_violation_exit`), to re-execute the ACCEPT afterwards.
    fn accept_ept_violation(gpa: Gpa, level: u8) -> TdcallExit {
        tracing::trace!(target: "seam", gpa = %gpa, level = %crate::trace::PageSize(level as u64), "TDG.MEM.PAGE.ACCEPT -> EPT violation");
        TdcallExit::EptViolation { gpa, level }
    }

    /// TDG.VP.VMCALL (`tdg_vp_vmcall`): validate the select mask and exit to the host.
    fn tdg_vp_vmcall(&self, regs: &mut Regs) -> TdcallExit {
        if regs.rcx & (select::FORBIDDEN | select::RESERVED) != 0 {
            regs.rax = TdxStatus::OPERAND_INVALID.with_details(operand::RCX).0;
            return TdcallExit::Done;
        }
        TdcallExit::Vmcall
    }

    /// What the host sees of a TDG.VP.VMCALL: the selected GPRs, the others as 0.
    pub fn tdg_vp_vmcall_host_view(guest: &Regs) -> Regs {
        let mask = guest.rcx;
        let pick = |n: u32, v: u64| if mask & (1 << n) != 0 { v } else { 0 };
        Regs {
            rax: 0,
            rcx: mask,
            rdx: pick(2, guest.rdx),
            rbx: pick(3, guest.rbx),
            rsi: pick(6, guest.rsi),
            rdi: pick(7, guest.rdi),
            r8: pick(8, guest.r8),
            r9: pick(9, guest.r9),
            r10: pick(10, guest.r10),
            r11: pick(11, guest.r11),
            r12: pick(12, guest.r12),
            r13: pick(13, guest.r13),
            r14: pick(14, guest.r14),
            r15: pick(15, guest.r15),
        }
    }

    /// Resume the guest after the host answered a VMCALL: selected GPRs take the host's
    /// values, the others keep the guest's; RAX = TDX_SUCCESS.
    pub fn tdg_vp_vmcall_complete(guest: &mut Regs, host: &Regs) {
        let mask = guest.rcx;
        let take = |n: u32, g: &mut u64, h: u64| {
            if mask & (1 << n) != 0 {
                *g = h;
            }
        };
        take(2, &mut guest.rdx, host.rdx);
        take(3, &mut guest.rbx, host.rbx);
        take(6, &mut guest.rsi, host.rsi);
        take(7, &mut guest.rdi, host.rdi);
        take(8, &mut guest.r8, host.r8);
        take(9, &mut guest.r9, host.r9);
        take(10, &mut guest.r10, host.r10);
        take(11, &mut guest.r11, host.r11);
        take(12, &mut guest.r12, host.r12);
        take(13, &mut guest.r13, host.r13);
        take(14, &mut guest.r14, host.r14);
        take(15, &mut guest.r15, host.r15);
        guest.rax = 0;
    }
}

/// Success with the (RCX, RDX, R8, R9, R10) outputs TDG.VP.INFO and VEINFO.GET both use.
fn set_outputs(regs: &mut Regs, (rcx, rdx, r8, r9, r10): (u64, u64, u64, u64, u64)) {
    *regs = Regs {
        rax: 0,
        rcx,
        rdx,
        r8,
        r9,
        r10,
        ..*regs
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_abi::tdcall::leaf_rax;
    use shared_abi::ve::{exit_reason, VeInfo};

    fn ve(exit_reason: u32) -> VeInfo {
        VeInfo {
            exit_reason,
            exit_qualification: 0,
            gla: 0,
            gpa: 0,
            instr_len: 1,
            instr_info: 0,
        }
    }

    /// Module 1.5 `tdx_inject_ve`: a second #VE before VEINFO.GET is #DF(0), and VE_INFO
    /// keeps the first one's information.
    #[test]
    fn a_ve_while_ve_info_is_valid_is_a_double_fault_and_keeps_ve_info() {
        let td = TdxModule::runnable(
            super::super::TdParams {
                gpaw: shared_abi::Gpaw::GPAW_48,
                attributes: 0,
                num_vcpus: 1,
                max_vcpus: 1,
            },
            std::sync::Arc::new(super::super::NullPrivateMem),
        );
        assert_eq!(td.tdx_inject_ve(0, ve(exit_reason::HLT)), VeInjection::Ve);
        assert_eq!(
            td.tdx_inject_ve(0, ve(exit_reason::IO)),
            VeInjection::DoubleFault
        );
        assert_eq!(
            VeInjection::DoubleFault.vector_and_error_code(),
            (8, Some(0))
        );
        let mut regs = Regs {
            rax: leaf_rax(TdcallLeaf::VpVeinfoGet, 0),
            ..Regs::default()
        };
        assert_eq!(td.tdcall(0, &mut regs), TdcallExit::Done);
        assert_eq!((regs.rax, regs.rcx as u32), (0, exit_reason::HLT));
        // Read: the next conversion is a #VE again.
        assert_eq!(td.tdx_inject_ve(0, ve(exit_reason::IO)), VeInjection::Ve);
    }
}
