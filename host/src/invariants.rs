//! The model invariants (docs/model.md) that do not depend on how guest memory is held:
//! one check for KVM runs (the end-of-run audit, `td::audit`) and the simulator (every 64
//! operations per vCPU and at the end). Invariant 3 — no private data through the shared
//! alias — looks at memory, so each runner adds its own scan.

use crate::kvm::Kvm;
use crate::seam::TdxModule;
use std::sync::atomic::Ordering::Relaxed;

/// Invariants 1, 2, 4 and 5: one line per violation (empty when they hold).
pub fn check(kvm: &Kvm, seam: &TdxModule) -> Vec<String> {
    // 1 and 2: leaves agree with the attributes; no GFN reachable through both aliases.
    let mut found = kvm.check_invariants();
    // 4: the MMU never frees an S-EPT table page while the TD runs.
    let freed = seam.stats.tables_freed_while_runnable.load(Relaxed);
    if freed != 0 {
        found.push(format!("{freed} S-EPT table pages freed while the TD ran"));
    }
    // 5: REMOVE only after BLOCK and TRACK (the module refuses otherwise; a non-zero count
    // means a path got around it).
    let untracked = seam.stats.removed_untracked.load(Relaxed);
    if untracked != 0 {
        found.push(format!(
            "{untracked} private pages removed without BLOCK + TRACK"
        ));
    }
    found
}
