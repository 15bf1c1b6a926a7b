//! Serving one TDCALL: the TDX module runs it; an EPT-violation exit goes to KVM's fault path
//! (and, on an attribute mismatch, to the VMM's implicit conversion); a TDVMCALL goes to KVM
//! and the VMM. This is the exit loop of QEMU + KVM for one guest instruction.

use super::convert::ConvertError;
use super::Vmm;
use crate::kvm::{FaultError, FaultOutcome, VmmExits};
use crate::seam::{TdcallExit, TdxModule};
use shared_abi::convert::ConversionTarget;
use shared_abi::{Gpa, PageLevel};
use tdcall::Regs;

/// How long one guest access or TDCALL may keep taking EPT-violation exits without completing
/// before the host declares it stuck. Retries themselves are normal: a fault that waited
/// behind a zap sees `mmu_invalidate_seq` moved and must fault again.
pub const FAULT_PROGRESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A TDCALL the host could not complete: the TD must be stopped.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum TdcallError {
    /// The alias disagrees with the attribute and the VMM runs with --strict.
    #[error("vCPU {vcpu}: {} access to gpa {gpa} whose attribute is {} (--strict forbids implicit conversion)",
        if *private { "private" } else { "shared" }, if *private { "shared" } else { "private" })]
    AliasMismatch {
        /// vCPU.
        vcpu: u32,
        /// GPA.
        gpa: Gpa,
        /// The access was private.
        private: bool,
    },
    /// KVM could not serve the fault.
    #[error("vCPU {vcpu}: EPT violation at {gpa} cannot be served: {why}")]
    Fault {
        /// vCPU.
        vcpu: u32,
        /// GPA.
        gpa: Gpa,
        /// KVM's reason.
        #[source]
        why: FaultError,
    },
    /// The implicit conversion of a memory-fault exit failed.
    #[error("vCPU {vcpu}: implicit conversion at {gpa} failed: {why}")]
    Convert {
        /// vCPU.
        vcpu: u32,
        /// GPA.
        gpa: Gpa,
        /// The VMM's reason.
        #[source]
        why: ConvertError,
    },
    /// The same TDCALL kept faulting.
    #[error("vCPU {vcpu}: TDCALL at {gpa} still faulting after {}s of EPT violations", FAULT_PROGRESS_TIMEOUT.as_secs())]
    Livelock {
        /// vCPU.
        vcpu: u32,
        /// GPA.
        gpa: Gpa,
    },
}

/// Run the TDCALL in `regs` for `vcpu` to completion (RAX holds the status afterwards).
pub fn handle_tdcall(
    seam: &TdxModule,
    vmm: &Vmm,
    vcpu: u32,
    regs: &mut Regs,
) -> Result<(), TdcallError> {
    // The clock starts at the second EPT violation: most TDCALLs never fault, and the usual
    // ACCEPT faults once.
    let mut since: Option<std::time::Instant> = None;
    let mut faults = 0u32;
    // An EPT violation is the parent of what resolves it — the fault path, the AUG — and of
    // the TDCALL re-executed afterwards: its span stays entered until the next exit.
    let mut ept_violation: Option<tracing::span::EnteredSpan> = None;
    loop {
        match seam.tdcall(vcpu, regs) {
            // An accepted page is already reachable: the module maps it for the CPU as
            // the leaf turns MAPPED (PrivateMem::map).
            TdcallExit::Done => return Ok(()),
            TdcallExit::Vmcall => {
                let mut host = TdxModule::tdg_vp_vmcall_host_view(regs);
                vmm.kvm()
                    .tdx_emulate_vmcall(vcpu, &mut host, vmm as &dyn VmmExits);
                TdxModule::tdg_vp_vmcall_complete(regs, &host);
                return Ok(());
            }
            TdcallExit::EptViolation { gpa, level } => {
                if faults > 0
                    && since.get_or_insert_with(std::time::Instant::now).elapsed()
                        > FAULT_PROGRESS_TIMEOUT
                {
                    return Err(TdcallError::Livelock { vcpu, gpa });
                }
                let max = PageLevel::from_tdx_level(level as u64).unwrap_or(PageLevel::Size4K);
                vmm.ept_violations
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                drop(ept_violation.take());
                ept_violation = Some(
                    tracing::debug_span!(target: "kvm", "tdx_handle_ept_violation", gpa = %gpa, level = %crate::trace::PageSize(level as u64))
                        .entered(),
                );
                resolve_ept_violation(vmm, vcpu, gpa, max)?;
                // The usual accept faults once; a second fault means the first was retried
                // (it raced a zap): give the zapping thread the CPU before trying again.
                faults += 1;
                if faults > 1 {
                    std::thread::yield_now();
                }
            }
        }
    }
}

/// One EPT violation through KVM's fault path, with the VMM's implicit conversion (QEMU's
/// `kvm_convert_memory` on KVM_EXIT_MEMORY_FAULT) unless --strict.
pub fn resolve_ept_violation(
    vmm: &Vmm,
    vcpu: u32,
    gpa: Gpa,
    max: PageLevel,
) -> Result<(), TdcallError> {
    match vmm.kvm().kvm_mmu_page_fault(gpa, max) {
        FaultOutcome::Mapped | FaultOutcome::Retry => Ok(()),
        FaultOutcome::MemoryFault { gpa, private } => {
            if vmm.strict {
                return Err(TdcallError::AliasMismatch { vcpu, gpa, private });
            }
            let to = if private {
                ConversionTarget::Private
            } else {
                ConversionTarget::Shared
            };
            let gfn = vmm.kvm().gfn_of(gpa);
            vmm.implicit_conversions
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            vmm.kvm_convert_memory(gfn, 1, to)
                .map_err(|why| TdcallError::Convert { vcpu, gpa, why })?;
            vmm.note_vcpu_conversion(vcpu, 1);
            Ok(())
        }
        FaultOutcome::Error(why) => Err(TdcallError::Fault { vcpu, gpa, why }),
    }
}
