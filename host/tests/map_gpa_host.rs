//! KVM's and the VMM's handling of TDG.VP.VMCALL<MapGPA>: validation, chunking, RETRY.

use shared_abi::convert::{ConversionTarget, MapGpaRangeArgs};
use shared_abi::vmcall::Subfunction;
use shared_abi::{Gpa, GpaRange, Gpaw, VmcallStatus};
use std::sync::{Arc, Mutex};
use tdcall::{Regs, Tdx, Transport};
use tdxlab::kvm::{HypercallFailed, Kvm, KvmConfig, NullBackend, VmmExits};
use tdxlab::seam::{SimPrivateMem, TdParams, TdxModule};
use tdxlab::vmm::{handle_tdcall, Injector, Vmm};

const S: u64 = 1 << 47;
const PAGES: u64 = 4096; // 16 MiB

fn td() -> (Arc<TdxModule>, Arc<Kvm>) {
    td_at(Gpaw::GPAW_48)
}

fn td_at(gpaw: Gpaw) -> (Arc<TdxModule>, Arc<Kvm>) {
    let t = TdxModule::runnable(
        TdParams {
            gpaw,
            attributes: 0,
            num_vcpus: 1,
            max_vcpus: 1,
        },
        Arc::new(SimPrivateMem::new(PAGES)),
    );
    let kvm = Arc::new(Kvm::new(
        KvmConfig::td(PAGES, gpaw),
        Some(t.clone()),
        Arc::new(NullBackend),
    ));
    (t, kvm)
}

/// A VMM that records the chunks it is handed, and can have an event always pending.
#[derive(Default)]
struct Recorder {
    chunks: Mutex<Vec<MapGpaRangeArgs>>,
    event_pending: bool,
    fail: bool,
}

impl VmmExits for Recorder {
    fn hc_map_gpa_range(&self, _: u32, args: MapGpaRangeArgs) -> Result<(), HypercallFailed> {
        self.chunks.lock().unwrap().push(args);
        if self.fail {
            return Err(HypercallFailed("the test's VMM refuses".into()));
        }
        Ok(())
    }
    fn map_gpa_event_pending(&self, _: u32) -> bool {
        self.event_pending
    }
}

fn vmcall(kvm: &Kvm, vmm: &dyn VmmExits, gpa: u64, size: u64) -> Regs {
    let mut r = Regs {
        r11: Subfunction::MapGpa as u64,
        r12: gpa,
        r13: size,
        ..Regs::default()
    };
    kvm.tdx_emulate_vmcall(0, &mut r, vmm);
    r
}

/// The widths the host may give a TD: architectural, and a small-MAXPHYADDR host's own.
const GPAWS: [u8; 4] = [39, 46, 48, 52];

#[test]
fn kvm_validates_like_tdx_map_gpa() {
    for bits in GPAWS {
        let (_, kvm) = td_at(Gpaw::emulated(bits).unwrap());
        let s = 1u64 << (bits - 1);
        let rec = Recorder::default();
        let cases = [
            (0x1000 + 0x10, 0x1000, VmcallStatus::ALIGN_ERROR),
            (0x1000, 0x800, VmcallStatus::ALIGN_ERROR),
            (0x1000, 0, VmcallStatus::INVALID_OPERAND),
            (s - 0x1000, 0x2000, VmcallStatus::INVALID_OPERAND),
            (1 << bits, 0x1000, VmcallStatus::INVALID_OPERAND),
            (!0xFFF, 0x2000, VmcallStatus::INVALID_OPERAND),
            // KVM checks the range before the alignment: a misaligned request that also
            // crosses the shared bit or leaves the GPA space is INVALID_OPERAND.
            (s - 0x800, 0x1000, VmcallStatus::INVALID_OPERAND),
            ((1 << bits) + 0x10, 0x1000, VmcallStatus::INVALID_OPERAND),
            (0x1000, 0x1800, VmcallStatus::ALIGN_ERROR),
        ];
        for (gpa, size, status) in cases {
            let r = vmcall(&kvm, &rec, gpa, size);
            assert_eq!(
                (VmcallStatus(r.r10), r.r11),
                (status, gpa),
                "GPAW {bits}: gpa {gpa:#x} size {size:#x}"
            );
        }
        assert!(
            rec.chunks.lock().unwrap().is_empty(),
            "nothing reached the VMM"
        );
    }
}

