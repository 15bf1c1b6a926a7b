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
        max_vcpus: 1,
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

fn roots(r: &ZapRow) -> String {
    let roots: Vec<&str> = r.roots_zapped.iter().map(|k| k.name()).collect();
    if roots.is_empty() {
        "-".to_string()
    } else {
        roots.join("+")
    }
}

/// The TD half of the table as a picture: a row per caller, a column per policy, each cell
/// the roots the zap visited, green where the pending flush was kept and red where dropped.
pub fn svg(rows: &[ZapRow]) -> String {
    use std::fmt::Write;
    let (x0, w, h, top) = (210.0, 170.0, 40.0, 70.0);
    let width = x0 + w * ZapPolicy::ALL.len() as f64 + 20.0;
    let height = top + h * ZapCaller::ALL.len() as f64 + 60.0;
    let mut out = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">
<!-- Generated by `tdxlab zap-table` (its svg option) from the zap path of the KVM model: do not edit. -->
<rect width="{width}" height="{height}" fill="white"/>
<text x="{:.0}" y="24" font-size="15" text-anchor="middle">Which roots a zap visits on a TD, per caller and zap policy (measured)</text>
"##,
        width / 2.0
    );
    for (j, p) in ZapPolicy::ALL.iter().enumerate() {
        let x = x0 + w * j as f64 + w / 2.0;
        let _ = writeln!(
            out,
            r##"<text x="{x:.0}" y="{:.0}" font-size="13" font-weight="bold" text-anchor="middle">{}</text>"##,
            top - 12.0,
            p.name()
        );
    }
    for (i, c) in ZapCaller::ALL.iter().enumerate() {
        let y = top + h * i as f64;
        let _ = writeln!(
            out,
            r##"<text x="{:.0}" y="{:.0}" font-size="13">{}</text>"##,
            20.0,
            y + h / 2.0 + 4.0,
            c.name()
        );
        for (j, p) in ZapPolicy::ALL.iter().enumerate() {
            let Some(r) = rows
                .iter()
                .find(|r| r.policy == *p && r.caller == *c && r.vm == VmKind::Td)
            else {
                continue;
            };
            let (fill, flush) = if r.flush_preserved {
                ("#e3f4e1", "flush kept")
            } else {
                ("#f9dcdc", "flush DROPPED")
            };
            let x = x0 + w * j as f64;
            let _ = writeln!(
                out,
                r##"<rect x="{x:.0}" y="{y:.0}" width="{w:.0}" height="{h:.0}" fill="{fill}" stroke="#888"/><text x="{:.0}" y="{:.0}" font-size="12" text-anchor="middle">{}</text><text x="{:.0}" y="{:.0}" font-size="10" text-anchor="middle" fill="#555">{flush}</text>"##,
                x + w / 2.0,
                y + 17.0,
                roots(r),
                x + w / 2.0,
                y + 32.0
            );
        }
    }
    let _ = writeln!(
        out,
        r##"<text x="20" y="{:.0}" font-size="11" fill="#555">Any other VM has one direct root: every caller zaps it, and the flush is kept, under every policy.</text>
</svg>"##,
        top + h * ZapCaller::ALL.len() as f64 + 30.0
    );
    out
}

/// `tdxlab zap-table [--json] [--svg FILE]`.
pub fn run(json: bool, svg_path: Option<&std::path::Path>) -> anyhow::Result<u8> {
    let rows = table();
    if let Some(p) = svg_path {
        crate::output::write_picture("--svg", p, &svg(&rows))?;
        return Ok(0);
    }
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
        let roots = roots(r);
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
