//! What KVM 6.16 and QEMU 10.1 answer to the TDVMCALLs beyond MapGPA: KVM hypercalls,
//! GetTdVmCallInfo, GetQuote, SetupEventNotifyInterrupt, Instruction.IO, RDMSR/WRMSR, and
//! MapGPA to shared where there is no RAM.

use shared_abi::convert::MemoryAttributes;
use shared_abi::vmcall::Subfunction;
use shared_abi::{Gpaw, VmcallStatus};
use std::sync::{Arc, Mutex};
use tdcall::Regs;
use tdxlab::exit::ExitKind;
use tdxlab::kvm::{Kvm, KvmConfig, NullBackend};
use tdxlab::seam::{SimPrivateMem, TdParams, TdxModule};
use tdxlab::vmm::{GuestIo, Injector, SharedView, Vmm};

const S: u64 = 1 << 47;
const PAGES: u64 = 4096; // 16 MiB
const VCPUS: u32 = 2;

/// QEMU's view of the shared backing, as a plain buffer over all of RAM.
struct View(Mutex<Vec<u8>>);

impl SharedView for View {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let m = self.0.lock().unwrap();
        let Some(src) = m.get(gpa as usize..gpa as usize + buf.len()) else {
            return false;
        };
        buf.copy_from_slice(src);
        true
    }
    fn write(&self, gpa: u64, buf: &[u8]) -> bool {
        let mut m = self.0.lock().unwrap();
        let Some(dst) = m.get_mut(gpa as usize..gpa as usize + buf.len()) else {
            return false;
        };
        dst.copy_from_slice(buf);
        true
    }
}

struct Host {
    kvm: Arc<Kvm>,
    vmm: Vmm,
    view: Arc<View>,
}

fn host() -> Host {
    let td = TdxModule::runnable(
        TdParams {
            gpaw: Gpaw::GPAW_48,
            attributes: 0,
            num_vcpus: VCPUS,
            max_vcpus: VCPUS,
        },
        Arc::new(SimPrivateMem::new(PAGES)),
    );
    let kvm = Arc::new(Kvm::new(
        KvmConfig::td(PAGES, Gpaw::GPAW_48),
        Some(td),
        Arc::new(NullBackend),
    ));
    let view = Arc::new(View(Mutex::new(vec![0; (PAGES << 12) as usize])));
    let mut vmm = Vmm::new(kvm.clone(), false, Injector::new(0.0, 1));
    vmm.io = Some(GuestIo::new(VCPUS, false).with_platform(VCPUS, true));
    vmm.shared_view = Some(view.clone());
    Host { kvm, vmm, view }
}

impl Host {
    fn call(&self, regs: Regs) -> Regs {
        let mut r = regs;
        self.kvm.tdx_emulate_vmcall(0, &mut r, &self.vmm);
        r
    }
    fn vmcall(&self, sub: Subfunction, r12: u64, r13: u64, r14: u64, r15: u64) -> Regs {
        self.call(Regs {
            r11: sub as u64,
            r12,
            r13,
            r14,
            r15,
            ..Regs::default()
        })
    }
    fn hypercall(&self, nr: u64, a: [u64; 4]) -> i64 {
        let r = self.call(Regs {
            r10: nr,
            r11: a[0],
            r12: a[1],
            r13: a[2],
            r14: a[3],
            ..Regs::default()
        });
        r.r10 as i64
    }
    fn exit_kind(&self) -> Option<ExitKind> {
        self.vmm.io.as_ref().unwrap().exit().map(|e| e.kind)
    }
}

