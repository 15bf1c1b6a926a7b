//! Memory conversion in the VMM (`kvm_handle_hc_map_gpa_range` → `kvm_convert_memory`).

use crate::inject::Chance;
use crate::kvm::{Alias, BackendError, HypercallFailed, Kvm, KvmBug, VmmExits};
use crate::percpu::PerCpuCounter;
use shared_abi::convert::{ConversionTarget, MapGpaRangeArgs, MemoryAttributes};
use shared_abi::Gpa;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Seeded fault injection into the host's answers.
pub struct Injector {
    /// An event is pending between two MapGPA chunks (RETRY at the chunk boundary).
    pub retry: Chance,
    /// RETRYs injected.
    pub retries: AtomicU64,
}

impl Injector {
    /// Inject MapGPA RETRYs with probability `retry_p`, seeded.
    pub fn new(retry_p: f64, seed: u64) -> Injector {
        Injector {
            retry: Chance::new(retry_p, seed),
            retries: AtomicU64::new(0),
        }
    }
}

/// The VMM's own view of the shared backing, by private-alias address; `false` when the
/// range is outside it.
pub trait SharedView: Send + Sync {
    /// Read `buf.len()` bytes at `gpa`.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool;
    /// Write `buf` at `gpa`.
    fn write(&self, gpa: u64, buf: &[u8]) -> bool;
}

/// The VMM's side of a TD: conversions and exits.
pub struct Vmm {
    kvm: Arc<Kvm>,
    /// Refuse implicit conversions (alias/attribute mismatch is fatal).
    pub strict: bool,
    /// Fault injection.
    pub inject: Injector,
    /// Conversions done, by direction.
    pub conversions_to_private: PerCpuCounter,
    /// Conversions to shared.
    pub conversions_to_shared: PerCpuCounter,
    /// Implicit conversions done.
    pub implicit_conversions: PerCpuCounter,
    /// Console and exit port (absent in model-only runs).
    pub io: Option<super::GuestIo>,
    /// Host checks served.
    pub host_checks: PerCpuCounter,
    /// Host checks that failed.
    pub host_check_mismatches: PerCpuCounter,
    /// Pages whose attribute a conversion changed (requested pages, both directions).
    pub pages_converted: PerCpuCounter,
    /// The VMM's own mapping of the shared backing (QEMU's view of guest RAM), which host
    /// checks read and write; absent in model-only runs (checks are then unsupported).
    pub shared_view: Option<Arc<dyn SharedView>>,
    /// Test-only hook: leak a private byte into the shared backing before each SYNC_PRIVATE,
    /// to prove the check catches a leaking host.
    pub plant_leak: std::sync::atomic::AtomicBool,
    /// EPT violations resolved inside a TDCALL's exit (an ACCEPT's fault path, AUG and
    /// re-executed ACCEPT are one exit: `handle_tdcall`).
    pub ept_violations: PerCpuCounter,
    /// Where the guest's measurement marks go (absent: marks are answered and ignored).
    pub marks: Option<Arc<dyn MarkSink>>,
    /// Guest RAM as GFN ranges `[start, end)` (QEMU's RAM blocks); `None`: all of
    /// `[0, mem_pages)` is RAM (the simulator, model-only tests).
    pub ram_gfns: Option<Vec<(u64, u64)>>,
    /// The run's map (`--html`), told of every conversion.
    pub map: Option<Arc<crate::map::Recorder>>,
    /// The I/O APIC a booted Linux kernel programs (`run --kernel`; QEMU's split irqchip).
    pub ioapic: super::IoApic,
    /// Per vCPU (up to [`COUNTED_VCPUS`]): conversions and pages the VMM served for it, so
    /// that a run stopped before the guest's own counts (a SIGINT) can still say what each
    /// vCPU did.
    per_vcpu: Vec<[AtomicU64; 2]>,
    /// SetupEventNotifyInterrupt's vector and the vCPU that set it (QEMU's
    /// `event_notify_vector` / `event_notify_apicid`).
    pub(crate) event_notify: std::sync::Mutex<Option<(u8, u32)>>,
}

/// vCPUs whose conversions are counted apart (tdxlab runs at most this many).
pub const COUNTED_VCPUS: usize = 64;

/// The receiver of the guest's measurement marks (`HostCheckOp::Mark`): the runner's exit
/// accounting, which snapshots its counters at each.
pub trait MarkSink: Send + Sync {
    /// vCPU `vcpu` starts (`end` false) or ends window `window`.
    fn mark(&self, vmm: &Vmm, vcpu: u32, window: shared_abi::hostcheck::Window, end: bool);
}

