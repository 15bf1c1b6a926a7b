//! A booted Linux kernel's TDCALLs: each patched site (`linux::tdcall_sites`) exits as an OUT
//! to the patch port, with every TDCALL register where Linux put it (RDX included); the host
//! serves it as the TDX module would and resumes the guest after the four patched bytes.
//! TDVMCALL<Instruction.HLT> is served here, where the vCPU's local APIC can be read.

use super::ctx::{Ctx, VcpuError};
use super::vcpu::{put_tdcall_regs, serve_tdcall, tdcall_regs};
use super::ve::inject_out_ve;
use crate::linux::tdcall_sites::PATCH_PORT;
use crate::vmm::handle_tdcall;
use kvm_ioctls::VcpuFd;
use shared_abi::vmcall::Subfunction;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

/// How often a halted vCPU's local APIC is looked at.
const HALT_POLL: Duration = Duration::from_micros(200);
/// The longest a TDVMCALL<HLT> waits before returning anyway. Linux's idle loop halts again
/// at once if nothing is pending, so an early return costs only a round trip; it bounds the
/// wait on a local-APIC timer mode the host does not compute (one-shot, periodic).
const HALT_MAX: Duration = Duration::from_millis(10);
/// IA32_TSC and IA32_TSC_DEADLINE.
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_TSC_DEADLINE: u32 = 0x6E0;
/// The local APIC's IRR: eight 32-bit registers from offset 0x200, 16 bytes apart.
const APIC_IRR: usize = 0x200;

/// An OUT to the patch port: a patched TDCALL when RIP is at one of the sites; anything else
/// is raw port I/O, a #VE like every other.
pub(super) fn patched_tdcall(index: u32, vcpu: &VcpuFd, ctx: &Ctx) -> Result<(), VcpuError> {
    let mut k = vcpu
        .get_regs()
        .map_err(VcpuError::ioctl(index, "KVM_GET_REGS"))?;
    if !ctx.linux.is_patched_out(k.rip) {
        return inject_out_ve(index, vcpu, ctx, u16::from(PATCH_PORT), 1);
    }
    let mut r = tdcall_regs(&k, k.rdx);
    let halt = r.rax == 0 && r.r10 == 0 && r.r11 == Subfunction::Hlt.number();
    serve_tdcall(index, ctx, &mut r, k.rip, |r| {
        if halt {
            wait_for_interrupt(vcpu, ctx);
            r.r10 = 0;
            Ok(())
        } else {
            handle_tdcall(ctx.seam, ctx.vmm, index, r)
        }
    })?;
    k.rdx = put_tdcall_regs(&mut k, &r);
    vcpu.set_regs(&k)
        .map_err(VcpuError::ioctl(index, "KVM_SET_REGS"))
}

/// TDVMCALL<Instruction.HLT>: KVM blocks a TD's vCPU until it has an interrupt pending —
/// even when the guest's interrupts are disabled (R12 bit 0; Linux 6.12's idle,
/// `tdx_halt`, always halts that way), because the TDX module delivers it once the guest
/// enables them (Linux 6.16 `tdx_emulate_halt`, `tdx_protected_apic_has_interrupt`). A
/// normal VM's halted state never wakes with IF=0 (`kvm_arch_interrupt_allowed`), so the
/// host waits itself: until the local APIC's IRR has a bit set (an IPI, a device), the
/// vCPU's TSC deadline passes (KVM raises the timer interrupt at the next entry), the TD
/// stops, or [`HALT_MAX`] elapses.
fn wait_for_interrupt(vcpu: &VcpuFd, ctx: &Ctx) {
    let stop = &ctx.vmm.io.as_ref().expect("machine VMMs have I/O").stop;
    let start = Instant::now();
    while !stop.load(SeqCst) && start.elapsed() < HALT_MAX {
        if irr_pending(vcpu) || deadline_passed(vcpu) {
            return;
        }
        std::thread::sleep(HALT_POLL);
    }
}

/// Whether the local APIC has an interrupt requested (KVM_GET_LAPIC syncs posted ones).
fn irr_pending(vcpu: &VcpuFd) -> bool {
    let Ok(lapic) = vcpu.get_lapic() else {
        return true; // cannot tell: let the guest look for itself
    };
    (0..8).any(|i| {
        let at = APIC_IRR + 0x10 * i;
        lapic.regs[at..at + 4].iter().any(|b| *b != 0)
    })
}

/// Whether the TSC-deadline timer is armed and its deadline has passed.
fn deadline_passed(vcpu: &VcpuFd) -> bool {
    let entries = [MSR_IA32_TSC, MSR_IA32_TSC_DEADLINE].map(|index| kvm_bindings::kvm_msr_entry {
        index,
        ..Default::default()
    });
    let Ok(mut msrs) = kvm_bindings::Msrs::from_entries(&entries) else {
        return true;
    };
    match vcpu.get_msrs(&mut msrs) {
        Ok(2) => {
            let [tsc, deadline] = [msrs.as_slice()[0].data, msrs.as_slice()[1].data];
            deadline != 0 && tsc >= deadline
        }
        _ => true,
    }
}
