//! proptest: random sequences of attribute changes, faults and zaps. After every step the
//! invariants of docs/model.md hold and the MMU agrees with a flat reference model
//! (GFN → attribute, mapped in which root).

use proptest::prelude::*;
use shared_abi::convert::MemoryAttributes;
use shared_abi::{Gpa, Gpaw, PageLevel};
use std::collections::BTreeMap;
use std::sync::Arc;
use tdxlab::kvm::{FaultOutcome, Kvm, KvmConfig, NullBackend, RootKind, ZapPolicy};
use tdxlab::seam::{SimPrivateMem, TdParams, TdxModule};

const PAGES: u64 = 96;

#[derive(Clone, Debug)]
enum Op {
    SetAttr { start: u64, len: u64, private: bool },
    Fault { gfn: u64, shared: bool },
    Notifier { start: u64, len: u64 },
    PunchHole { start: u64, len: u64 },
    MemslotDelete { start: u64, len: u64 },
}

fn range() -> impl Strategy<Value = (u64, u64)> {
    (0..PAGES).prop_flat_map(|s| (Just(s), 1..=(PAGES - s).min(24)))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (range(), any::<bool>()).prop_map(|((start, len), private)| Op::SetAttr { start, len, private }),
        5 => (0..PAGES, any::<bool>()).prop_map(|(gfn, shared)| Op::Fault { gfn, shared }),
        1 => range().prop_map(|(start, len)| Op::Notifier { start, len }),
        1 => range().prop_map(|(start, len)| Op::PunchHole { start, len }),
        1 => range().prop_map(|(start, len)| Op::MemslotDelete { start, len }),
    ]
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mapped {
    No,
    Direct,
    Mirror,
}

/// The flat reference: what KVM's documentation says each operation does.
struct Model {
    private: Vec<bool>,
    mapped: Vec<Mapped>,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match *op {
            Op::SetAttr {
                start,
                len,
                private,
            } => {
                for g in start..start + len {
                    if self.private[g as usize] != private {
                        // Converting away zaps the old alias's mapping.
                        self.mapped[g as usize] = Mapped::No;
                    }
                    self.private[g as usize] = private;
                }
            }
            Op::Fault { gfn, shared } => {
                if shared != self.private[gfn as usize] {
                    self.mapped[gfn as usize] = if shared {
                        Mapped::Direct
                    } else {
                        Mapped::Mirror
                    };
                }
            }
            Op::Notifier { start, len } => self.unmap(start, len, Mapped::Direct),
            Op::PunchHole { start, len } => self.unmap(start, len, Mapped::Mirror),
            Op::MemslotDelete { start, len } => {
                self.unmap(start, len, Mapped::Direct);
                self.unmap(start, len, Mapped::Mirror);
            }
        }
    }
    fn unmap(&mut self, start: u64, len: u64, which: Mapped) {
        for g in start..start + len {
            if self.mapped[g as usize] == which {
                self.mapped[g as usize] = Mapped::No;
            }
        }
    }
}

fn observe(kvm: &Kvm, seam: &TdxModule) -> Vec<Mapped> {
    let mut m = vec![Mapped::No; PAGES as usize];
    for (gfn, level, _) in kvm.root(RootKind::Direct).unwrap().leaves() {
        assert_eq!(level, 0);
        m[gfn as usize] = Mapped::Direct;
    }
    let mirror: BTreeMap<u64, u8> = kvm
        .root(RootKind::Mirror)
        .unwrap()
        .leaves()
        .into_iter()
        .map(|(g, l, _)| (g, l))
        .collect();
    let sept: BTreeMap<u64, u8> = seam
        .leaves()
        .into_iter()
        .map(|(g, l, _)| (g.0 >> 12, l))
        .collect();
    assert_eq!(mirror, sept, "the mirror root mirrors the S-EPT exactly");
    for gfn in mirror.keys() {
        m[*gfn as usize] = Mapped::Mirror;
    }
    m
}