impl Vmm {
    /// A VMM for `kvm`.
    pub fn new(kvm: Arc<Kvm>, strict: bool, inject: Injector) -> Vmm {
        Vmm {
            kvm,
            strict,
            inject,
            conversions_to_private: PerCpuCounter::default(),
            conversions_to_shared: PerCpuCounter::default(),
            implicit_conversions: PerCpuCounter::default(),
            io: None,
            host_checks: PerCpuCounter::default(),
            host_check_mismatches: PerCpuCounter::default(),
            pages_converted: PerCpuCounter::default(),
            shared_view: None,
            plant_leak: std::sync::atomic::AtomicBool::new(false),
            ept_violations: PerCpuCounter::default(),
            marks: None,
            ram_gfns: None,
            map: None,
            ioapic: Default::default(),
            per_vcpu: (0..COUNTED_VCPUS).map(|_| Default::default()).collect(),
            event_notify: std::sync::Mutex::new(None),
        }
    }

    /// The VM.
    pub fn kvm(&self) -> &Arc<Kvm> {
        &self.kvm
    }

    /// Conversions so far: MapGPA chunks and implicit conversions, both directions.
    pub fn conversions(&self) -> u64 {
        self.conversions_to_private.load(Relaxed) + self.conversions_to_shared.load(Relaxed)
    }

    /// vCPU `vcpu` had `npages` pages converted (a MapGPA chunk or an implicit conversion).
    pub(crate) fn note_vcpu_conversion(&self, vcpu: u32, npages: u64) {
        if let Some([n, pages]) = self.per_vcpu.get(vcpu as usize) {
            n.fetch_add(1, Relaxed);
            pages.fetch_add(npages, Relaxed);
        }
    }

    /// Conversions and pages the VMM served for `vcpu` so far.
    pub fn vcpu_conversions(&self, vcpu: u32) -> (u64, u64) {
        (self.per_vcpu.get(vcpu as usize))
            .map_or((0, 0), |[n, p]| (n.load(Relaxed), p.load(Relaxed)))
    }

    /// Is `gfn` guest RAM (inside one of QEMU's RAM blocks)?
    fn is_ram(&self, gfn: u64) -> bool {
        match &self.ram_gfns {
            Some(r) => r.iter().any(|(s, e)| (*s..*e).contains(&gfn)),
            None => gfn < self.kvm.config().mem_pages,
        }
    }

    /// A measurement mark (`HostCheckOp::Mark`): R12 the window, R13 0 at its start, 1 at its
    /// end; handed to the runner's accounting, if any. A bad window or phase is INVALID_OPERAND.
    fn mark(&self, vcpu: u32, regs: &mut tdcall::Regs) {
        let window = shared_abi::hostcheck::Window::from_number(regs.r12);
        let (Some(window), 0..=1) = (window, regs.r13) else {
            (regs.r10, regs.r11) = (shared_abi::VmcallStatus::INVALID_OPERAND.0, u64::MAX);
            return;
        };
        if let Some(sink) = &self.marks {
            sink.mark(self, vcpu, window, regs.r13 == 1);
        }
        regs.r10 = 0;
    }

    /// `kvm_convert_memory` (QEMU's `accel/kvm/kvm-all.c`): set the attributes, then discard the other alias's backing
    /// (shared pages on to-private, guest_memfd pages on to-shared).
    pub(crate) fn kvm_convert_memory(
        &self,
        start_gfn: u64,
        npages: u64,
        to: ConversionTarget,
    ) -> Result<(), ConvertError> {
        // A range with no RAM block at its start — the 32-bit PCI hole, MMIO such as the
        // IOAPIC at 0xfec00000, anything above RAM: QEMU 10.1's `kvm_convert_memory`
        // (`accel/kvm/kvm-all.c`) finds no memory region there (or a non-RAM one) and ignores
        // a conversion to shared — OVMF maps its MMIO windows shared this way — and fails one
        // to private. This is checked before the range's end, as QEMU looks at the region
        // first.
        if !self.is_ram(start_gfn) {
            return match to {
                ConversionTarget::Shared => Ok(()),
                ConversionTarget::Private => Err(ConvertError::OutsideMemory { start_gfn, npages }),
            };
        }
        let end = start_gfn
            .checked_add(npages)
            .filter(|e| *e <= self.kvm.config().mem_pages);
        let Some(end) = end else {
            return Err(ConvertError::OutsideMemory { start_gfn, npages });
        };
        let _s = tracing::debug_span!(target: "vmm", "kvm_convert_memory", gpa = %Gpa(start_gfn << 12), npages, to = to.name()).entered();
        self.kvm
            .kvm_vm_set_mem_attributes(start_gfn, end, MemoryAttributes::for_target(to))?;
        self.pages_converted.fetch_add(npages, Relaxed);
        if let Some(m) = &self.map {
            m.conversion(start_gfn, npages, to);
        }
        match to {
            ConversionTarget::Private => {
                self.kvm
                    .backend()
                    .discard(Alias::Shared, start_gfn, npages)?;
                self.conversions_to_private.fetch_add(1, Relaxed);
                if self.kvm.config().beyond.prefault {
                    self.kvm.kvm_arch_vcpu_pre_fault_memory(start_gfn, end);
                }
            }
            ConversionTarget::Shared => {
                self.kvm.kvm_gmem_punch_hole(start_gfn, end)?;
                self.conversions_to_shared.fetch_add(1, Relaxed);
            }
        }
        Ok(())
    }
}

