//! A vCPU thread of the emulated TD: the exit loop, the doorbell, and EPT violations.

use super::kvm_backend::{KvmBackend, Mapping};
use super::ve::{inject_in_ve, inject_io_ve};
use super::{handle_tdcall, GuestExit, Vmm};
use crate::seam::TdxModule;
use kvm_ioctls::{VcpuExit, VcpuFd};
use shared_abi::doorbell::DEFAULT_DOORBELL_PORT;
use shared_abi::tdcall::{decode_rax, TdcallLeaf};
use shared_abi::vmcall::Subfunction;
use shared_abi::{Gpa, Gpaw, PageLevel};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Default)]
pub(super) struct Counters {
    pub(super) exits_on_mapped: AtomicU64,
    pub(super) ves: AtomicU64,
    pub(super) tdcalls: Mutex<BTreeMap<&'static str, u64>>,
    pub(super) tdvmcalls: Mutex<BTreeMap<&'static str, u64>>,
}

/// What a vCPU thread works with.
pub(super) struct Ctx<'a> {
    /// The firmware window's mapping and where it starts.
    pub(super) firmware: (&'a Mapping, u64),
    /// The doorbell benchmark runs: the bare bench port is answered by re-entering.
    pub(super) bench: bool,
    pub(super) seam: &'a TdxModule,
    pub(super) vmm: &'a Vmm,
    pub(super) counters: &'a Counters,
    pub(super) backend: &'a KvmBackend,
    pub(super) mem: u64,
}

pub(super) fn vcpu_loop(index: u32, mut vcpu: VcpuFd, ctx: &Ctx) {
    let io = ctx.vmm.io.as_ref().expect("machine VMMs have I/O");
    let fatal = |kind: &'static str, message: String| {
        io.finish(GuestExit {
            kind,
            code: 0,
            message,
        })
    };
    let ctl = &ctx.backend.vcpus[index as usize];
    while !io.stop.load(SeqCst) {
        // Each KVM_RUN is a TD entry in the current epoch; returning is a TD exit. Order
        // matters, as with KVM's vcpu->mode: be visibly in guest mode before joining the
        // epoch, so a kicker right after TDH.MEM.TRACK either waits for this vCPU or this vCPU
        // joins the new epoch; and leave the epoch before the kicker may stop waiting.
        ctl.in_run.store(true, SeqCst);
        ctx.seam.td_vcpu_enter(index);
        let result = vcpu.run();
        ctx.seam.td_vcpu_exit(index);
        ctl.exits.fetch_add(1, SeqCst);
        ctl.in_run.store(false, SeqCst);
        let exit = match result {
            Ok(e) => e,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                if io.stop.load(SeqCst) {
                    ctl.stopped_rip
                        .store(vcpu.get_regs().map(|r| r.rip).unwrap_or(0), SeqCst);
                }
                continue;
            }
            Err(e) => return fatal("host_error", format!("vCPU {index}: KVM_RUN failed: {e}")),
        };
        // The exit borrows the vCPU's run area; anything that needs RIP is reported after.
        let mut rung = false;
        let mut raw_io: Option<(u16, u8, bool)> = None;
        let outcome: Option<(&'static str, String)> = match exit {
            VcpuExit::IoOut(DEFAULT_DOORBELL_PORT, _) => {
                rung = true;
                None
            }
            VcpuExit::IoOut(crate::pack::BENCH_BARE_PORT, _) if ctx.bench => None,
            VcpuExit::IoOut(port, data) => {
                raw_io = Some((port, data.len() as u8, false));
                None
            }
            VcpuExit::IoIn(port, data) => {
                raw_io = Some((port, data.len() as u8, true));
                None
            }
            VcpuExit::MmioRead(gpa, data) => ept_violation(index, gpa, Access::Read(data), ctx)
                .err()
                .map(|e| ("fatal", e)),
            VcpuExit::MmioWrite(gpa, data) => ept_violation(index, gpa, Access::Write(data), ctx)
                .err()
                .map(|e| ("fatal", e)),
            VcpuExit::Hlt => None,
            VcpuExit::Shutdown => Some(("triple_fault", format!("vCPU {index} triple-faulted"))),
            VcpuExit::FailEntry(reason, cpu) => Some((
                "host_error",
                format!("vCPU {index}: VM entry failed (reason {reason:#x}, cpu {cpu})"),
            )),
            VcpuExit::InternalError => {
                Some(("host_error", format!("vCPU {index}: KVM internal error")))
            }
            other => Some((
                "host_error",
                format!("vCPU {index}: unexpected exit {other:?}"),
            )),
        };
        let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
        if let Some((kind, message)) = outcome {
            return fatal(kind, format!("{message} (RIP {rip:#x})"));
        }
        if let Some((port, size, is_in)) = raw_io {
            let r = if is_in {
                inject_in_ve(index, &mut vcpu, ctx, port, size)
            } else {
                inject_io_ve(index, &vcpu, ctx, port, size, false)
            };
            if let Err(e) = r {
                return fatal("fatal", e);
            }
        }
        if rung {
            if let Err(e) = doorbell(index, &vcpu, ctx) {
                return fatal("fatal", e);
            }
        }
    }
}

