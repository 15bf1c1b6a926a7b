//! The three zap policies' decision tables, row by row, as the TDX MMU series' history (v19,
//! the review mail, the merged attribute filter) has them, measured through the real zap path.

use tdxlab::kvm::{root_action, KvmGfnRange, RootAction, RootKind, ZapCaller, ZapPolicy};
use tdxlab::zap_table::{measure, table, VmKind};
use RootKind::{Direct as S, Mirror as P};
use ZapCaller::*;

fn roots(policy: ZapPolicy, caller: ZapCaller) -> (Vec<RootKind>, bool) {
    let r = measure(policy, caller, VmKind::Td, &[S, P]);
    (r.roots_zapped, r.flush_preserved)
}

#[test]
fn merged_filter_routes_each_caller_to_its_roots() {
    assert_eq!(roots(ZapPolicy::Filter, MmuNotifier), (vec![S], true));
    assert_eq!(roots(ZapPolicy::Filter, SetAttrPrivate), (vec![S], true));
    assert_eq!(roots(ZapPolicy::Filter, SetAttrShared), (vec![P], true));
    assert_eq!(roots(ZapPolicy::Filter, GmemPunchHole), (vec![P], true));
    assert_eq!(roots(ZapPolicy::Filter, MemslotDelete), (vec![S, P], true));
}

#[test]
fn review_mail_exclude_matches_the_merged_filter_on_every_row() {
    for caller in ZapCaller::ALL {
        assert_eq!(
            roots(ZapPolicy::Exclude, caller),
            roots(ZapPolicy::Filter, caller),
            "{caller:?}"
        );
    }
}

#[test]
fn v19_differs_in_two_places_and_drops_the_flush() {
    // Difference 1: shared roots are always zapped, so attr->shared and gmem zap S+P.
    assert_eq!(roots(ZapPolicy::V19, SetAttrShared), (vec![S, P], true));
    assert_eq!(roots(ZapPolicy::V19, GmemPunchHole), (vec![S, P], true));
    // Difference 2: the skipped private root's `return false` drops the flush owed for the
    // shared leaves zapped before it.
    assert_eq!(roots(ZapPolicy::V19, MmuNotifier), (vec![S], false));
    assert_eq!(roots(ZapPolicy::V19, SetAttrPrivate), (vec![S], false));
    assert_eq!(roots(ZapPolicy::V19, MemslotDelete), (vec![S, P], true));
}

#[test]
fn v19_keeps_the_flush_when_the_private_root_is_visited_first() {
    for caller in [MmuNotifier, SetAttrPrivate] {
        let r = measure(ZapPolicy::V19, caller, VmKind::Td, &[P, S]);
        assert_eq!(r.roots_zapped, vec![S]);
        assert!(
            r.flush_preserved,
            "{caller:?}: the skip happened before any shared zap"
        );
    }
}

#[test]
fn non_td_vms_zap_their_direct_root_under_every_policy() {
    for policy in ZapPolicy::ALL {
        for caller in ZapCaller::ALL {
            let r = measure(policy, caller, VmKind::NonTd, &[S, P]);
            assert_eq!(
                (r.roots_zapped, r.flush_preserved),
                (vec![S], true),
                "{policy:?} {caller:?}"
            );
        }
    }
}

#[test]
fn the_full_table_has_every_row_once() {
    let t = table();
    assert_eq!(t.len(), 3 * 5 * 2);
    let dropped: Vec<_> = t
        .iter()
        .filter(|r| !r.flush_preserved)
        .map(|r| (r.policy, r.caller))
        .collect();
    assert_eq!(
        dropped,
        vec![
            (ZapPolicy::V19, MmuNotifier),
            (ZapPolicy::V19, SetAttrPrivate)
        ]
    );
}

#[test]
fn a_zero_filter_is_caught_on_a_td() {
    for policy in [ZapPolicy::Filter, ZapPolicy::Exclude] {
        assert!(
            root_action(policy, true, S, MmuNotifier, 0).is_err(),
            "{policy:?}"
        );
        assert_eq!(
            root_action(policy, false, S, MmuNotifier, 0),
            Ok(RootAction::Zap)
        );
    }
    // Through the MMU: the VM is marked bugged and the zap refused.
    use shared_abi::{Gpaw, PageLevel};
    use std::sync::Arc;
    use tdxlab::kvm::{Kvm, KvmConfig, NullBackend};
    use tdxlab::seam::{SimPrivateMem, TdParams, TdxModule};
    let t = Arc::new(TdxModule::new(
        TdParams {
            gpaw: Gpaw::GPAW_48,
            attributes: 0,
            num_vcpus: 1,
            max_vcpus: 1,
        },
        Arc::new(SimPrivateMem::new(16)),
    ));
    let kvm = Kvm::new(
        KvmConfig::td(16, Gpaw::GPAW_48),
        Some(t),
        Arc::new(NullBackend),
    );
    let mut range = KvmGfnRange::new(MemslotDelete, 0, 16);
    range.attr_filter = 0;
    let err = kvm.kvm_tdp_mmu_unmap_gfn_range(&range, false).unwrap_err();
    assert!(err.to_string().contains("attr_filter 0"), "{err}");
    assert!(kvm.is_bugged());
    assert!(matches!(
        kvm.kvm_mmu_page_fault(shared_abi::Gpa(0), PageLevel::Size4K),
        tdxlab::kvm::FaultOutcome::Error(_)
    ));
}
