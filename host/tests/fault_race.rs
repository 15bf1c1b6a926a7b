//! Faults racing zaps on several threads never install a stale leaf: every direct leaf maps
//! the frame that backs its GFN *now*, and its GFN is shared; every mirror leaf's GFN is
//! private. Operation sequences are seeded; thread interleavings vary, and the properties
//! must hold for all of them.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shared_abi::convert::MemoryAttributes;
use shared_abi::{Gpa, Gpaw, PageLevel};
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::Arc;
use tdxlab::kvm::{Backend, FaultOutcome, Kvm, KvmConfig, RootKind};
use tdxlab::seam::{TdParams, TdxModule};
use tdxlab::sim::SimBackend;

const PAGES: u64 = 256;

fn stale_direct_leaves(kvm: &Kvm, b: &SimBackend) -> Vec<String> {
    kvm.root(RootKind::Direct)
        .unwrap()
        .leaves()
        .into_iter()
        .filter(|(gfn, _, pfn)| b.shared.current(*gfn) != Some(*pfn))
        .map(|(gfn, _, pfn)| format!("gfn {gfn:#x} maps retired frame {pfn:#x}"))
        .collect()
}

fn race(seed: u64) {
    let b = Arc::new(SimBackend::new(0, PAGES, PAGES * 64));
    let seam = TdxModule::runnable(
        TdParams {
            gpaw: Gpaw::GPAW_48,
            attributes: 0,
            num_vcpus: 1,
            max_vcpus: 1,
        },
        b.private.clone(),
    );
    let kvm = Arc::new(Kvm::new(
        KvmConfig::td(PAGES, Gpaw::GPAW_48),
        Some(seam),
        b.clone(),
    ));
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let (kvm, stop) = (&kvm, &stop);
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed * 31 + t);
                while !stop.load(Relaxed) {
                    let gfn = rng.random_range(0..PAGES);
                    let gpa = if rng.random_bool(0.5) {
                        Gpaw::GPAW_48.to_shared(Gpa(gfn << 12))
                    } else {
                        Gpa(gfn << 12)
                    };
                    let out = kvm.kvm_mmu_page_fault(gpa, PageLevel::Size4K);
                    assert!(!matches!(out, FaultOutcome::Error(_)), "{out:?}");
                }
            });
        }
        // Stop the faulting threads however this closure ends, so a failed assertion
        // fails the test instead of hanging the scope.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        let mut rng = StdRng::seed_from_u64(seed);
        for step in 0..300 {
            let start = rng.random_range(0..PAGES);
            let end = (start + rng.random_range(1..32)).min(PAGES);
            match rng.random_range(0..3) {
                0 => kvm
                    .kvm_vm_set_mem_attributes(start, end, MemoryAttributes::PRIVATE)
                    .unwrap(),
                1 => kvm
                    .kvm_vm_set_mem_attributes(start, end, MemoryAttributes::SHARED)
                    .unwrap(),
                // The host migrates the pages while the invalidation is in progress: a fault
                // that read the old frame must not install it.
                _ => kvm
                    .kvm_mmu_notifier_invalidate_range(start, end, || {
                        (start..end).for_each(|g| b.shared.migrate(g))
                    })
                    .unwrap(),
            }
            let bad = kvm.check_invariants();
            assert!(bad.is_empty(), "seed {seed} step {step}: {bad:?}");
            let stale = stale_direct_leaves(&kvm, &b);
            assert!(stale.is_empty(), "seed {seed} step {step}: {stale:?}");
        }
    });
    assert!(
        kvm.stats.installed_direct.load(Relaxed) > 0
            && kvm.stats.installed_mirror.load(Relaxed) > 0
    );
    let _ = b.shared_pfn(0);
}

#[test]
fn faults_racing_zaps_never_install_a_stale_leaf() {
    for seed in 1..=4 {
        race(seed);
    }
}
