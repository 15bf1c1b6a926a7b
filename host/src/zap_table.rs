//! `tdxlab zap-table`: for each zap policy, caller and VM kind, which roots a zap visits and
//! whether a pending flush survives — measured by running the real zap path on a small VM
//! with leaves in both roots, not written down by hand.

use crate::kvm::{Kvm, KvmConfig, NullBackend, RootKind, ZapCaller, ZapPolicy};
use crate::seam::{NullPrivateMem, TdParams, TdxModule};
use serde::Serialize;
use shared_abi::convert::MemoryAttributes;
use shared_abi::{Gpa, Gpaw, PageLevel};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// VM kind column.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VmKind {
    /// A TD: mirror and direct roots.
    Td,
    /// Any other VM: one direct root.
    NonTd,
}

/// One row.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct ZapRow {
    /// Policy.
    pub policy: ZapPolicy,
    /// Caller.
    pub caller: ZapCaller,
    /// VM kind.
    pub vm: VmKind,
    /// Roots whose leaves the call zapped, in visit order.
    pub roots_zapped: Vec<RootKind>,
    /// When a shared leaf was zapped in the call, was the flush still reported?
    pub flush_preserved: bool,
}

const PAGES: u64 = 2048;
const PRIVATE_GFNS: std::ops::Range<u64> = 0..8;
const SHARED_GFNS: std::ops::Range<u64> = 1024..1032;

/// Build a VM with leaves in both roots (private gfns 0..8, shared gfns 1024..1032), run
/// `caller`'s zap over all of RAM, and observe what happened.
pub fn measure(
    policy: ZapPolicy,
    caller: ZapCaller,
    vm: VmKind,
    root_order: &[RootKind],
) -> ZapRow {
    let kvm = populated_vm(policy, vm, root_order);
    let before: Vec<usize> = kvm.roots().iter().map(|r| r.leaves().len()).collect();
    let dropped = kvm.stats.flushes_dropped.load(Relaxed);
    let r = match caller {
        ZapCaller::MmuNotifier => kvm.kvm_mmu_notifier_invalidate_range(0, PAGES, || {}),
        ZapCaller::SetAttrPrivate => {
            kvm.kvm_vm_set_mem_attributes(0, PAGES, MemoryAttributes::PRIVATE)
        }
        ZapCaller::SetAttrShared => {
            kvm.kvm_vm_set_mem_attributes(0, PAGES, MemoryAttributes::SHARED)
        }
        ZapCaller::GmemPunchHole => kvm.kvm_gmem_punch_hole(0, PAGES),
        ZapCaller::MemslotDelete => kvm.kvm_arch_flush_shadow_memslot(0, PAGES),
    };
    r.expect("zap path runs");
    let roots_zapped = (kvm.roots().iter().zip(before))
        .filter(|(r, n)| r.leaves().len() < *n)
        .map(|(r, _)| r.kind())
        .collect();
    ZapRow {
        policy,
        caller,
        vm,
        roots_zapped,
        flush_preserved: kvm.stats.flushes_dropped.load(Relaxed) == dropped,
    }
}

/// A VM of `vm`'s kind with private leaves at PRIVATE_GFNS (a TD's mirror root) and shared
/// leaves at SHARED_GFNS. (The table runs on tdxlab's own models: a failure here is a bug in
/// them, so it panics.)
fn populated_vm(policy: ZapPolicy, vm: VmKind, root_order: &[RootKind]) -> Kvm {
    let is_td = vm == VmKind::Td;
    let mut cfg = KvmConfig::td(PAGES, Gpaw::GPAW_48);
    cfg.is_td = is_td;
    cfg.policy = policy;
    cfg.root_order = root_order.to_vec();
    let params = TdParams {
        gpaw: Gpaw::GPAW_48,
        attributes: 0,
        num_vcpus: 1,
    };
    let tdx = is_td.then(|| TdxModule::runnable(params, Arc::new(NullPrivateMem)));
    let kvm = Kvm::new(cfg, tdx, Arc::new(NullBackend));
    let fault = |gpa: u64| {
        let out = kvm.kvm_mmu_page_fault(Gpa(gpa), PageLevel::Size4K);
        assert_eq!(out, crate::kvm::FaultOutcome::Mapped);
    };
    let set = |gfns: std::ops::Range<u64>, attrs| {
        kvm.kvm_vm_set_mem_attributes(gfns.start, gfns.end, attrs)
            .expect("convert")
    };
    if is_td {
        set(SHARED_GFNS, MemoryAttributes::SHARED);
        PRIVATE_GFNS.for_each(|g| fault(g << 12));
    } else {
        // Like a SW_PROTECTED VM with some private GFNs, so that both attribute changes
        // below change something (an unchanged range returns before zapping).
        set(PRIVATE_GFNS, MemoryAttributes::PRIVATE);
    }
    let shared_bit = if is_td {
        kvm.config().gpaw.shared_mask()
    } else {
        0
    };
    SHARED_GFNS.for_each(|g| fault(g << 12 | shared_bit));
    kvm
}

/// Every (policy, caller, vm) row, roots allocated direct first.
pub fn table() -> Vec<ZapRow> {
    let order = [RootKind::Direct, RootKind::Mirror];
    let mut rows = Vec::new();
    for policy in ZapPolicy::ALL {
        for caller in ZapCaller::ALL {
            for vm in [VmKind::Td, VmKind::NonTd] {
                rows.push(measure(policy, caller, vm, &order));
            }
        }
    }
    rows
}

/// The JSON document of `zap-table`: its rows.
#[derive(Serialize)]
struct ZapTableJson<'a> {
    rows: &'a [ZapRow],
}

/// `tdxlab zap-table [--json]`.
pub fn run(json: bool) -> anyhow::Result<u8> {
    let rows = table();
    if json {
        crate::outln!(
            "{}",
            crate::output::json("zap-table", &ZapTableJson { rows: &rows })?
        )?;
        return Ok(0);
    }
    crate::outln!(
        "Which TDP roots each zap visits (roots allocated direct first), and whether a flush"
    )?;
    crate::outln!("needed for shared leaves zapped earlier in the call is still reported.\n")?;
    crate::outln!(
        "{:<8} {:<17} {:<7} {:<15} flush",
        "policy",
        "caller",
        "vm",
        "roots zapped"
    )?;
    for r in &rows {
        let roots: Vec<&str> = r.roots_zapped.iter().map(|k| k.name()).collect();
        let roots = if roots.is_empty() {
            "-".to_string()
        } else {
            roots.join("+")
        };
        let vm = match r.vm {
            VmKind::Td => "td",
            VmKind::NonTd => "non_td",
        };
        let flush = if r.flush_preserved { "kept" } else { "DROPPED" };
        crate::outln!(
            "{:<8} {:<17} {:<7} {:<15} {flush}",
            r.policy.name(),
            r.caller.name(),
            vm,
            roots
        )?;
    }
    Ok(0)
}
