//! The three zap policies and their one decision point: given the VM, a root and a zap
//! request, what does `kvm_tdp_mmu_unmap_gfn_range` do with that root?
//!
//! - `filter`: upstream since v6.14 (`kvm_gfn_range.attr_filter`, `kvm_gfn_range_filter_to_root_types`);
//! - `exclude`: the review mail's `exclude_private` / `exclude_shared`, callers setting the
//!   natural excludes, and a `continue` for skipped roots;
//! - `v19`: the v19 series' `only_private` / `only_shared` + `zap_private` flag, shared roots
//!   always zapped, and the `return false` that drops a pending flush (reference §2).

use super::tdp::RootKind;

/// `KVM_FILTER_SHARED`.
pub const KVM_FILTER_SHARED: u8 = 1 << 0;
/// `KVM_FILTER_PRIVATE`.
pub const KVM_FILTER_PRIVATE: u8 = 1 << 1;

/// Which zap semantics the MMU follows.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ZapPolicy {
    /// Merged upstream: route by attribute filter.
    #[default]
    Filter,
    /// The review mail: exclude_private / exclude_shared.
    Exclude,
    /// The v19 series: zap_private flag, with its dropped flush.
    V19,
}

impl ZapPolicy {
    /// Every policy.
    pub const ALL: [ZapPolicy; 3] = [ZapPolicy::Filter, ZapPolicy::Exclude, ZapPolicy::V19];
    /// "filter" / "exclude" / "v19".
    pub const fn name(self) -> &'static str {
        match self {
            ZapPolicy::Filter => "filter",
            ZapPolicy::Exclude => "exclude",
            ZapPolicy::V19 => "v19",
        }
    }
    /// Where the policy comes from, in a few words.
    pub const fn describe(self) -> &'static str {
        match self {
            ZapPolicy::Filter => "merged upstream: each zap routed by an attribute filter",
            ZapPolicy::Exclude => "the review mail: exclude_private / exclude_shared flags",
            ZapPolicy::V19 => "the v19 series: a zap_private flag, and a flush it drops",
        }
    }
}

/// Who asked for the zap; each caller sets the fields its kernel version defines.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ZapCaller {
    /// mmu_notifier invalidate_range_start on the shared HVA.
    MmuNotifier,
    /// KVM_SET_MEMORY_ATTRIBUTES to private.
    SetAttrPrivate,
    /// KVM_SET_MEMORY_ATTRIBUTES to shared.
    SetAttrShared,
    /// guest_memfd PUNCH_HOLE (or release).
    GmemPunchHole,
    /// Memslot deletion or move.
    MemslotDelete,
}

impl ZapCaller {
    /// Every caller.
    pub const ALL: [ZapCaller; 5] = [
        ZapCaller::MmuNotifier,
        ZapCaller::SetAttrPrivate,
        ZapCaller::SetAttrShared,
        ZapCaller::GmemPunchHole,
        ZapCaller::MemslotDelete,
    ];
    /// The merged `attr_filter` this caller sets.
    pub const fn attr_filter(self) -> u8 {
        match self {
            ZapCaller::MmuNotifier | ZapCaller::SetAttrPrivate => KVM_FILTER_SHARED,
            ZapCaller::SetAttrShared | ZapCaller::GmemPunchHole => KVM_FILTER_PRIVATE,
            ZapCaller::MemslotDelete => KVM_FILTER_SHARED | KVM_FILTER_PRIVATE,
        }
    }
    /// v19's (only_private, only_shared, new attributes private?) for this caller.
    pub(crate) const fn v19_flags(self) -> (bool, bool, bool) {
        match self {
            ZapCaller::MmuNotifier => (false, true, false),
            ZapCaller::SetAttrPrivate => (false, false, true),
            ZapCaller::SetAttrShared => (false, false, false),
            ZapCaller::GmemPunchHole => (true, false, false),
            ZapCaller::MemslotDelete => (true, true, false),
        }
    }
    /// The snake_case name used in reports.
    pub const fn name(self) -> &'static str {
        match self {
            ZapCaller::MmuNotifier => "mmu_notifier",
            ZapCaller::SetAttrPrivate => "set_attr_private",
            ZapCaller::SetAttrShared => "set_attr_shared",
            ZapCaller::GmemPunchHole => "gmem_punch_hole",
            ZapCaller::MemslotDelete => "memslot_delete",
        }
    }
}

/// What `kvm_tdp_mmu_unmap_gfn_range` does with one root.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RootAction {
    /// `tdp_mmu_zap_leafs` on it.
    Zap,
    /// Not visited (the flush so far is kept).
    Skip,
    /// v19: visited, nothing zapped, and `return false` replaces the pending flush.
    SkipDropFlush,
}

/// A zap with no filter on a VM with a mirror root: upstream's "poison 0" catches it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("KVM_BUG: zap of gfn range with attr_filter 0 on a TD")]
pub struct FilterZeroBug;

/// The decision point. `is_td`: the VM has a mirror root (`kvm_has_mirrored_tdp`).
pub fn root_action(
    policy: ZapPolicy,
    is_td: bool,
    root: RootKind,
    caller: ZapCaller,
    attr_filter: u8,
) -> Result<RootAction, FilterZeroBug> {
    if !is_td {
        // Every policy zaps the only (direct) root of a non-TD VM whatever the caller says.
        return Ok(RootAction::Zap);
    }
    match policy {
        ZapPolicy::Filter | ZapPolicy::Exclude => {
            if attr_filter == 0 {
                return Err(FilterZeroBug);
            }
            // filter: kvm_gfn_range_filter_to_root_types(); exclude: exclude_private =
            // !(filter & PRIVATE), exclude_shared = !(filter & SHARED). Same roots, and a
            // skipped root is simply not visited in both.
            let wanted = match root {
                RootKind::Mirror => attr_filter & KVM_FILTER_PRIVATE != 0,
                RootKind::Direct => attr_filter & KVM_FILTER_SHARED != 0,
            };
            Ok(if wanted {
                RootAction::Zap
            } else {
                RootAction::Skip
            })
        }
        ZapPolicy::V19 => {
            let (only_private, only_shared, attrs_private) = caller.v19_flags();
            let zap_private = if !only_private && !only_shared {
                !attrs_private
            } else {
                only_private
            };
            Ok(match root {
                RootKind::Mirror if !zap_private => RootAction::SkipDropFlush,
                _ => RootAction::Zap,
            })
        }
    }
}
