//! The TDVMCALLs KVM serves or checks itself before userspace sees them (Linux 6.16
//! `arch/x86/kvm/vmx/tdx.c`): KVM hypercalls (R10 ≠ 0), Instruction.CPUID,
//! GetTdVmCallInfo, and the operand checks of #VE.RequestMMIO, GetQuote and
//! SetupEventNotifyInterrupt.

use super::{Kvm, VmmExits};
use shared_abi::vmcall::GET_TDVMCALL_INFO_LEAF_BASE;
use shared_abi::{Gpa, VmcallStatus};
use tdcall::Regs;

/// `KVM_ENOSYS` (include/uapi/linux/kvm_para.h): a hypercall KVM does not implement.
pub const KVM_ENOSYS: u64 = 1000;
/// `KVM_HC_VAPIC_POLL_IRQ`: KVM answers 0.
pub const KVM_HC_VAPIC_POLL_IRQ: u64 = 1;
/// `KVM_HC_KICK_CPU`.
pub const KVM_HC_KICK_CPU: u64 = 5;
/// `KVM_HC_SCHED_YIELD`.
pub const KVM_HC_SCHED_YIELD: u64 = 11;

impl Kvm {
    /// A KVM hypercall through TDVMCALL (R10 = the number, R11–R14 the arguments):
    /// `tdx_emulate_vmcall` → `__kvm_emulate_hypercall`, the result in R10. The emulated TD
    /// has one vCPU thread per vCPU and no paravirtual devices: polling, kicking a halted
    /// vCPU and yielding succeed as no-ops; everything else — including the PV IPI, clock
    /// pairing and MAP_GPA_RANGE numbers, whose features it does not offer — is -KVM_ENOSYS.
    pub(super) fn kvm_emulate_hypercall(&self, regs: &mut Regs) {
        regs.r10 = match regs.r10 {
            KVM_HC_VAPIC_POLL_IRQ | KVM_HC_KICK_CPU | KVM_HC_SCHED_YIELD => 0,
            _ => KVM_ENOSYS.wrapping_neg(),
        };
    }

    /// TDVMCALL<Instruction.CPUID> (`tdx_emulate_cpuid`): R12 = leaf, R13 = subleaf →
    /// R12..R15 = EAX, EBX, ECX, EDX from the vCPU's CPUID table (`kvm_cpuid`).
    pub(super) fn tdx_emulate_cpuid(&self, regs: &mut Regs) {
        let [a, b, c, d] = self.kvm_cpuid(regs.r12 as u32, regs.r13 as u32);
        (regs.r10, regs.r12, regs.r13, regs.r14, regs.r15) =
            (0, a as u64, b as u64, c as u64, d as u64);
    }

    /// TDVMCALL<GetTdVmCallInfo> (`tdx_get_td_vm_call_info`): leaf 0 is KVM's (all zero,
    /// success), leaf 1 userspace's (which optional TDVMCALLs it serves), others
    /// INVALID_OPERAND.
    pub(super) fn tdx_get_td_vm_call_info(&self, vcpu: u32, regs: &mut Regs, vmm: &dyn VmmExits) {
        match regs.r12 {
            GET_TDVMCALL_INFO_LEAF_BASE => {
                (regs.r10, regs.r11, regs.r12, regs.r13, regs.r14) = (0, 0, 0, 0, 0);
            }
            1 => {
                let [r11, r12, r13, r14] = vmm.get_tdvmcall_info_1(vcpu);
                (regs.r10, regs.r11, regs.r12, regs.r13, regs.r14) = (0, r11, r12, r13, r14);
            }
            _ => regs.r10 = VmcallStatus::INVALID_OPERAND.0,
        }
    }

    /// TDVMCALL<GetQuote> (`tdx_get_quote`): the buffer must be shared (INVALID_OPERAND
    /// otherwise); userspace gets it without the shared bit.
    pub(super) fn tdx_get_quote(&self, vcpu: u32, regs: &mut Regs, vmm: &dyn VmmExits) {
        let gpaw = self.cfg.gpaw;
        if !gpaw.is_shared(Gpa(regs.r12)) {
            return regs.r10 = VmcallStatus::INVALID_OPERAND.0;
        }
        regs.r10 = vmm
            .get_quote(vcpu, gpaw.to_private(Gpa(regs.r12)), regs.r13)
            .0;
    }

    /// TDVMCALL<SetupEventNotifyInterrupt> (`tdx_setup_event_notify_interrupt`): vectors
    /// below 32 or above 255 are INVALID_OPERAND.
    pub(super) fn tdx_setup_event_notify_interrupt(
        &self,
        vcpu: u32,
        regs: &mut Regs,
        vmm: &dyn VmmExits,
    ) {
        if !(32..=255).contains(&regs.r12) {
            return regs.r10 = VmcallStatus::INVALID_OPERAND.0;
        }
        regs.r10 = vmm.setup_event_notify_interrupt(vcpu, regs.r12 as u8).0;
    }

    /// TDVMCALL<#VE.RequestMMIO> (`tdx_emulate_mmio`): size 1/2/4/8, direction 0/1, and both
    /// ends of the access shared, else INVALID_OPERAND; the access goes to userspace without
    /// the shared bit, a read's value in R11.
    pub(super) fn tdx_emulate_mmio(&self, vcpu: u32, regs: &mut Regs, vmm: &dyn VmmExits) {
        let gpaw = self.cfg.gpaw;
        let (size, write, gpa) = (regs.r12, regs.r13, regs.r14);
        let last = Gpa(gpa.wrapping_add(size.wrapping_sub(1)));
        if !matches!(size, 1 | 2 | 4 | 8)
            || write > 1
            || !gpaw.is_shared(Gpa(gpa))
            || !gpaw.is_shared(last)
        {
            return regs.r10 = VmcallStatus::INVALID_OPERAND.0;
        }
        let value = if write == 1 { regs.r15 } else { 0 };
        let addr = gpaw.to_private(Gpa(gpa));
        match vmm.mmio(vcpu, addr, size as u8, write == 1, value) {
            Ok(v) => (regs.r10, regs.r11) = (0, if write == 1 { regs.r11 } else { v }),
            Err(s) => regs.r10 = s.0,
        }
    }
}
