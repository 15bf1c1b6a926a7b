//! #VE delivery: what the TDX module does with a TD's raw port I/O.

use super::vcpu::Ctx;

use kvm_ioctls::VcpuFd;
use std::sync::atomic::Ordering::*;

/// Raw port I/O in a TD is not executed: the TDX module turns it into a #VE (exit reason 30,
/// the I/O exit qualification, the instruction length) for the guest to serve through
/// TDVMCALL<Instruction.IO>. KVM reports an OUT exit with RIP already past the instruction, so
/// decode its length backwards (IN/OUT with DX: 1 byte; with imm8: 2; 0x66 prefix: +1),
/// put RIP back on it (which also cancels KVM's completion of an IN), and inject vector 20.
pub(super) fn inject_io_ve(
    index: u32,
    vcpu: &VcpuFd,
    ctx: &Ctx,
    port: u16,
    size: u8,
    is_in: bool,
) -> Result<(), String> {
    let mut regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    let after = regs.rip;
    let mut code = [0u8; 3];
    read_guest(ctx, after.wrapping_sub(3), &mut code);
    let wide = size > 1;
    let dx_op = match (is_in, wide) {
        (true, false) => 0xEC,
        (true, true) => 0xED,
        (false, false) => 0xEE,
        (false, true) => 0xEF,
    };
    let len: usize = if code[2] == dx_op && regs.rdx as u16 == port {
        1
    } else if code[1] == dx_op - 8 && code[2] as u16 == port {
        2
    } else {
        return Err(format!("vCPU {index}: raw port I/O to {port:#x} at RIP {after:#x} with an instruction the host cannot decode"));
    };
    let prefixed = size == 2 && code[3 - len - 1] == 0x66;
    let len = (len + prefixed as usize) as u64;
    regs.rip = after - len;
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS: {e}"))?;
    deliver_io_ve(index, vcpu, ctx, (port, size, is_in), len)
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
) -> Result<(), String> {
    let rax = vcpu
        .get_regs()
        .map_err(|e| format!("KVM_GET_REGS: {e}"))?
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

/// What the TDX module does for an instruction it refuses: fill this vCPU's VEINFO (exit
/// reason 30 with the I/O qualification and `instr_len`) and inject vector 20.
fn deliver_io_ve(
    index: u32,
    vcpu: &VcpuFd,
    ctx: &Ctx,
    (port, size, is_in): (u16, u8, bool),
    instr_len: u64,
) -> Result<(), String> {
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
    ctx.seam.inject_ve(index, ve);
    let mut ev = vcpu
        .get_vcpu_events()
        .map_err(|e| format!("KVM_GET_VCPU_EVENTS: {e}"))?;
    ev.exception.injected = 1;
    ev.exception.nr = shared_abi::ve::X86_TRAP_VE;
    ev.exception.has_error_code = 0;
    ev.exception.error_code = 0;
    vcpu.set_vcpu_events(&ev)
        .map_err(|e| format!("KVM_SET_VCPU_EVENTS: {e}"))?;
    ctx.counters.ves.fetch_add(1, Relaxed);
    Ok(())
}

/// Read guest memory by guest-physical address (firmware window or private RAM).
fn read_guest(ctx: &Ctx, gpa: u64, out: &mut [u8]) {
    let (fw, base) = ctx.firmware;
    if gpa >= base && gpa + out.len() as u64 <= 1 << 32 {
        // SAFETY: inside the firmware mapping (bounds checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(
                fw.ptr.add((gpa - base) as usize),
                out.as_mut_ptr(),
                out.len(),
            )
        };
    } else if gpa + (out.len() as u64) <= ctx.mem {
        ctx.backend.private.read(gpa, out);
    }
}