fn check(policy: ZapPolicy, gpaw: Gpaw, ops: &[Op]) -> Result<(), TestCaseError> {
    let seam = TdxModule::runnable(
        TdParams {
            gpaw,
            attributes: 0,
            num_vcpus: 1,
            max_vcpus: 1,
        },
        Arc::new(SimPrivateMem::new(PAGES)),
    );
    let mut cfg = KvmConfig::td(PAGES, gpaw);
    cfg.policy = policy;
    let kvm = Kvm::new(cfg, Some(seam.clone()), Arc::new(NullBackend));
    let mut model = Model {
        private: vec![true; PAGES as usize],
        mapped: vec![Mapped::No; PAGES as usize],
    };
    for op in ops {
        match *op {
            Op::SetAttr {
                start,
                len,
                private,
            } => {
                let a = if private {
                    MemoryAttributes::PRIVATE
                } else {
                    MemoryAttributes::SHARED
                };
                kvm.kvm_vm_set_mem_attributes(start, start + len, a)
                    .unwrap();
            }
            Op::Fault { gfn, shared } => {
                let gpa = if shared {
                    gpaw.to_shared(Gpa(gfn << 12))
                } else {
                    Gpa(gfn << 12)
                };
                let out = kvm.kvm_mmu_page_fault(gpa, PageLevel::Size4K);
                let expect_mismatch = shared == model.private[gfn as usize];
                prop_assert_eq!(
                    matches!(out, FaultOutcome::MemoryFault { .. }),
                    expect_mismatch,
                    "{:?}",
                    out
                );
                prop_assert!(
                    matches!(out, FaultOutcome::Mapped | FaultOutcome::MemoryFault { .. }),
                    "{:?}",
                    out
                );
            }
            Op::Notifier { start, len } => kvm
                .kvm_mmu_notifier_invalidate_range(start, start + len, || {})
                .unwrap(),
            Op::PunchHole { start, len } => kvm.kvm_gmem_punch_hole(start, start + len).unwrap(),
            Op::MemslotDelete { start, len } => kvm
                .kvm_arch_flush_shadow_memslot(start, start + len)
                .unwrap(),
        }
        model.apply(op);
        let bad = kvm.check_invariants();
        prop_assert!(bad.is_empty(), "after {:?}: {:?}", op, bad);
        let attrs = kvm.attributes();
        for g in 0..PAGES {
            prop_assert_eq!(
                attrs.get(g).is_private(),
                model.private[g as usize],
                "attribute of gfn {} after {:?}",
                g,
                op
            );
        }
        prop_assert_eq!(observe(&kvm, &seam), model.mapped.clone(), "after {:?}", op);
    }
    Ok(())
}

/// The architectural widths and the non-architectural ones of small-MAXPHYADDR hosts.
fn gpaw() -> impl Strategy<Value = Gpaw> {
    prop_oneof![Just(36u8), Just(39), Just(46), Just(48), Just(52)]
        .prop_map(|b| Gpaw::emulated(b).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn filter_policy_matches_the_reference_model(gpaw in gpaw(), ops in proptest::collection::vec(op(), 1..60)) {
        check(ZapPolicy::Filter, gpaw, &ops)?;
    }

    #[test]
    fn exclude_policy_matches_the_reference_model(gpaw in gpaw(), ops in proptest::collection::vec(op(), 1..60)) {
        check(ZapPolicy::Exclude, gpaw, &ops)?;
    }
}

#[test]
fn attributes_store_runs_minimally() {
    let mut a = tdxlab::kvm::Attributes::new(100, MemoryAttributes::PRIVATE);
    a.set(10, 20, MemoryAttributes::SHARED);
    a.set(20, 30, MemoryAttributes::SHARED);
    assert_eq!(a.runs(), 3);
    assert!(
        a.range_has(10, 30, MemoryAttributes::SHARED)
            && !a.range_has(9, 30, MemoryAttributes::SHARED)
    );
    a.set(10, 30, MemoryAttributes::PRIVATE);
    assert_eq!(a.runs(), 1);
    a.set(95, 200, MemoryAttributes::SHARED);
    assert!(a.get(99).0 == 0 && a.get(94).is_private());
}

#[test]
fn a_huge_fault_over_an_existing_table_maps_4k_below_it() {
    let seam = td_module(1024);
    let mut cfg = KvmConfig::td(1024, Gpaw::GPAW_48);
    cfg.private_max_level = PageLevel::Size2M;
    let kvm = Kvm::new(cfg, Some(seam.clone()), Arc::new(NullBackend));
    // A 4K fault builds the page table under the first 2M entry; zapping the leaf keeps it.
    assert_eq!(
        kvm.kvm_mmu_page_fault(Gpa(0x1000), PageLevel::Size4K),
        FaultOutcome::Mapped
    );
    kvm.kvm_gmem_punch_hole(0, 512).unwrap();
    // A 2M fault there must still map the faulting page, at 4K.
    assert_eq!(
        kvm.kvm_mmu_page_fault(Gpa(0x5000), PageLevel::Size2M),
        FaultOutcome::Mapped
    );
    assert_eq!(kvm.root(RootKind::Mirror).unwrap().lookup(5), Some((5, 0)));
    assert_eq!(
        seam.leaves(),
        vec![(Gpa(0x5000), 0, shared_abi::sept::SeptState::Pending)]
    );
    // Where no table exists the fault maps 2M.
    assert_eq!(
        kvm.kvm_mmu_page_fault(Gpa(0x20_3000), PageLevel::Size2M),
        FaultOutcome::Mapped
    );
    assert_eq!(
        kvm.root(RootKind::Mirror).unwrap().lookup(0x203),
        Some((0x203, 1))
    );
}

/// A runnable TD of `pages` at GPAW 48 (no vCPU inside).
fn td_module(pages: u64) -> Arc<TdxModule> {
    TdxModule::runnable(
        TdParams {
            gpaw: Gpaw::GPAW_48,
            attributes: 0,
            num_vcpus: 1,
            max_vcpus: 1,
        },
        Arc::new(SimPrivateMem::new(pages)),
    )
}

/// Records what the MMU asks of the backend; with `fail`, every mapping call fails (a host
/// out of mappings, say).
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<(u64, u64, bool)>>, bool);