/// Why the VMM could not convert a range.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ConvertError {
    /// The range is not inside guest RAM.
    #[error("conversion of gfns {start_gfn:#x}+{npages} is outside guest memory")]
    OutsideMemory {
        /// First GFN.
        start_gfn: u64,
        /// Pages.
        npages: u64,
    },
    /// KVM bugged the VM while setting the attributes or punching the hole.
    #[error(transparent)]
    Kvm(#[from] KvmBug),
    /// Discarding the other alias's backing failed.
    #[error("discarding the shared backing: {0}")]
    Backend(#[from] BackendError),
}

impl VmmExits for Vmm {
    fn hc_map_gpa_range(&self, vcpu: u32, args: MapGpaRangeArgs) -> Result<(), HypercallFailed> {
        let npages = args.npages * args.page_size.pages_4k();
        self.kvm_convert_memory(args.gpa.0 >> 12, npages, args.to)
            .map_err(|e| HypercallFailed(Box::new(e)))?;
        self.note_vcpu_conversion(vcpu, npages);
        Ok(())
    }

    fn io(
        &self,
        vcpu: u32,
        size: u8,
        write: bool,
        port: u16,
        data: u32,
    ) -> Result<u32, shared_abi::VmcallStatus> {
        use shared_abi::fw_cfg::dma;
        let Some(io) = &self.io else {
            return Err(shared_abi::VmcallStatus::SUBFUNC_UNSUPPORTED);
        };
        // fw_cfg's DMA register reaches guest memory: QEMU's view of it, the shared backing.
        match &self.shared_view {
            Some(view) if (dma::PORT..dma::PORT + 8).contains(&port) => {
                Ok(io.fw_cfg_dma(port - dma::PORT, size, write, data, view.as_ref()))
            }
            _ => Ok(io.io(vcpu, size, write, port, data)),
        }
    }

    /// SYNC_SHARED / SYNC_PRIVATE: look at the shared backing from the host's side.
    fn host_check(&self, vcpu: u32, regs: &mut tdcall::Regs) {
        use shared_abi::hostcheck::{HostCheckOp, HOST_CHECK_MAX_LEN};
        let bad = |regs: &mut tdcall::Regs| {
            (regs.r10, regs.r11) = (shared_abi::VmcallStatus::INVALID_OPERAND.0, u64::MAX)
        };
        let Some(op) = HostCheckOp::from_number(regs.r11) else {
            return bad(regs);
        };
        if op == HostCheckOp::Mark {
            return self.mark(vcpu, regs);
        }
        let (gpa, len, expect, new) = (regs.r12, regs.r13, regs.r14 as u8, regs.r15 as u8);
        let mem = self.kvm.config().mem_pages << 12;
        if gpa % 4096 != 0
            || len % 4096 != 0
            || len == 0
            || len > HOST_CHECK_MAX_LEN
            || gpa.checked_add(len).is_none_or(|e| e > mem)
        {
            return bad(regs);
        }
        if op == HostCheckOp::PunchHole {
            // The attribute stays private; KVM zaps the private leaves (BLOCK, TRACK,
            // REMOVE) and the backing is discarded. The guest must re-accept.
            let (start, end) = (gpa >> 12, (gpa + len) >> 12);
            if !self
                .kvm
                .attributes()
                .range_has(start, end, MemoryAttributes::PRIVATE)
            {
                return bad(regs);
            }
            if let Err(e) = self.kvm.kvm_gmem_punch_hole(start, end) {
                tracing::error!(target: "vmm", "PUNCH_HOLE: {e}");
                regs.r10 = shared_abi::VmcallStatus::INVALID_OPERAND.0;
                return;
            }
            self.host_checks.fetch_add(1, Relaxed);
            regs.r10 = 0;
            return;
        }
        let Some(view) = &self.shared_view else {
            regs.r10 = shared_abi::VmcallStatus::SUBFUNC_UNSUPPORTED.0;
            return;
        };
        if op == HostCheckOp::SyncPrivate && self.plant_leak.load(Relaxed) {
            view.write(gpa + 123, &[0x33]);
        }
        let mut buf = vec![0u8; len as usize];
        if !view.read(gpa, &mut buf) {
            regs.r10 = shared_abi::VmcallStatus::INVALID_OPERAND.0;
            return;
        }
        self.host_checks.fetch_add(1, Relaxed);
        if let Some(i) = buf.iter().position(|b| *b != expect) {
            self.host_check_mismatches.fetch_add(1, Relaxed);
            tracing::warn!(target: "vmm", vcpu, op = op.name(), gpa, offset = i, found = buf[i], expect, "host check mismatch");
            (regs.r10, regs.r11, regs.r12) = (
                shared_abi::VmcallStatus::INVALID_OPERAND.0,
                i as u64,
                buf[i] as u64,
            );
            return;
        }
        if op == HostCheckOp::SyncShared {
            buf.fill(new);
            view.write(gpa, &buf);
        }
        regs.r10 = 0;
    }

    /// Nothing in the emulated TD raises an interrupt, so a halted vCPU sleeps until the TD
    /// stops (its exit, a signal, the timeout).
    fn halt(&self, _vcpu: u32, _interrupts_blocked: bool) {
        if let Some(io) = &self.io {
            while !io.stop.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }

    fn report_fatal_error(&self, vcpu: u32, regs: &tdcall::Regs) {
        if let Some(io) = &self.io {
            io.report_fatal_error(vcpu, regs);
        }
    }

    /// QEMU's `tdx_handle_get_tdvmcall_info`: the optional TDVMCALLs userspace serves —
    /// SetupEventNotifyInterrupt only (QEMU 10.1's SUPPORTED_TDVMCALLINFO_1_R11, as KVM
    /// 6.16 offers it in `user_tdvmcallinfo_1_r11`; no R12 bits).
    fn get_tdvmcall_info_1(&self, _vcpu: u32) -> [u64; 4] {
        [
            super::tdx::TDVMCALLINFO_SETUP_EVENT_NOTIFY_INTERRUPT,
            0,
            0,
            0,
        ]
    }

    fn get_quote(&self, _vcpu: u32, gpa: Gpa, size: u64) -> shared_abi::VmcallStatus {
        self.tdx_handle_get_quote(gpa, size)
    }

    fn setup_event_notify_interrupt(&self, vcpu: u32, vector: u8) -> shared_abi::VmcallStatus {
        self.tdx_handle_setup_event_notify_interrupt(vcpu, vector)
    }

    /// KVM writes guest memory through the memslot's userspace mapping: QEMU's view of the
    /// shared backing, which covers RAM only.
    fn kvm_write_guest(&self, gpa: Gpa, bytes: &[u8]) -> bool {
        let Some(last) = gpa.0.checked_add(bytes.len().saturating_sub(1) as u64) else {
            return false;
        };
        let in_ram = ((gpa.0 >> 12)..=(last >> 12)).all(|g| self.is_ram(g));
        in_ram
            && self
                .shared_view
                .as_ref()
                .is_some_and(|v| v.write(gpa.0, bytes))
    }

    /// `kvm_arch_handle_exit` < 0: QEMU stops the VM (RUN_STATE_INTERNAL_ERROR); tdxlab ends
    /// the run with exit kind `fatal`.
    fn kvm_internal_error(&self, vcpu: u32, why: &str) {
        tracing::warn!(target: "vmm", vcpu, "KVM internal error: {why}");
        if let Some(io) = &self.io {
            io.finish(super::GuestExit {
                kind: crate::exit::ExitKind::Fatal,
                code: 0,
                message: format!("vCPU {vcpu}: KVM internal error (QEMU stops the VM): {why}"),
            });
        }
    }

    fn map_gpa_event_pending(&self, _vcpu: u32) -> bool {
        let hit = self.inject.retry.hit_then(|_| ()).is_some();
        if hit {
            self.inject.retries.fetch_add(1, Relaxed);
        }
        hit
    }
}