#[test]
fn kvm_forwards_at_most_2m_per_exit() {
    for bits in GPAWS {
        let (_, kvm) = td_at(Gpaw::emulated(bits).unwrap());
        let rec = Recorder::default();
        let r = vmcall(&kvm, &rec, 0x20_0000 | 1 << (bits - 1), 5 << 20);
        assert_eq!(VmcallStatus(r.r10), VmcallStatus::SUCCESS);
        let chunks = rec.chunks.lock().unwrap();
        let got: Vec<(u64, u64, ConversionTarget)> =
            chunks.iter().map(|a| (a.gpa.0, a.npages, a.to)).collect();
        assert_eq!(
            got,
            vec![
                (0x20_0000, 512, ConversionTarget::Shared),
                (0x40_0000, 512, ConversionTarget::Shared),
                (0x60_0000, 256, ConversionTarget::Shared)
            ],
            "GPAW {bits}: shared bit stripped, 4K pages, <= 2 MiB each"
        );
    }
}

#[test]
fn a_pending_event_answers_retry_between_chunks_with_the_resume_gpa_in_the_request_alias() {
    let (_, kvm) = td();
    let rec = Recorder {
        event_pending: true,
        ..Default::default()
    };
    // 5 MiB from 1 MiB: the first 2 MiB chunk goes through, then RETRY at its end.
    let r = vmcall(&kvm, &rec, 0x10_0000 | S, 5 << 20);
    assert_eq!(
        (VmcallStatus(r.r10), r.r11),
        (VmcallStatus::RETRY, 0x30_0000 | S)
    );
    let r = vmcall(&kvm, &rec, 0x10_0000, 5 << 20);
    assert_eq!(
        (VmcallStatus(r.r10), r.r11),
        (VmcallStatus::RETRY, 0x30_0000),
        "to private: no shared bit"
    );
    // One chunk (≤ 2 MiB) has no point between chunks: it completes whatever is pending.
    let r = vmcall(&kvm, &rec, 0x40_0000 | S, 2 << 20);
    assert_eq!(VmcallStatus(r.r10), VmcallStatus::SUCCESS);
    let chunks = rec.chunks.lock().unwrap();
    assert!(
        chunks.iter().all(|c| c.npages == 512),
        "every chunk forwarded whole"
    );
}

#[test]
fn a_vmm_failure_is_invalid_operand_at_the_failing_chunk() {
    let (_, kvm) = td();
    let rec = Recorder {
        fail: true,
        ..Default::default()
    };
    let r = vmcall(&kvm, &rec, 0x40_0000, 0x1000);
    assert_eq!(
        (VmcallStatus(r.r10), r.r11),
        (VmcallStatus::INVALID_OPERAND, 0x40_0000)
    );
}

/// The guest's tdcall crate talking to the emulated host directly.
struct Host<'a> {
    seam: &'a TdxModule,
    vmm: &'a Vmm,
}
impl Transport for Host<'_> {
    fn call(&mut self, regs: &mut Regs) {
        handle_tdcall(self.seam, self.vmm, 0, regs).unwrap();
    }
}

#[test]
fn guest_loop_completes_against_injected_retries_and_sets_attributes() {
    let (seam, kvm) = td();
    let vmm = Vmm::new(kvm.clone(), false, Injector::new(0.7, 5));
    let mut tdx = Tdx::new(Host {
        seam: &seam,
        vmm: &vmm,
    });
    let range = GpaRange::new(Gpa(0x10_0000), 3 << 20);
    let stats = tdx
        .map_gpa(range, ConversionTarget::Shared, Gpaw::GPAW_48)
        .unwrap();
    assert!(
        stats.retries > 0
            && vmm
                .inject
                .retries
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
    );
    let attrs = kvm.attributes();
    assert!(attrs.range_has(
        0x100,
        0x100 + 768,
        shared_abi::convert::MemoryAttributes::SHARED
    ));
    assert!(
        attrs.get(0xFF).is_private() && attrs.get(0x100 + 768).is_private(),
        "nothing outside the range changed"
    );
    // And back, with accept: the pages come back zeroed and accepted once.
    tdx.map_gpa(range, ConversionTarget::Private, Gpaw::GPAW_48)
        .unwrap();
    let acc = tdx.accept(range).unwrap();
    assert_eq!(
        (acc.total_accepted(), acc.already_accepted_bytes),
        (3 << 20, 0)
    );
    assert!(kvm.check_invariants().is_empty());
}

