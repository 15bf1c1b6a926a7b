//! A vCPU thread of the emulated TD: the exit loop and the doorbell. (Guest-memory faults
//! reach the host through userfaultfd: `uffd`.)

use super::account::thread_cpu_ns;
use super::ctx::{Counters, Ctx, VcpuError};
use super::ve::{inject_hlt_ve, inject_in_ve, inject_out_ve};
use crate::exit::ExitKind;
use crate::linux::tdcall_sites::PATCH_PORT;
use crate::vmm::{handle_tdcall, GuestExit};
use kvm_ioctls::{VcpuExit, VcpuFd};
use shared_abi::doorbell::DEFAULT_DOORBELL_PORT;
use shared_abi::hostcheck::{HostCheckOp, TDXLAB_HYPERCALL};
use shared_abi::tdcall::{decode_rax, TdcallLeaf};
use shared_abi::vmcall::Subfunction;
use std::sync::atomic::Ordering::*;

pub(super) fn vcpu_loop(index: u32, mut vcpu: VcpuFd, ctx: &Ctx) {
    crate::trace::set_vcpu(index);
    let io = ctx.vmm.io.as_ref().expect("machine VMMs have I/O");
    let fatal = |kind: ExitKind, message: String| {
        io.finish(GuestExit {
            kind,
            code: 0,
            message,
        })
    };
    let ctl = &ctx.backend.vcpus[index as usize];
    let test_panic = super::contain::test_panic(&format!("vcpu{index}"));
    while !io.stop.load(SeqCst) {
        wait_for_sept_zap(ctx, &io.stop);
        // Each KVM_RUN is a TD entry in the current epoch; returning is a TD exit.
        ctl.enter(ctx.seam, index);
        let result = vcpu.run();
        let exited_at = thread_cpu_ns();
        ctl.exit(ctx.seam, index);
        let refused = ctl.refused.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((kind, message)) = refused {
            drop(result);
            let at = crate::symbols::describe_rip(rip(&vcpu), ctx.builtin);
            return fatal(kind, format!("{message} ({at})"));
        }
        // Guest memory was fenced to stop the TD: whatever this vCPU ran into after that
        // (EFAULT, an MMIO exit, a fault PVM turned into a triple fault) is the fence's doing.
        if ctx.backend.fenced.load(SeqCst) {
            drop(result);
            ctl.stopped_rip.store(rip(&vcpu), SeqCst);
            return;
        }
        let exit = match result {
            Ok(e) => e,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                // A kick's exit: the host's cost of it counts too.
                add_cpu_since(ctx, exited_at);
                if io.stop.load(SeqCst) {
                    ctl.stopped_rip.store(rip(&vcpu), SeqCst);
                }
                continue;
            }
            Err(e) => {
                return fatal(
                    ExitKind::HostError,
                    format!("vCPU {index}: KVM_RUN failed: {e}"),
                )
            }
        };
        // The exit borrows the vCPU's run area: classify it first, then serve it.
        let mut counted = true;
        let served = match classify(index, exit, ctx) {
            Next::Reenter => {
                Counters::bump(&ctx.counters.other_exits);
                Ok(())
            }
            Next::Doorbell => doorbell(index, &vcpu, ctx).map(|mark| counted = !mark),
            Next::RawIo(port, 1, false)
                if port == u16::from(PATCH_PORT) && !ctx.linux.vaddrs.is_empty() =>
            {
                super::linux_tdcall::patched_tdcall(index, &vcpu, ctx)
            }
            Next::Hlt => inject_hlt_ve(index, &vcpu, ctx),
            Next::RawIo(port, size, false) => inject_out_ve(index, &vcpu, ctx, port, size),
            Next::RawIo(port, size, true) => inject_in_ve(index, &mut vcpu, ctx, port, size),
            Next::Stop(kind, message) => {
                return fatal(
                    kind,
                    format!("{message} ({})", where_stopped(&vcpu, ctx.builtin)),
                );
            }
        };
        if let Err(e) = served {
            return fatal(e.kind(), e.to_string());
        }
        if counted {
            // A measurement mark's own exit is left out of what it measures.
            add_cpu_since(ctx, exited_at);
        }
        if test_panic {
            panic!(
                "test-only panic in vCPU {index} ({})",
                super::contain::TEST_PANIC_ENV
            );
        }
    }
}

/// The vCPU's RIP now (0 if KVM will not say).
fn rip(vcpu: &VcpuFd) -> u64 {
    vcpu.get_regs().map(|r| r.rip).unwrap_or(0)
}

