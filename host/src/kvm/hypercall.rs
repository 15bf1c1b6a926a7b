//! The TDVMCALLs KVM serves or checks itself before userspace sees them (Linux 6.16
//! `arch/x86/kvm/vmx/tdx.c`): KVM hypercalls (R10 ≠ 0, `arch/x86/kvm/x86.c`), Instruction.CPUID,
//! GetTdVmCallInfo, and the operand checks of #VE.RequestMMIO, GetQuote and
//! SetupEventNotifyInterrupt.

use super::{Kvm, VmmExits};
use shared_abi::convert::{ConversionTarget, MapGpaRangeArgs, KVM_MAP_GPA_RANGE_ENCRYPTED};
use shared_abi::vmcall::GET_TDVMCALL_INFO_LEAF_BASE;
use shared_abi::{Gpa, VmcallStatus, PAGE_SIZE};
use tdcall::Regs;

/// `KVM_ENOSYS` (include/uapi/linux/kvm_para.h): a hypercall KVM does not implement.
pub const KVM_ENOSYS: u64 = 1000;
/// `KVM_EFAULT` (= EFAULT): KVM could not write the guest's buffer.
pub const KVM_EFAULT: u64 = 14;
/// `KVM_EINVAL` (= EINVAL): a malformed argument.
pub const KVM_EINVAL: u64 = 22;
/// `KVM_EOPNOTSUPP`: the operation is not available on this host or for this argument.
pub const KVM_EOPNOTSUPP: u64 = 95;
/// `KVM_HC_VAPIC_POLL_IRQ`: KVM answers 0.
pub const KVM_HC_VAPIC_POLL_IRQ: u64 = 1;
/// `KVM_HC_KICK_CPU`.
pub const KVM_HC_KICK_CPU: u64 = 5;
/// `KVM_HC_CLOCK_PAIRING`.
pub const KVM_HC_CLOCK_PAIRING: u64 = 9;
/// `KVM_HC_SEND_IPI`.
pub const KVM_HC_SEND_IPI: u64 = 10;
/// `KVM_HC_SCHED_YIELD`.
pub const KVM_HC_SCHED_YIELD: u64 = 11;
/// `KVM_HC_MAP_GPA_RANGE`: forwarded to userspace, which QEMU enables for a TD
/// (`kvm_enable_hypercall(BIT_ULL(KVM_HC_MAP_GPA_RANGE))` in `tdx_handle_reset`).
pub const KVM_HC_MAP_GPA_RANGE: u64 = 12;

/// `KVM_CLOCK_PAIRING_WALLCLOCK`, the only clock type KVM pairs.
const KVM_CLOCK_PAIRING_WALLCLOCK: u64 = 0;
/// `APIC_DEST_MASK | APIC_SHORT_MASK` (arch/x86/include/asm/apicdef.h): logical destination
/// mode and the shorthands, which a PV IPI may not use.
const PV_IPI_BAD_ICR: u64 = 0x800 | 0xc_0000;
/// The ICR's delivery-mode field (`APIC_MODE_MASK`) and its values.
const APIC_MODE_MASK: u64 = 0x700;
const APIC_DM_INIT: u64 = 0x500;
const APIC_DM_EXTINT: u64 = 0x700;
const APIC_DM_REMRD: u64 = 0x300;
/// `APIC_INT_ASSERT` and `APIC_INT_LEVELTRIG`.
const APIC_INT_ASSERT: u64 = 0x4000;
const APIC_INT_LEVELTRIG: u64 = 0x8000;

/// `struct kvm_clock_pairing`: sec, nsec, tsc, flags, pad[9] (64 bytes).
fn clock_pairing_bytes(sec: i64, nsec: i64, tsc: u64) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[0..8].copy_from_slice(&sec.to_le_bytes());
    b[8..16].copy_from_slice(&nsec.to_le_bytes());
    b[16..24].copy_from_slice(&tsc.to_le_bytes());
    b
}