#[test]
fn hlt_and_msr_tdvmcalls_get_ghci_statuses() {
    let (_, kvm) = td();
    let rec = Recorder::default();
    let call = |sub: Subfunction, r12: u64| {
        let mut r = Regs {
            r11: sub as u64,
            r12,
            ..Regs::default()
        };
        kvm.tdx_emulate_vmcall(0, &mut r, &rec);
        VmcallStatus(r.r10)
    };
    assert_eq!(call(Subfunction::Hlt, 0), VmcallStatus::SUCCESS);
    // KVM emulates the APIC base (`tdx_has_emulated_msr`) and keeps it read-only.
    assert_eq!(call(Subfunction::Rdmsr, 0x1B), VmcallStatus::SUCCESS);
    assert_eq!(
        call(Subfunction::Wrmsr, 0x1B),
        VmcallStatus::INVALID_OPERAND
    );
    assert_eq!(
        call(Subfunction::Rdmsr, 0x10),
        VmcallStatus::INVALID_OPERAND,
        "the TSC is not KVM's to emulate"
    );
    // A KVM hypercall through TDVMCALL: R10 is the number, the answer comes back in R10.
    let hypercall = |nr: u64| {
        let mut r = Regs {
            r10: nr,
            ..Regs::default()
        };
        kvm.tdx_emulate_vmcall(0, &mut r, &rec);
        r.r10
    };
    assert_eq!(hypercall(1), 0, "KVM_HC_VAPIC_POLL_IRQ");
    assert_eq!(
        hypercall(0x1234),
        tdxlab::kvm::KVM_ENOSYS.wrapping_neg(),
        "an unknown KVM hypercall is -KVM_ENOSYS"
    );
    // KVM_HC_MAP_GPA_RANGE with no pages: KVM's -KVM_EINVAL before userspace.
    assert_eq!(hypercall(12), 22u64.wrapping_neg());
}

/// The TDVMCALLs KVM serves or checks itself before userspace, with KVM's statuses.
#[test]
fn kvm_checks_get_quote_event_notify_mmio_and_serves_cpuid_and_vmcall_info() {
    let (_, kvm) = td();
    let rec = Recorder::default();
    let call = |sub: Subfunction, r12: u64, r13: u64, r14: u64| {
        let mut r = Regs {
            r11: sub as u64,
            r12,
            r13,
            r14,
            r15: 0xAB,
            ..Regs::default()
        };
        kvm.tdx_emulate_vmcall(0, &mut r, &rec);
        r
    };
    let status = |r: &Regs| VmcallStatus(r.r10);
    // GetQuote: a private buffer is refused by KVM; a shared one reaches the VMM, which has
    // no quote service.
    assert_eq!(
        status(&call(Subfunction::GetQuote, 0x1000, 0x1000, 0)),
        VmcallStatus::INVALID_OPERAND
    );
    assert_eq!(
        status(&call(Subfunction::GetQuote, 0x1000 | S, 0x1000, 0)),
        VmcallStatus::SUBFUNC_UNSUPPORTED
    );
    // SetupEventNotifyInterrupt: vectors 32..=255 only.
    for v in [0, 31, 256] {
        assert_eq!(
            status(&call(Subfunction::SetupEventNotifyInterrupt, v, 0, 0)),
            VmcallStatus::INVALID_OPERAND,
            "vector {v}"
        );
    }
    assert_eq!(
        status(&call(Subfunction::SetupEventNotifyInterrupt, 32, 0, 0)),
        VmcallStatus::SUBFUNC_UNSUPPORTED
    );
    // #VE.RequestMMIO: size, direction, shared GPA; nothing mapped there reads 0.
    assert_eq!(
        status(&call(Subfunction::RequestMmio, 3, 0, S | 0x1000)),
        VmcallStatus::INVALID_OPERAND
    );
    assert_eq!(
        status(&call(Subfunction::RequestMmio, 4, 2, S | 0x1000)),
        VmcallStatus::INVALID_OPERAND
    );
    assert_eq!(
        status(&call(Subfunction::RequestMmio, 4, 0, 0x1000)),
        VmcallStatus::INVALID_OPERAND,
        "private GPA"
    );
    assert_eq!(
        status(&call(Subfunction::RequestMmio, 8, 0, S - 4)),
        VmcallStatus::INVALID_OPERAND,
        "straddles the shared bit"
    );
    let r = call(Subfunction::RequestMmio, 4, 0, S | 0xFEC0_0000);
    assert_eq!((status(&r), r.r11), (VmcallStatus::SUCCESS, 0));
    // GetTdVmCallInfo: leaf 0 and 1 succeed with zeroes here, others are refused.
    for leaf in [0, 1] {
        let r = call(Subfunction::GetTdVmCallInfo, leaf, 7, 7);
        assert_eq!(
            (status(&r), r.r11, r.r12, r.r13, r.r14),
            (VmcallStatus::SUCCESS, 0, 0, 0, 0)
        );
    }
    assert_eq!(
        status(&call(Subfunction::GetTdVmCallInfo, 2, 0, 0)),
        VmcallStatus::INVALID_OPERAND
    );
    // Instruction.CPUID: from the vCPU's table (KVM_SET_CPUID2), zeros where it has nothing.
    kvm.kvm_set_cpuid(vec![tdxlab::kvm::CpuidEntry {
        function: 0x4000_0000,
        index: 0,
        significant_index: false,
        regs: [0x4000_0001, 0x4b4d564b, 0x564b4d56, 0x4d],
    }]);
    let r = call(Subfunction::Cpuid, 0x4000_0000, 0, 0);
    assert_eq!(
        (status(&r), r.r12, r.r13, r.r14, r.r15),
        (
            VmcallStatus::SUCCESS,
            0x4000_0001,
            0x4b4d564b,
            0x564b4d56,
            0x4d
        )
    );
    let r = call(Subfunction::Cpuid, 0x4000_0002, 0, 0);
    assert_eq!((r.r12, r.r13, r.r14, r.r15), (0, 0, 0, 0));
    // A sub-function KVM does not know (Instruction.WBINVD).
    assert_eq!(
        status(&call(Subfunction::Wbinvd, 0, 0, 0)),
        VmcallStatus::SUBFUNC_UNSUPPORTED
    );
}