/// KVM's `tdx_vcpu_run` refuses to enter the TD while `wait_for_sept_zap` is set (a
/// contended SEAMCALL being retried with every vCPU out): wait here until it clears.
fn wait_for_sept_zap(ctx: &Ctx, stop: &std::sync::atomic::AtomicBool) {
    while ctx.backend.hold_out.load(SeqCst) && !stop.load(SeqCst) {
        std::thread::sleep(std::time::Duration::from_micros(20));
    }
}

/// This thread's CPU time since `since` (ns), to the host-CPU account.
fn add_cpu_since(ctx: &Ctx, since: u64) {
    let spent = thread_cpu_ns().saturating_sub(since);
    ctx.counters.host_cpu_ns.fetch_add(spent, Relaxed);
}

/// What the loop does with one KVM exit.
enum Next {
    /// Nothing to serve (the bare bench port): enter again.
    Reenter,
    /// A raw HLT: the TDX module turns it into a #VE.
    Hlt,
    /// The emulation doorbell rang: serve the TDCALL in the registers.
    Doorbell,
    /// Raw port I/O (port, size, is IN): the TDX module turns it into a #VE.
    RawIo(u16, u8, bool),
    /// The TD stops.
    Stop(ExitKind, String),
}

fn classify(index: u32, exit: VcpuExit, ctx: &Ctx) -> Next {
    let bench = ctx.bench;
    match exit {
        VcpuExit::MmioRead(gpa, data) if ioapic_offset(ctx, gpa).is_some() => {
            let v = ctx.vmm.ioapic.read(ioapic_offset(ctx, gpa).unwrap_or(0));
            let n = data.len().min(4);
            data[..n].copy_from_slice(&v.to_le_bytes()[..n]);
            Next::Reenter
        }
        VcpuExit::MmioWrite(gpa, data) if ioapic_offset(ctx, gpa).is_some() => {
            let mut v = [0u8; 4];
            let n = data.len().min(4);
            v[..n].copy_from_slice(&data[..n]);
            (ctx.vmm.ioapic).write(ioapic_offset(ctx, gpa).unwrap_or(0), u32::from_le_bytes(v));
            Next::Reenter
        }
        VcpuExit::IoOut(DEFAULT_DOORBELL_PORT, _) => Next::Doorbell,
        VcpuExit::IoOut(crate::guest_layout::BENCH_BARE_PORT, _) if bench => Next::Reenter,
        VcpuExit::IoOut(port, data) => Next::RawIo(port, data.len() as u8, false),
        VcpuExit::IoIn(port, data) => Next::RawIo(port, data.len() as u8, true),
        VcpuExit::Hlt => Next::Hlt,
        // RAM and the firmware window are always in memslots: an MMIO exit is an access
        // outside them.
        VcpuExit::MmioRead(gpa, _) | VcpuExit::MmioWrite(gpa, _) => Next::Stop(
            ExitKind::Fatal,
            format!("vCPU {index}: access to unbacked gpa {gpa:#x}"),
        ),
        VcpuExit::Shutdown => Next::Stop(
            ExitKind::TripleFault,
            format!("vCPU {index} triple-faulted"),
        ),
        VcpuExit::FailEntry(reason, cpu) => Next::Stop(
            ExitKind::HostError,
            format!("vCPU {index}: VM entry failed (reason {reason:#x}, cpu {cpu})"),
        ),
        VcpuExit::InternalError => Next::Stop(
            ExitKind::HostError,
            format!("vCPU {index}: KVM internal error"),
        ),
        other => Next::Stop(
            ExitKind::HostError,
            format!("vCPU {index}: unexpected exit {other:?}"),
        ),
    }
}

/// The offset in the I/O APIC's window of an MMIO access by a booted Linux kernel (through
/// either alias: Linux maps it decrypted, so through the shared one). KVM emulated the
/// instruction and reports the access; on TDX the guest's #VE handler would decode it and
/// ask with TDVMCALL<#VE.RequestMMIO> — the same register access, one step shorter.
fn ioapic_offset(ctx: &Ctx, gpa: u64) -> Option<u64> {
    use crate::vmm::{IOAPIC_BASE, IOAPIC_SIZE};
    if ctx.linux.vaddrs.is_empty() {
        return None;
    }
    let gpa = gpa & !ctx.linux.shared_mask;
    (IOAPIC_BASE..IOAPIC_BASE + IOAPIC_SIZE)
        .contains(&gpa)
        .then(|| gpa - IOAPIC_BASE)
}

