//! KVM's handling of TDG.VP.VMCALL (`tdx_emulate_vmcall`, `tdx_map_gpa`).

use super::Kvm;
use shared_abi::convert::{ConversionTarget, MapGpaRangeArgs, TDX_MAP_GPA_MAX_LEN};
use shared_abi::vmcall::{Subfunction, TDX_HYPERCALL_STANDARD};
use shared_abi::{Gpa, GpaRange, VmcallStatus, PAGE_SIZE};
use tdcall::Regs;

/// Userspace failed a KVM_EXIT_HYPERCALL: a non-zero `run->hypercall.ret`, which KVM turns
/// into TDVMCALL_STATUS_INVALID_OPERAND for the guest (`tdx_complete_vmcall_map_gpa` in
/// Linux's `arch/x86/kvm/vmx/tdx.c`). The VMM's own error rides along for the log.
#[derive(Debug, thiserror::Error)]
#[error("the VMM failed KVM_HC_MAP_GPA_RANGE: {0}")]
pub struct HypercallFailed(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// What KVM hands to userspace (the VMM) for a TD, and the VMM's answers.
pub trait VmmExits {
    /// KVM_EXIT_HYPERCALL(KVM_HC_MAP_GPA_RANGE): convert the chunk.
    fn hc_map_gpa_range(&self, vcpu: u32, args: MapGpaRangeArgs) -> Result<(), HypercallFailed>;
    /// After a chunk, when more remain: is an event pending for `vcpu`
    /// (`kvm_vcpu_has_events`)? KVM then answers RETRY. Fault injection uses this to model
    /// an interrupt arriving mid-range.
    fn map_gpa_event_pending(&self, _vcpu: u32) -> bool {
        false
    }
    /// TDVMCALL<Instruction.IO> (a KVM_EXIT_IO in real KVM).
    fn io(
        &self,
        _vcpu: u32,
        _size: u8,
        _write: bool,
        _port: u16,
        _data: u32,
    ) -> Result<u32, VmcallStatus> {
        Err(VmcallStatus::SUBFUNC_UNSUPPORTED)
    }
    /// `kvm_write_guest` through the memslot's userspace mapping (QEMU's view of guest RAM,
    /// by GPA without the shared bit): false where no memslot covers `gpa`.
    fn kvm_write_guest(&self, _gpa: Gpa, _bytes: &[u8]) -> bool {
        false
    }
    /// Userspace failed an exit and stopped the VM (QEMU: `kvm_arch_handle_exit` < 0 →
    /// `vm_stop(RUN_STATE_INTERNAL_ERROR)`). Model-only hosts ignore it.
    fn kvm_internal_error(&self, _vcpu: u32, _why: &str) {}
    /// A tdxlab host check (`shared_abi::hostcheck`): answer in R10 (and R11/R12).
    fn host_check(&self, _vcpu: u32, regs: &mut Regs) {
        regs.r10 = VmcallStatus::SUBFUNC_UNSUPPORTED.0;
    }
    /// TDVMCALL<Instruction.HLT>: block the vCPU until something wakes it (`interrupts_blocked`:
    /// the guest's RFLAGS.IF was clear). Model-only hosts return at once.
    fn halt(&self, _vcpu: u32, _interrupts_blocked: bool) {}
    /// TDVMCALL<ReportFatalError> (KVM_EXIT_SYSTEM_EVENT / TDX_FATAL).
    fn report_fatal_error(&self, _vcpu: u32, _regs: &Regs) {}
    /// GetTdVmCallInfo leaf 1 (KVM_EXIT_TDX): R11..R14, which optional TDVMCALLs userspace
    /// serves. None here: tdxlab's VMM has no quote service and no event notification.
    fn get_tdvmcall_info_1(&self, _vcpu: u32) -> [u64; 4] {
        [0; 4]
    }
    /// GetQuote (KVM_EXIT_TDX) for the buffer at `gpa` (shared bit stripped): KVM presets
    /// SUBFUNC_UNSUPPORTED, which stands when userspace has no quote service.
    fn get_quote(&self, _vcpu: u32, _gpa: shared_abi::Gpa, _size: u64) -> VmcallStatus {
        VmcallStatus::SUBFUNC_UNSUPPORTED
    }
    /// SetupEventNotifyInterrupt (KVM_EXIT_TDX): as [`Self::get_quote`], unsupported unless
    /// userspace says otherwise.
    fn setup_event_notify_interrupt(&self, _vcpu: u32, _vector: u8) -> VmcallStatus {
        VmcallStatus::SUBFUNC_UNSUPPORTED
    }
    /// #VE.RequestMMIO forwarded as KVM_EXIT_MMIO at `gpa` (shared bit stripped): the value
    /// read. With no device there, QEMU's unassigned memory reads 0 and drops writes
    /// (`unassigned_mem_read` / `unassigned_mem_write` in `system/memory.c`).
    fn mmio(
        &self,
        _vcpu: u32,
        _gpa: shared_abi::Gpa,
        _size: u8,
        _write: bool,
        _value: u64,
    ) -> Result<u64, VmcallStatus> {
        Ok(0)
    }
}

/// The trace's node for one TDVMCALL, named: tdxlab's host checks by their operation, KVM
/// hypercalls by number, MapGPA with its registers. Console output (Instruction.IO to COM1,
/// one call per byte) gets none: the console traces each line once it is complete.
fn vmcall_span(sub: Option<Subfunction>, regs: &Regs) -> tracing::Span {
    use shared_abi::hostcheck::{HostCheckOp, TDXLAB_HYPERCALL};
    let name = sub.map(Subfunction::name).unwrap_or("unknown");
    match (regs.r10, sub) {
        (TDXLAB_HYPERCALL, _) => {
            let op = HostCheckOp::from_number(regs.r11).map_or("unknown", HostCheckOp::name);
            tracing::debug_span!(target: "kvm", "tdx_emulate_vmcall", sub = "tdxlab host check", op, gpa = %Gpa(regs.r12), r13 = regs.r13)
        }
        (TDX_HYPERCALL_STANDARD, _) => match sub {
            Some(Subfunction::Io)
                if regs.r14 == shared_abi::doorbell::COM1_PORT as u64 && regs.r13 == 1 =>
            {
                tracing::Span::none()
            }
            Some(Subfunction::Io) => {
                tracing::debug_span!(target: "kvm", "tdx_emulate_vmcall", sub = name, port = %format_args!("{:#x}", regs.r14), write = regs.r13 == 1)
            }
            Some(Subfunction::MapGpa) => {
                tracing::debug_span!(target: "kvm", "tdx_emulate_vmcall", sub = name, r12 = regs.r12, r13 = regs.r13)
            }
            _ => tracing::debug_span!(target: "kvm", "tdx_emulate_vmcall", sub = name),
        },
        (nr, _) => {
            tracing::debug_span!(target: "kvm", "tdx_emulate_vmcall", sub = "KVM hypercall", nr)
        }
    }
}

impl Kvm {
    /// `tdx_emulate_vmcall`: serve a TDVMCALL from the host view of the registers, writing
    /// R10 (status) and the outputs.
    pub fn tdx_emulate_vmcall(&self, vcpu: u32, regs: &mut Regs, vmm: &dyn VmmExits) {
        let sub = Subfunction::from_number(regs.r11);
        let _s = vmcall_span(sub, regs).entered();
        if regs.r10 == shared_abi::hostcheck::TDXLAB_HYPERCALL {
            return vmm.host_check(vcpu, regs);
        }
        if regs.r10 != TDX_HYPERCALL_STANDARD {
            return self.kvm_emulate_hypercall(vcpu, regs, vmm);
        }
        match sub {
            Some(Subfunction::MapGpa) => self.tdx_map_gpa(vcpu, regs, vmm),
            Some(Subfunction::GetTdVmCallInfo) => self.tdx_get_td_vm_call_info(vcpu, regs, vmm),
            Some(Subfunction::Cpuid) => self.tdx_emulate_cpuid(regs),
            Some(Subfunction::GetQuote) => self.tdx_get_quote(vcpu, regs, vmm),
            Some(Subfunction::SetupEventNotifyInterrupt) => {
                self.tdx_setup_event_notify_interrupt(vcpu, regs, vmm)
            }
            Some(Subfunction::RequestMmio) => self.tdx_emulate_mmio(vcpu, regs, vmm),
            Some(Subfunction::Io) => self.tdx_emulate_io(vcpu, regs, vmm),
            // KVM blocks the vCPU until it has an event to take (`kvm_emulate_halt_noskip`);
            // R12 bit 0 says the guest's interrupts are blocked, so only an NMI-like event
            // would do. The emulated TD has no interrupt source: the VMM blocks the vCPU until
            // the TD stops.
            Some(Subfunction::Hlt) => {
                vmm.halt(vcpu, regs.r12 & 1 == 1);
                regs.r10 = 0;
            }
            Some(Subfunction::Rdmsr) => self.tdx_emulate_rdmsr(vcpu, regs),
            Some(Subfunction::Wrmsr) => self.tdx_emulate_wrmsr(vcpu, regs),
            Some(Subfunction::ReportFatalError) => {
                vmm.report_fatal_error(vcpu, regs);
                regs.r10 = 0;
            }
            _ => regs.r10 = VmcallStatus::SUBFUNC_UNSUPPORTED.0,
        }
    }

    /// `tdx_emulate_io` (Linux 6.16 `arch/x86/kvm/vmx/tdx.c`): the size is checked as the
    /// whole R12 (1, 2 or 4) and the direction as the whole R13 (0 or 1), INVALID_OPERAND
    /// otherwise; the port is R14 cut to 16 bits (`unsigned int port`, then the emulator's
    /// `unsigned short`), never refused. An IN's value comes back zero-extended in R11.
    fn tdx_emulate_io(&self, vcpu: u32, regs: &mut Regs, vmm: &dyn VmmExits) {
        let (size, write) = (regs.r12, regs.r13);
        if !matches!(size, 1 | 2 | 4) || write > 1 {
            return regs.r10 = VmcallStatus::INVALID_OPERAND.0;
        }
        let port = regs.r14 as u16;
        match vmm.io(vcpu, size as u8, write == 1, port, regs.r15 as u32) {
            Ok(v) if write == 0 => (regs.r10, regs.r11) = (0, v as u64),
            Ok(_) => regs.r10 = 0,
            Err(s) => regs.r10 = s.0,
        }
    }

    /// `tdx_map_gpa`: validate as KVM does — the range first (no wrap, legal GPAs, one side of
    /// the shared bit: INVALID_OPERAND), then alignment (ALIGN_ERROR), R11 = the GPA either
    /// way — then forward ≤2 MiB chunks to the VMM. Only between chunks may a pending event
    /// end the call with RETRY and the resume GPA (request alias) in R11
    /// (`tdx_complete_vmcall_map_gpa`).
    fn tdx_map_gpa(&self, vcpu: u32, regs: &mut Regs, vmm: &dyn VmmExits) {
        let gpaw = self.cfg.gpaw;
        let (gpa, size) = (regs.r12, regs.r13);
        let fail = |regs: &mut Regs, s: VmcallStatus| (regs.r10, regs.r11) = (s.0, gpa);
        let end = gpa.wrapping_add(size);
        let last = Gpa(end.wrapping_sub(1));
        if end <= gpa
            || !gpaw.is_valid(Gpa(gpa))
            || !gpaw.is_valid(last)
            || gpaw.is_shared(Gpa(gpa)) != gpaw.is_shared(last)
        {
            return fail(regs, VmcallStatus::INVALID_OPERAND);
        }
        if gpa % PAGE_SIZE != 0 || size % PAGE_SIZE != 0 {
            return fail(regs, VmcallStatus::ALIGN_ERROR);
        }
        let to = if gpaw.is_shared(Gpa(gpa)) {
            ConversionTarget::Shared
        } else {
            ConversionTarget::Private
        };
        let mut next = gpa;
        loop {
            let chunk = (end - next).min(TDX_MAP_GPA_MAX_LEN);
            let args = MapGpaRangeArgs::for_range(GpaRange::new(Gpa(next), chunk), to, gpaw);
            tracing::debug!(target: "kvm", gpa = %Gpa(next), bytes = chunk, to = to.name(), "KVM_EXIT_HYPERCALL(KVM_HC_MAP_GPA_RANGE)");
            if let Err(e) = vmm.hc_map_gpa_range(vcpu, args) {
                tracing::warn!(target: "kvm", "{e}");
                return (regs.r10, regs.r11) = (VmcallStatus::INVALID_OPERAND.0, next);
            }
            next += chunk;
            if next >= end {
                return regs.r10 = VmcallStatus::SUCCESS.0;
            }
            if vmm.map_gpa_event_pending(vcpu) {
                tracing::debug!(target: "kvm", resume = %Gpa(next), "MapGPA RETRY (event pending)");
                return (regs.r10, regs.r11) = (VmcallStatus::RETRY.0, next);
            }
        }
    }
}
