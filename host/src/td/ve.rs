//! #VE delivery: what the TDX module does with a TD's raw port I/O and HLT.

use super::ctx::{Ctx, VcpuError};

use kvm_ioctls::VcpuFd;
use std::sync::atomic::Ordering::*;

/// Raw port I/O in a TD is not executed: the TDX module turns it into a #VE (exit reason 30,
/// the I/O exit qualification, the instruction length) for the guest to serve through
/// TDVMCALL<Instruction.IO>. KVMs disagree on where RIP is during an OUT exit — PVM has
/// already moved past the instruction, stock KVM leaves RIP on it and skips it on the next
/// KVM_RUN (`complete_fast_pio_out`) — but after that KVM_RUN both are past it, and the
/// OUT's data went nowhere. So the #VE is delivered there, with `instr_len` 0: the guest's
/// handler does the OUT through TDVMCALL and resumes where it is. No guest instruction bytes
/// are read. (Real TDX reports the OUT's length with RIP on it; the handler is the same code
/// either way.)
pub(super) fn inject_out_ve(
    index: u32,
    vcpu: &VcpuFd,
    ctx: &Ctx,
    port: u16,
    size: u8,
) -> Result<(), VcpuError> {
    deliver_io_ve(index, vcpu, ctx, (port, size, false), 0)
}

/// A raw IN: KVM reports it with RIP still on the instruction and completes it on the next
/// KVM_RUN (writing the exit's data into AL/AX/EAX and skipping it), so the #VE can only be
/// delivered after it. Feed KVM the guest's own RAX bytes (an IN that changes nothing), and
/// inject the #VE with `instr_len` 0: the guest's handler does the IN through TDVMCALL and
/// resumes where it is. (Real TDX reports the IN's length with RIP on it; the handler is the
/// same code either way.)
pub(super) fn inject_in_ve(
    index: u32,
    vcpu: &mut VcpuFd,
    ctx: &Ctx,
    port: u16,
    size: u8,
) -> Result<(), VcpuError> {
    let rax = vcpu
        .get_regs()
        .map_err(VcpuError::ioctl(index, "KVM_GET_REGS"))?
        .rax;
    let run = vcpu.get_kvm_run();
    // SAFETY: for KVM_EXIT_IO the `io` member of the exit union is valid; its data lives at
    // data_offset inside the vCPU's kvm_run mapping, `size` bytes long.
    unsafe {
        let off = run.__bindgen_anon_1.io.data_offset as usize;
        let base = run as *mut kvm_bindings::kvm_run as *mut u8;
        std::ptr::copy_nonoverlapping(rax.to_le_bytes().as_ptr(), base.add(off), size as usize);
    }
    deliver_io_ve(index, vcpu, ctx, (port, size, true), 0)
}

/// A raw HLT: the TDX module does not let a TD halt by itself — HLT is one of the
/// instructions it converts into a #VE with exit reason 12 (module 1.5 `tdx_td_dispatcher`
/// sends VMEXIT_REASON_HLT_INSTRUCTION to `td_generic_ve_exit`; Linux serves it in
/// `handle_halt`, arch/x86/coco/tdx/tdx.c, with TDVMCALL<HLT>). The exit is fault-like: RIP
/// stays on the HLT and `tdx_inject_ve` (`td_other_exits.c`) copies the VMCS's VM-exit
/// instruction length into VE_INFO, so the handler resumes at RIP + `instr_len`.
///
/// Without an in-kernel irqchip KVM reports the HLT (`KVM_EXIT_HLT`) after
/// `kvm_emulate_halt` has skipped it (`kvm_skip_emulated_instruction`, x86.c: PVM shares that
/// code). So the host steps RIP back over it and reports length 1, HLT's one byte (0xF4).
/// No guest bytes are read: a HLT behind prefixes (which nothing emits) would be reported
/// on its last prefix, length 1; the handler still resumes right after it.
pub(super) fn inject_hlt_ve(index: u32, vcpu: &VcpuFd, ctx: &Ctx) -> Result<(), VcpuError> {
    let mut regs = vcpu
        .get_regs()
        .map_err(VcpuError::ioctl(index, "KVM_GET_REGS"))?;
    regs.rip = regs.rip.wrapping_sub(HLT_LEN);
    vcpu.set_regs(&regs)
        .map_err(VcpuError::ioctl(index, "KVM_SET_REGS"))?;
    let ve = shared_abi::ve::VeInfo {
        exit_reason: shared_abi::ve::exit_reason::HLT,
        exit_qualification: 0,
        gla: 0,
        gpa: 0,
        instr_len: HLT_LEN as u32,
        instr_info: 0,
    };
    ctx.counters.hlt_ves.fetch_add(1, Relaxed);
    deliver_ve(index, vcpu, ctx, ve)
}

/// The length of HLT (0xF4), which KVM skipped before reporting it.
const HLT_LEN: u64 = 1;

/// What the TDX module does for an instruction it refuses: fill this vCPU's VEINFO (exit
/// reason 30 with the I/O qualification and `instr_len`) and inject vector 20.
fn deliver_io_ve(
    index: u32,
    vcpu: &VcpuFd,
    ctx: &Ctx,
    (port, size, is_in): (u16, u8, bool),
    instr_len: u64,
) -> Result<(), VcpuError> {
    let ve = shared_abi::ve::VeInfo {
        exit_reason: shared_abi::ve::exit_reason::IO,
        exit_qualification: shared_abi::ve::IoQualification {
            size,
            is_in,
            is_string: false,
            port,
        }
        .encode(),
        gla: 0,
        gpa: 0,
        instr_len: instr_len as u32,
        instr_info: 0,
    };
    deliver_ve(index, vcpu, ctx, ve)
}

/// Fill this vCPU's VEINFO and inject vector 20, as the module does on a #VE conversion —
/// or, with VEINFO still unread, #DF with error code 0 (`TdxModule::tdx_inject_ve`).
fn deliver_ve(
    index: u32,
    vcpu: &VcpuFd,
    ctx: &Ctx,
    ve: shared_abi::ve::VeInfo,
) -> Result<(), VcpuError> {
    let injected = ctx.seam.tdx_inject_ve(index, ve);
    let (nr, error_code) = injected.vector_and_error_code();
    let mut ev = vcpu
        .get_vcpu_events()
        .map_err(VcpuError::ioctl(index, "KVM_GET_VCPU_EVENTS"))?;
    ev.exception.injected = 1;
    ev.exception.nr = nr;
    ev.exception.has_error_code = u8::from(error_code.is_some());
    ev.exception.error_code = error_code.unwrap_or(0);
    vcpu.set_vcpu_events(&ev)
        .map_err(VcpuError::ioctl(index, "KVM_SET_VCPU_EVENTS"))?;
    if injected == crate::seam::VeInjection::Ve {
        ctx.counters.ves.fetch_add(1, Relaxed);
    }
    Ok(())
}