/// Where a vCPU stopped, for an exit message: its RIP, unless KVM already reset it.
///
/// On AMD, KVM answers a SHUTDOWN intercept by INITing the vCPU, because the VMCB is
/// undefined after it (`shutdown_interception` in Linux's `arch/x86/kvm/svm/svm.c`): the
/// registers read back are the reset state (CS f000:fff0 based at 0xffff0000), never a TD's.
fn where_stopped(vcpu: &VcpuFd, builtin: bool) -> String {
    let rip = rip(vcpu);
    let cs = vcpu.get_sregs().map(|s| s.cs);
    match cs {
        Ok(cs) if rip == 0xfff0 && cs.selector == 0xf000 && cs.base == 0xffff_0000 => {
            "RIP unknown: KVM reset the vCPU at the shutdown, as it does on AMD".to_string()
        }
        _ => crate::symbols::describe_rip(rip, builtin),
    }
}

/// The emulation doorbell: every TDCALL register in place, RDX carried in RBP. Returns
/// whether it was a measurement mark (not counted as an exit).
fn doorbell(index: u32, vcpu: &VcpuFd, ctx: &Ctx) -> Result<bool, VcpuError> {
    let mut k = vcpu
        .get_regs()
        .map_err(VcpuError::ioctl(index, "KVM_GET_REGS"))?;
    let mut r = tdcall_regs(&k, k.rbp);
    let mark = serve_tdcall(index, ctx, &mut r, k.rip, |r| {
        handle_tdcall(ctx.seam, ctx.vmm, index, r)
    })?;
    k.rbp = put_tdcall_regs(&mut k, &r);
    vcpu.set_regs(&k)
        .map_err(VcpuError::ioctl(index, "KVM_SET_REGS"))?;
    Ok(mark)
}

/// The TDCALL registers of `k`, RDX taken from `rdx` (the doorbell carries it in RBP).
pub(super) fn tdcall_regs(k: &kvm_bindings::kvm_regs, rdx: u64) -> tdcall::Regs {
    tdcall::Regs {
        rax: k.rax,
        rcx: k.rcx,
        rdx,
        rbx: k.rbx,
        rsi: k.rsi,
        rdi: k.rdi,
        r8: k.r8,
        r9: k.r9,
        r10: k.r10,
        r11: k.r11,
        r12: k.r12,
        r13: k.r13,
        r14: k.r14,
        r15: k.r15,
    }
}

/// Write the TDCALL's outputs back into `k`; returns the output RDX for the caller to place.
pub(super) fn put_tdcall_regs(k: &mut kvm_bindings::kvm_regs, r: &tdcall::Regs) -> u64 {
    (k.rax, k.rcx, k.rbx, k.rsi, k.rdi) = (r.rax, r.rcx, r.rbx, r.rsi, r.rdi);
    (k.r8, k.r9, k.r10, k.r11, k.r12, k.r13, k.r14, k.r15) =
        (r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15);
    r.rdx
}

/// Count one TDCALL and serve it with `handle`. Returns whether it was a measurement mark
/// (not counted as an exit).
pub(super) fn serve_tdcall(
    index: u32,
    ctx: &Ctx,
    r: &mut tdcall::Regs,
    rip: u64,
    handle: impl FnOnce(&mut tdcall::Regs) -> Result<(), crate::vmm::TdcallError>,
) -> Result<bool, VcpuError> {
    let counters = ctx.counters;
    let name = decode_rax(r.rax)
        .and_then(|(l, _)| TdcallLeaf::from_number(l))
        .map(|l| l.name())
        .unwrap_or("unknown");
    let mark = r.rax == 0 && r.r10 == TDXLAB_HYPERCALL && r.r11 == HostCheckOp::Mark.number();
    if !mark {
        Counters::count(&counters.tdcalls, name);
        Counters::bump(&counters.doorbell_exits);
    }
    if r.rax == 0 && !mark {
        let sub = Subfunction::from_number(r.r11)
            .map(|s| s.name())
            .unwrap_or("unknown");
        Counters::count(&counters.tdvmcalls, sub);
        if r.r10 == 0 && r.r11 == Subfunction::MapGpa.number() {
            Counters::bump(&counters.map_gpa_exits);
        }
        if r.r10 == 0 && r.r11 == Subfunction::Hlt.number() {
            // A halted vCPU waits here, not in KVM_RUN: this is where a timeout finds it.
            ctx.backend.vcpus[index as usize]
                .stopped_rip
                .store(rip, SeqCst);
        }
    }
    handle(r)?;
    Ok(mark)
}