/// `____kvm_emulate_hypercall`: 9 (clock pairing), 10 (PV IPI) and 12 (MAP_GPA_RANGE, which
/// QEMU enables) are served; unknown numbers are -KVM_ENOSYS.
#[test]
fn kvm_hypercalls_clock_pairing_send_ipi_and_map_gpa_range() {
    let h = host();
    // KVM_HC_CLOCK_PAIRING: only the wall clock; written through the memslot (no shared bit).
    assert_eq!(h.hypercall(9, [0x1000, 1, 0, 0]), -95, "KVM_EOPNOTSUPP");
    assert_eq!(h.hypercall(9, [0x1000 | S, 0, 0, 0]), -14, "KVM_EFAULT");
    assert_eq!(h.hypercall(9, [PAGES << 12, 0, 0, 0]), -14, "past RAM");
    assert_eq!(h.hypercall(9, [0x1008, 0, 0, 0]), 0);
    let mut pairing = [0u8; 64];
    assert!(h.view.read(0x1008, &mut pairing));
    let sec = i64::from_le_bytes(pairing[0..8].try_into().unwrap());
    assert!(sec > 1_600_000_000, "the wall clock's seconds: {sec}");
    assert_eq!(&pairing[24..], &[0; 40], "flags and padding zero");

    // KVM_HC_SEND_IPI: the count of target APICs that exist (x2APIC IDs 0 and 1).
    assert_eq!(h.hypercall(10, [0b111, 0, 0, 0x30]), 2);
    assert_eq!(h.hypercall(10, [0b1, 0, 1, 0x30]), 1);
    assert_eq!(h.hypercall(10, [0, 1, 0, 0x30]), 0, "APIC ID 64");
    assert_eq!(
        h.hypercall(10, [0b11, 0, 0, 0x700]),
        0,
        "ExtINT is not accepted"
    );
    assert_eq!(
        h.hypercall(10, [0b1, 0, 0, 0x800 | 0x30]),
        -22,
        "logical mode"
    );
    assert_eq!(h.hypercall(10, [0b1, 0, 0, 0x8_0000]), -22, "a shorthand");

    // KVM_HC_MAP_GPA_RANGE: KVM's checks, then QEMU converts.
    assert_eq!(h.hypercall(12, [0x10_0800, 1, 0, 0]), -22, "unaligned");
    assert_eq!(h.hypercall(12, [0x10_0000, 0, 0, 0]), -22, "no pages");
    assert_eq!(h.hypercall(12, [0x10_0000, u64::MAX, 0, 0]), -22, "wraps");
    assert_eq!(h.hypercall(12, [0x10_0000, 2, 0, 0]), 0);
    assert!(h
        .kvm
        .attributes()
        .range_has(0x100, 0x102, MemoryAttributes::SHARED));
    assert_eq!(
        h.hypercall(12, [0x10_0000, 2, 0x10, 0]),
        0,
        "back to private"
    );
    assert!(h
        .kvm
        .attributes()
        .range_has(0x100, 0x102, MemoryAttributes::PRIVATE));
    // The shared bit goes to QEMU as it is: no memory there, so to shared is ignored...
    assert_eq!(h.hypercall(12, [0x10_0000 | S, 2, 0, 0]), 0);
    assert!(h
        .kvm
        .attributes()
        .range_has(0x100, 0x102, MemoryAttributes::PRIVATE));
    assert_eq!(h.exit_kind(), None);
    // ... and to private stops the VM (QEMU's kvm_arch_handle_exit fails).
    h.hypercall(12, [0x10_0000 | S, 2, 0x10, 0]);
    assert_eq!(h.exit_kind(), Some(ExitKind::Fatal));

    assert_eq!(h.hypercall(13, [0; 4]), -1000, "KVM_ENOSYS");
    assert_eq!(h.hypercall(1, [0; 4]), 0);
}

/// GetTdVmCallInfo leaf 1 is QEMU's: SetupEventNotifyInterrupt (R11 bit 1), nothing in R12.
#[test]
fn get_tdvmcall_info_leaf_1_offers_setup_event_notify_interrupt() {
    let h = host();
    let r = h.vmcall(Subfunction::GetTdVmCallInfo, 1, 7, 7, 0);
    assert_eq!(
        (VmcallStatus(r.r10), r.r11, r.r12, r.r13, r.r14),
        (VmcallStatus::SUCCESS, 1 << 1, 0, 0, 0)
    );
    let r = h.vmcall(Subfunction::GetTdVmCallInfo, 2, 0, 0, 0);
    assert_eq!(VmcallStatus(r.r10), VmcallStatus::INVALID_OPERAND);
}

