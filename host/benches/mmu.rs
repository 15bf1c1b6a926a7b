//! MMU benchmarks: zapping 4K and 2M private ranges in 1 GiB and 64 GiB guests (the cost must
//! not grow with guest size), set-attributes over 1 GiB, and fault-in at 4K and 2M.
//!
//! Each guest has a 2 MiB block of private leaves in every GiB, so the tables span the whole
//! guest and a zap that walked more than its range would show it.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use shared_abi::convert::MemoryAttributes;
use shared_abi::{Gpa, Gpaw, PageLevel};
use std::hint::black_box;
use std::sync::Arc;
use tdxlab::kvm::{FaultOutcome, Kvm, KvmConfig, NullBackend, RootKind};
use tdxlab::seam::{NullPrivateMem, TdParams, TdxModule};

const GIB_PAGES: u64 = 1 << 18;

fn td(gib: u64, private_max: PageLevel) -> Kvm {
    let seam = TdxModule::runnable(
        TdParams {
            gpaw: Gpaw::GPAW_48,
            attributes: 0,
            num_vcpus: 1,
            max_vcpus: 1,
        },
        Arc::new(NullPrivateMem),
    );
    let mut cfg = KvmConfig::td(gib * GIB_PAGES, Gpaw::GPAW_48);
    cfg.private_max_level = private_max;
    let kvm = Kvm::new(cfg, Some(seam), Arc::new(NullBackend));
    for g in 0..gib {
        fault_range(&kvm, g * GIB_PAGES + 4096, 512);
    }
    kvm
}

fn fault_range(kvm: &Kvm, gfn: u64, n: u64) {
    for p in gfn..gfn + n {
        assert_eq!(
            kvm.kvm_mmu_page_fault(Gpa(p << 12), PageLevel::Size4K),
            FaultOutcome::Mapped
        );
    }
}

fn zap(c: &mut Criterion) {
    for gib in [1u64, 64] {
        let kvm = td(gib, PageLevel::Size4K);
        let target = GIB_PAGES / 2;
        for (name, pages) in [("4k", 1u64), ("2m", 512)] {
            c.bench_function(&format!("zap_private_{name}_in_{gib}GiB_guest"), |b| {
                b.iter_batched(
                    || fault_range(&kvm, target, pages),
                    |_| {
                        kvm.kvm_gmem_punch_hole(black_box(target), target + pages)
                            .unwrap()
                    },
                    BatchSize::PerIteration,
                )
            });
        }
    }
}

fn set_attributes(c: &mut Criterion) {
    let kvm = td(2, PageLevel::Size4K);
    let (start, end) = (GIB_PAGES, 2 * GIB_PAGES);
    let mut private = true;
    c.bench_function("set_attributes_1GiB_flip", |b| {
        b.iter(|| {
            private = !private;
            let a = if private {
                MemoryAttributes::PRIVATE
            } else {
                MemoryAttributes::SHARED
            };
            kvm.kvm_vm_set_mem_attributes(black_box(start), end, a)
                .unwrap()
        })
    });
}

fn fault_in(c: &mut Criterion) {
    let kvm = td(1, PageLevel::Size2M);
    // Separate 2 MiB regions: a 4K fault leaves a page table behind, and a 2M fault over a
    // table maps 4K.
    for (name, level, pages, target) in [
        ("4k", PageLevel::Size4K, 1u64, GIB_PAGES / 2),
        ("2m", PageLevel::Size2M, 512, GIB_PAGES / 2 + 1024),
    ] {
        c.bench_function(&format!("fault_in_private_{name}"), |b| {
            b.iter_batched(
                || kvm.kvm_gmem_punch_hole(target, target + 512).unwrap(),
                |_| {
                    assert_eq!(
                        kvm.kvm_mmu_page_fault(Gpa(black_box(target) << 12), level),
                        FaultOutcome::Mapped
                    );
                    let mapped = kvm
                        .root(RootKind::Mirror)
                        .and_then(|r| r.lookup(target))
                        .map(|(_, l)| l);
                    assert_eq!(
                        mapped,
                        Some(level as u8),
                        "the fault maps at the level measured"
                    );
                    pages
                },
                BatchSize::PerIteration,
            )
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(2));
    targets = zap, set_attributes, fault_in
}
criterion_main!(benches);