impl tdxlab::kvm::Backend for Recorder {
    fn set_accessible(
        &self,
        alias: tdxlab::kvm::Alias,
        gfn: u64,
        n: u64,
        accessible: bool,
    ) -> Result<(), tdxlab::kvm::BackendError> {
        if self.1 {
            let e = std::io::Error::other(format!("mapping gfn {gfn:#x}: ENOMEM"));
            return Err(tdxlab::kvm::BackendError::new(e));
        }
        if alias == tdxlab::kvm::Alias::Shared {
            self.0.lock().unwrap().push((gfn, n, accessible));
        }
        Ok(())
    }
    fn discard(
        &self,
        _: tdxlab::kvm::Alias,
        _: u64,
        _: u64,
    ) -> Result<(), tdxlab::kvm::BackendError> {
        Ok(())
    }
    fn kick_all_vcpus(&self, _: bool) {}
    fn shared_pfn(&self, gfn: u64) -> u64 {
        gfn
    }
}

#[test]
fn adjacent_shared_zaps_reach_the_backend_as_one_range() {
    let seam = td_module(64);
    let rec = Arc::new(Recorder::default());
    let kvm = Kvm::new(KvmConfig::td(64, Gpaw::GPAW_48), Some(seam), rec.clone());
    kvm.kvm_vm_set_mem_attributes(0, 64, MemoryAttributes::SHARED)
        .unwrap();
    for g in (8..16).chain(20..22) {
        assert_eq!(
            kvm.kvm_mmu_page_fault(Gpaw::GPAW_48.to_shared(Gpa(g << 12)), PageLevel::Size4K),
            FaultOutcome::Mapped
        );
    }
    rec.0.lock().unwrap().clear();
    kvm.kvm_mmu_notifier_invalidate_range(0, 64, || {}).unwrap();
    assert_eq!(*rec.0.lock().unwrap(), vec![(8, 8, false), (20, 2, false)]);
}

#[test]
fn a_failing_backend_bugs_the_vm_instead_of_panicking() {
    let mut cfg = KvmConfig::td(64, Gpaw::GPAW_48);
    cfg.root_order = vec![RootKind::Direct, RootKind::Mirror];
    let seam = td_module(64);
    let failing = Recorder(Default::default(), true);
    let kvm = Kvm::new(cfg, Some(seam), Arc::new(failing));
    kvm.kvm_vm_set_mem_attributes(0, 4, MemoryAttributes::SHARED)
        .unwrap();
    let shared = Gpaw::GPAW_48.to_shared(Gpa(0x1000));
    match kvm.kvm_mmu_page_fault(shared, PageLevel::Size4K) {
        FaultOutcome::Error(e) => assert!(e.to_string().contains("mapping gfn 0x1: ENOMEM"), "{e}"),
        other => panic!("expected the fault to fail, got {other:?}"),
    }
    assert!(kvm.is_bugged());
    assert!(kvm.bug_reason().unwrap().to_string().contains("ENOMEM"));
}