/// GetQuote with no quote service: QEMU checks the buffer and the header, then answers
/// SUCCESS with GET_QUOTE_SERVICE_UNAVAILABLE in the header.
#[test]
fn get_quote_checks_the_buffer_and_reports_no_quote_service() {
    let h = host();
    let buf = 0x20_0000u64;
    let header = |version: u64, in_len: u32| {
        let mut b = [0u8; 24];
        b[0..8].copy_from_slice(&version.to_le_bytes());
        b[16..20].copy_from_slice(&in_len.to_le_bytes());
        assert!(h.view.write(buf, &b));
    };
    let quote =
        |gpa: u64, len: u64| VmcallStatus(h.vmcall(Subfunction::GetQuote, gpa, len, 0, 0).r10);
    header(1, 16);
    assert_eq!(
        quote(buf, 0x1000),
        VmcallStatus::INVALID_OPERAND,
        "private GPA (KVM)"
    );
    assert_eq!(quote(buf | S, 0), VmcallStatus::INVALID_OPERAND, "empty");
    assert_eq!(quote((buf + 8) | S, 0x1000), VmcallStatus::ALIGN_ERROR);
    assert_eq!(quote(buf | S, 0x800), VmcallStatus::ALIGN_ERROR);
    assert_eq!(
        quote(buf | S, 0x21000),
        VmcallStatus::INVALID_OPERAND,
        "over 128 KiB"
    );
    header(1, 0x1000 - 24 + 1);
    assert_eq!(
        quote(buf | S, 0x1000),
        VmcallStatus::INVALID_OPERAND,
        "in_len too long"
    );
    header(2, 16);
    assert_eq!(
        quote(buf | S, 0x1000),
        VmcallStatus::INVALID_OPERAND,
        "version 2"
    );
    assert_eq!(
        quote((PAGES << 12) | S, 0x1000),
        VmcallStatus::INVALID_OPERAND,
        "no RAM"
    );
    header(1, 16);
    assert_eq!(quote(buf | S, 0x1000), VmcallStatus::SUCCESS);
    let mut b = [0u8; 24];
    h.view.read(buf, &mut b);
    assert_eq!(
        u64::from_le_bytes(b[8..16].try_into().unwrap()),
        tdxlab::vmm::GET_QUOTE_QGS_UNAVAILABLE
    );
}

/// SetupEventNotifyInterrupt: KVM refuses vectors below 32, QEMU takes the others.
#[test]
fn setup_event_notify_interrupt_succeeds_for_a_valid_vector() {
    let h = host();
    let r = h.vmcall(Subfunction::SetupEventNotifyInterrupt, 31, 0, 0, 0);
    assert_eq!(VmcallStatus(r.r10), VmcallStatus::INVALID_OPERAND);
    let r = h.vmcall(Subfunction::SetupEventNotifyInterrupt, 0xec, 0, 0, 0);
    assert_eq!(VmcallStatus(r.r10), VmcallStatus::SUCCESS);
    assert_eq!(h.vmm.event_notify(), Some((0xec, 0)));
}

/// `tdx_emulate_io`: the size is the whole R12, the port R14 cut to 16 bits.
#[test]
fn instruction_io_checks_the_whole_size_and_cuts_the_port() {
    let h = host();
    let r = h.vmcall(Subfunction::Io, 0x101, 0, 0x3fd, 0);
    assert_eq!(
        VmcallStatus(r.r10),
        VmcallStatus::INVALID_OPERAND,
        "size 0x101"
    );
    let r = h.vmcall(Subfunction::Io, 1, 2, 0x3fd, 0);
    assert_eq!(
        VmcallStatus(r.r10),
        VmcallStatus::INVALID_OPERAND,
        "direction 2"
    );
    // COM1's LSR through port 0x1_03fd.
    let r = h.vmcall(Subfunction::Io, 1, 0, 0x1_03fd, 0);
    assert_eq!((VmcallStatus(r.r10), r.r11), (VmcallStatus::SUCCESS, 0x60));
    // An OUT leaves R11 alone.
    let r = h.vmcall(Subfunction::Io, 1, 1, 0x80, 0);
    assert_eq!(
        (VmcallStatus(r.r10), r.r11),
        (VmcallStatus::SUCCESS, Subfunction::Io as u64)
    );
}

