//! A 4K ACCEPT inside a 2 MiB page KVM AUGed whole (private mappings up to 2 MiB): the module
//! raises an EPT violation for the smaller request; KVM splits the PENDING leaf (BLOCK, TRACK,
//! DEMOTE) and the re-executed ACCEPT completes in the same TDCALL.

use shared_abi::tdcall::TdcallLeaf;
use shared_abi::{Gpa, Gpaw, PageLevel, TdxStatus};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tdcall::Regs;
use tdxlab::kvm::{FaultOutcome, Kvm, KvmConfig, NullBackend};
use tdxlab::seam::{SimPrivateMem, TdParams, TdxModule};
use tdxlab::vmm::{handle_tdcall, Injector, Vmm};

const PAGES: u64 = 2048; // 8 MiB

#[test]
fn a_4k_accept_inside_a_pending_2m_page_demotes_it_and_completes() {
    let seam = TdxModule::runnable(
        TdParams {
            gpaw: Gpaw::GPAW_48,
            attributes: 0,
            num_vcpus: 1,
            max_vcpus: 1,
        },
        Arc::new(SimPrivateMem::new(PAGES)),
    );
    let mut cfg = KvmConfig::td(PAGES, Gpaw::GPAW_48);
    cfg.private_max_level = PageLevel::Size2M;
    let kvm = Arc::new(Kvm::new(cfg, Some(seam.clone()), Arc::new(NullBackend)));
    let vmm = Vmm::new(kvm.clone(), false, Injector::new(0.0, 1));
    // KVM maps the whole 2 MiB block PENDING (as for a 2 MiB ACCEPT's EPT violation).
    let block = Gpa(0x40_0000);
    assert_eq!(
        kvm.kvm_mmu_page_fault(block, PageLevel::Size2M),
        FaultOutcome::Mapped
    );
    // The guest accepts one 4K page in the middle of it.
    let page = Gpa(block.0 + 0x5000);
    let mut r = Regs {
        rax: TdcallLeaf::MemPageAccept as u64,
        rcx: page.0,
        ..Regs::default()
    };
    handle_tdcall(&seam, &vmm, 0, &mut r).expect("the accept completes");
    assert_eq!(TdxStatus(r.rax), TdxStatus::SUCCESS);
    assert_eq!(
        seam.stats.demote.load(Relaxed),
        1,
        "the 2 MiB leaf was split once"
    );
    assert_eq!(
        vmm.ept_violations.load(Relaxed),
        1,
        "one EPT violation, inside the TDCALL"
    );
    // Its neighbours are still PENDING 4K pages: each accepts once.
    let mut n = Regs {
        rax: TdcallLeaf::MemPageAccept as u64,
        rcx: page.0 + 0x1000,
        ..Regs::default()
    };
    handle_tdcall(&seam, &vmm, 0, &mut n).unwrap();
    assert_eq!(TdxStatus(n.rax), TdxStatus::SUCCESS);
    assert!(kvm.check_invariants().is_empty());
}