/// TDVMCALL<HLT> blocks the vCPU as KVM does; nothing in the emulated TD wakes it, so it
/// returns (SUCCESS) only once the TD stops.
#[test]
fn hlt_blocks_until_the_td_stops() {
    let (_, kvm) = td();
    let mut vmm = Vmm::new(kvm.clone(), false, Injector::new(0.0, 1));
    vmm.io = Some(tdxlab::vmm::GuestIo::new(1, false));
    let vmm = Arc::new(vmm);
    let (k, v) = (kvm.clone(), vmm.clone());
    let halted = std::thread::spawn(move || {
        let mut r = Regs {
            r11: Subfunction::Hlt as u64,
            r12: 1,
            r10: 0,
            ..Regs::default()
        };
        k.tdx_emulate_vmcall(0, &mut r, &*v);
        VmcallStatus(r.r10)
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(!halted.is_finished(), "the halted vCPU is still blocked");
    vmm.io
        .as_ref()
        .unwrap()
        .stop
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(halted.join().unwrap(), VmcallStatus::SUCCESS);
}

/// MapGPA over a range with no RAM (the 32-bit PCI hole), as QEMU's `kvm_convert_memory`
/// treats it: to shared succeeds and changes nothing (OVMF maps its MMIO windows shared so),
/// to private fails (INVALID_OPERAND from KVM, R11 at the chunk).
#[test]
fn mapgpa_over_a_hole_is_ignored_to_shared_and_refused_to_private() {
    let (_, kvm) = td();
    let mut vmm = Vmm::new(kvm.clone(), false, Injector::new(0.0, 1));
    vmm.ram_gfns = Some(vec![(0, 0x800)]); // RAM below 8 MiB, a hole above
    let call = |gpa: u64| {
        let mut r = Regs {
            r11: Subfunction::MapGpa as u64,
            r12: gpa,
            r13: 2 << 20,
            ..Regs::default()
        };
        kvm.tdx_emulate_vmcall(0, &mut r, &vmm);
        (VmcallStatus(r.r10), r.r11)
    };
    assert_eq!(call(0x80_0000 | S).0, VmcallStatus::SUCCESS);
    assert!(
        kvm.attributes()
            .range_has(0x800, 0xA00, shared_abi::convert::MemoryAttributes::PRIVATE),
        "nothing converted in the hole"
    );
    assert_eq!(call(0x80_0000), (VmcallStatus::INVALID_OPERAND, 0x80_0000));
    // RAM still converts.
    assert_eq!(call(0x40_0000 | S).0, VmcallStatus::SUCCESS);
    assert!(kvm.attributes().range_has(
        0x400,
        0x600,
        shared_abi::convert::MemoryAttributes::SHARED
    ));
}