/// The host's time stamp counter: what `kvm_get_walltime_and_clockread` pairs the wall clock
/// with.
fn host_tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC has no memory effects; every x86-64 CPU has it.
        #[allow(unused_unsafe)]
        unsafe {
            core::arch::x86_64::_rdtsc()
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// Did `kvm_apic_set_irq` (`__apic_accept_irq`) accept an IPI of this ICR: 1 or 0. INIT
/// counts only when asserted or edge-triggered; ExtINT and remote read are refused; the
/// other modes (fixed, lowest priority, SMI, NMI, SIPI) are accepted by an enabled APIC.
fn apic_accepts(icr: u64) -> u64 {
    match icr & APIC_MODE_MASK {
        APIC_DM_INIT => {
            let (level, trig) = (icr & APIC_INT_ASSERT != 0, icr & APIC_INT_LEVELTRIG != 0);
            u64::from(!trig || level)
        }
        APIC_DM_EXTINT | APIC_DM_REMRD => 0,
        _ => 1,
    }
}

impl Kvm {
    /// A KVM hypercall through TDVMCALL (R10 = the number, R11–R14 the arguments):
    /// `tdx_emulate_vmcall` → `____kvm_emulate_hypercall` (Linux 6.16 `arch/x86/kvm/x86.c`),
    /// the result in R10 (`complete_hypercall_exit`). A TD's hypercall is 64-bit and at CPL 0
    /// as far as KVM knows. KVM's `guest_pv_has` lets every PV feature through unless
    /// userspace enforces the PV CPUID, which QEMU does not.
    pub(super) fn kvm_emulate_hypercall(&self, vcpu: u32, regs: &mut Regs, vmm: &dyn VmmExits) {
        let [a0, a1, a2, a3] = [regs.r11, regs.r12, regs.r13, regs.r14];
        regs.r10 = match regs.r10 {
            // Polling and yielding are answers only; a kick wakes a halted vCPU, and the
            // emulated TD's halted vCPUs wait for the TD to stop (TDVMCALL<HLT>).
            KVM_HC_VAPIC_POLL_IRQ | KVM_HC_KICK_CPU | KVM_HC_SCHED_YIELD => 0,
            KVM_HC_CLOCK_PAIRING => self.kvm_pv_clock_pairing(a0, a1, vmm),
            KVM_HC_SEND_IPI => self.kvm_pv_send_ipi(a0, a1, a2 as u32, a3),
            KVM_HC_MAP_GPA_RANGE => self.kvm_hc_map_gpa_range(vcpu, a0, a1, a2, vmm),
            _ => KVM_ENOSYS.wrapping_neg(),
        };
    }

    /// `kvm_pv_clock_pairing`: wall clock paired with the TSC, written to `paddr` with
    /// `kvm_write_guest` — through the memslot, which for a TD is the shared backing at the
    /// GPA *without* the shared bit; a GPA with it has no memslot (-KVM_EFAULT). The emulated
    /// host is a TSC-clocksource host (`kvm_get_walltime_and_clockread` succeeds), as a TDX
    /// host is.
    fn kvm_pv_clock_pairing(&self, paddr: u64, clock_type: u64, vmm: &dyn VmmExits) -> u64 {
        if clock_type != KVM_CLOCK_PAIRING_WALLCLOCK {
            return KVM_EOPNOTSUPP.wrapping_neg();
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let bytes =
            clock_pairing_bytes(now.as_secs() as i64, now.subsec_nanos() as i64, host_tsc());
        let gpa = Gpa(paddr);
        if self.cfg.gpaw.is_shared(gpa) || !vmm.kvm_write_guest(gpa, &bytes) {
            return KVM_EFAULT.wrapping_neg();
        }
        0
    }

    /// `kvm_pv_send_ipi`: physical-destination IPIs to the APIC IDs `min + i` for the bits
    /// `i` of two 64-bit bitmaps (the second starting at `min + 64`); the answer is the
    /// number of IPIs the target APICs accepted. A TD's vCPUs have the x2APIC IDs 0..n
    /// (QEMU's default topology). tdxlab delivers no interrupts (no in-kernel irqchip): the
    /// count is KVM's, the interrupt is never taken.
    fn kvm_pv_send_ipi(&self, low: u64, high: u64, min: u32, icr: u64) -> u64 {
        if icr & PV_IPI_BAD_ICR != 0 {
            return KVM_EINVAL.wrapping_neg();
        }
        let vcpus = self.tdx.as_ref().map_or(0, |t| t.params().num_vcpus);
        // `__pv_send_ipi`: bits past the highest APIC ID are not looked at.
        let sent = |bitmap: u64, min: u32| -> u64 {
            (0..64u32)
                .filter(|i| bitmap & (1 << i) != 0)
                .filter(|i| (min as u64 + *i as u64) < vcpus as u64)
                .map(|_| apic_accepts(icr))
                .sum()
        };
        sent(low, min) + sent(high, min.wrapping_add(64))
    }

    /// KVM_HC_MAP_GPA_RANGE: KVM checks the GPA's alignment, a non-zero count and no wrap
    /// (-KVM_EINVAL), then exits to userspace; QEMU's `kvm_handle_hc_map_gpa_range`
    /// (`target/i386/kvm/kvm.c`) converts `npages` 4 KiB pages, ignoring the page-size
    /// field, private if attribute bit 4 (ENCRYPTED) is set. Unlike TDVMCALL<MapGPA> the
    /// GPA goes to QEMU as the guest gave it, shared bit and all. A conversion QEMU fails
    /// makes `kvm_arch_handle_exit` return an error, which stops the VM
    /// (RUN_STATE_INTERNAL_ERROR): the guest gets no answer.
    fn kvm_hc_map_gpa_range(
        &self,
        vcpu: u32,
        gpa: u64,
        npages: u64,
        attrs: u64,
        vmm: &dyn VmmExits,
    ) -> u64 {
        let gfn = gpa >> 12;
        if !gpa.is_multiple_of(PAGE_SIZE) || npages == 0 || gfn.checked_add(npages).is_none() {
            return KVM_EINVAL.wrapping_neg();
        }
        let to = if attrs & KVM_MAP_GPA_RANGE_ENCRYPTED != 0 {
            ConversionTarget::Private
        } else {
            ConversionTarget::Shared
        };
        let args = MapGpaRangeArgs {
            gpa: Gpa(gpa),
            npages,
            page_size: shared_abi::PageLevel::Size4K,
            to,
        };
        if let Err(e) = vmm.hc_map_gpa_range(vcpu, args) {
            vmm.kvm_internal_error(
                vcpu,
                &format!("KVM_EXIT_HYPERCALL(KVM_HC_MAP_GPA_RANGE): {e}"),
            );
        }
        0
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