/// RDMSR/WRMSR: the MSRs of `tdx_has_emulated_msr`, as `kvm_get/set_msr_common` keeps them.
#[test]
fn rdmsr_and_wrmsr_serve_kvms_emulated_msrs() {
    let h = host();
    let rd = |msr: u64| {
        let r = h.vmcall(Subfunction::Rdmsr, msr, 0, 0, 0);
        (VmcallStatus(r.r10), r.r11)
    };
    let wr = |msr: u64, v: u64| VmcallStatus(h.vmcall(Subfunction::Wrmsr, msr, v, 0, 0).r10);
    assert_eq!(
        rd(0x1b),
        (VmcallStatus::SUCCESS, 0xfee0_0d00),
        "APIC base, BSP"
    );
    assert_eq!(
        rd(0x277),
        (VmcallStatus::SUCCESS, 0x0007_0406_0007_0406),
        "PAT"
    );
    assert_eq!(wr(0x277, 0x0606_0606_0606_0606), VmcallStatus::SUCCESS);
    assert_eq!(rd(0x277), (VmcallStatus::SUCCESS, 0x0606_0606_0606_0606));
    assert_eq!(wr(0x277, 0x0202), VmcallStatus::INVALID_OPERAND, "type 2");
    assert_eq!(
        wr(0xc000_0080, 0xd01),
        VmcallStatus::INVALID_OPERAND,
        "EFER is read-only"
    );
    assert_eq!(
        rd(0x179),
        (VmcallStatus::SUCCESS, 0x0100_010a),
        "MCG_CAP as QEMU sets it"
    );
    assert_eq!(
        rd(0x10).0,
        VmcallStatus::INVALID_OPERAND,
        "the TSC: not KVM's to emulate"
    );
    // R12 is ECX: the upper half is not looked at.
    assert_eq!(rd(0x1_0000_001b).1, 0xfee0_0d00);
}

/// MapGPA to shared where no RAM is (the IOAPIC's page above a small TD's RAM): QEMU's
/// `kvm_convert_memory` ignores it and succeeds.
#[test]
fn mapgpa_to_shared_without_ram_succeeds() {
    let h = host();
    let r = h.vmcall(Subfunction::MapGpa, 0xfec0_0000 | S, 0x1000, 0, 0);
    assert_eq!(VmcallStatus(r.r10), VmcallStatus::SUCCESS);
    let r = h.vmcall(Subfunction::MapGpa, 0xfec0_0000, 0x1000, 0, 0);
    assert_eq!(
        VmcallStatus(r.r10),
        VmcallStatus::INVALID_OPERAND,
        "to private fails"
    );
}

/// Guest-controlled registers never panic the host: random and edge values on every
/// sub-function and the KVM hypercalls, with the TD's I/O devices and memory view in place.
#[test]
fn random_tdvmcalls_never_panic_the_host() {
    use rand::{Rng, SeedableRng};
    let h = host();
    // A halted vCPU returns at once once the TD has stopped.
    let io = h.vmm.io.as_ref().unwrap();
    io.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut rng = rand::rngs::StdRng::seed_from_u64(25);
    let edges = [
        0,
        1,
        2,
        4,
        8,
        0xfff,
        0x1000,
        S,
        S | 0x1000,
        u64::MAX,
        u64::MAX - 0xfff,
        1 << 63,
    ];
    let subs = [
        0xA, 0xC, 0x1E, 0x1F, 0x20, 0x30, 0x10000, 0x10001, 0x10002, 0x10003, 0x10004,
    ];
    let pick = |rng: &mut rand::rngs::StdRng| match rng.random_range(0..3) {
        0 => edges[rng.random_range(0..edges.len())],
        1 => rng.random_range(0..(PAGES << 12)),
        _ => rng.random(),
    };
    for _ in 0..20_000 {
        let r10 = match rng.random_range(0..3) {
            0 => 0,
            1 => [1, 5, 9, 10, 11, 12, 13][rng.random_range(0..7)],
            _ => rng.random(),
        };
        let regs = Regs {
            rcx: rng.random(),
            r10,
            r11: subs[rng.random_range(0..subs.len())],
            r12: pick(&mut rng),
            r13: pick(&mut rng),
            r14: pick(&mut rng),
            r15: pick(&mut rng),
            ..Regs::default()
        };
        h.call(regs);
    }
}