/// The guest access that left KVM_RUN as an MMIO exit.
enum Access<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

/// A guest access to a page the host keeps unmapped: DESIGN.md's EPT violation. Resolve it
/// through KVM's fault path (and the VMM's implicit conversion unless --strict), then complete
/// the access from the backing; KVM finishes the instruction on the next KVM_RUN.
fn ept_violation(index: u32, gpa: u64, access: Access, ctx: &Ctx) -> Result<(), String> {
    let gpaw = Gpaw::GPAW_48;
    let shared = gpaw.is_shared(Gpa(gpa));
    let pgpa = gpaw.to_private(Gpa(gpa)).0;
    if pgpa >= ctx.mem || gpa >> 48 != 0 {
        return Err(format!("vCPU {index}: access to unbacked gpa {gpa:#x}"));
    }
    let since = Instant::now();
    loop {
        if since.elapsed() > super::FAULT_PROGRESS_TIMEOUT {
            return Err(format!(
                "vCPU {index}: gpa {gpa:#x} still faulting after {} s",
                super::FAULT_PROGRESS_TIMEOUT.as_secs()
            ));
        }
        if !shared {
            match ctx.seam.leaf_state(Gpa(pgpa)) {
                Some((shared_abi::sept::SeptState::Mapped, _)) => {
                    // The host should have mapped an accepted page: every exit here is a
                    // page the backend forgot (counted, and asserted zero by the tests).
                    ctx.counters.exits_on_mapped.fetch_add(1, SeqCst);
                    break;
                }
                Some((state, _)) if state != shared_abi::sept::SeptState::Blocked => {
                    return Err(format!(
                        "vCPU {index}: access before accept: private gpa {pgpa:#x} is {}",
                        state.name()
                    ));
                }
                _ => {}
            }
        }
        let fault = ctx
            .vmm
            .kvm()
            .kvm_mmu_page_fault(Gpa(gpa), PageLevel::Size4K);
        match fault {
            crate::kvm::FaultOutcome::Mapped if shared => break,
            crate::kvm::FaultOutcome::Mapped | crate::kvm::FaultOutcome::Retry => {}
            crate::kvm::FaultOutcome::MemoryFault { .. } => {
                super::resolve_ept_violation(ctx.vmm, index, Gpa(gpa), PageLevel::Size4K)
                    .map_err(|e| e.to_string())?;
            }
            crate::kvm::FaultOutcome::Error(e) => {
                return Err(format!("vCPU {index}: EPT violation at {gpa:#x}: {e}"))
            }
        }
    }
    let backing = if shared {
        &ctx.backend.shared
    } else {
        &ctx.backend.private
    };
    match access {
        Access::Read(data) => backing.read(pgpa, data),
        Access::Write(data) => backing.write(pgpa, data),
    }
    Ok(())
}

/// The emulation doorbell: every TDCALL register in place, RDX carried in RBP.
fn doorbell(index: u32, vcpu: &VcpuFd, ctx: &Ctx) -> Result<(), String> {
    let (seam, vmm, counters) = (ctx.seam, ctx.vmm, ctx.counters);
    let mut k = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    let mut r = tdcall::Regs {
        rax: k.rax,
        rcx: k.rcx,
        rdx: k.rbp,
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
    };
    let name = decode_rax(r.rax)
        .and_then(|(l, _)| TdcallLeaf::from_number(l))
        .map(|l| l.name())
        .unwrap_or("unknown");
    *counters
        .tdcalls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(name)
        .or_default() += 1;
    if r.rax == 0 {
        let sub = Subfunction::from_number(r.r11)
            .map(|s| s.name())
            .unwrap_or("unknown");
        *counters
            .tdvmcalls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(sub)
            .or_default() += 1;
    }
    handle_tdcall(seam, vmm, index, &mut r).map_err(|e| e.to_string())?;
    (k.rax, k.rcx, k.rbp, k.rbx, k.rsi, k.rdi) = (r.rax, r.rcx, r.rdx, r.rbx, r.rsi, r.rdi);
    (k.r8, k.r9, k.r10, k.r11, k.r12, k.r13, k.r14, k.r15) =
        (r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15);
    vcpu.set_regs(&k).map_err(|e| format!("KVM_SET_REGS: {e}"))
}
