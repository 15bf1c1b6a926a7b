//! The end-of-run audit: with every vCPU stopped, check the invariants (docs/model.md) over the whole
//! TD. Each finding is a leak (private data where the host can see it) or a lost guarantee.

use super::backing::Backing;
use crate::kvm::Kvm;
use crate::seam::TdxModule;
use std::sync::atomic::Ordering::Relaxed;

/// Every violated invariant, one line each (empty: nothing leaked, nothing lost).
pub fn audit(kvm: &Kvm, seam: &TdxModule, private: &Backing, shared: &Backing) -> Vec<String> {
    // 1 and 2: leaves agree with the attributes; no GFN reachable through both aliases.
    let mut found = kvm.check_invariants();
    // 3: private contents are never observable through the shared alias. A shared GFN's
    // guest_memfd page was punched when it turned shared; a private GFN's shared page was
    // discarded when it turned private and the guest cannot have reached it since.
    for (start, end, attrs) in kvm.attributes().iter_runs() {
        let (off, len) = (start << 12, (end - start) << 12);
        let (view, what) = if attrs.is_private() {
            (shared, "shared backing of private")
        } else {
            (private, "guest_memfd page of shared")
        };
        if let Some(at) = view.first_nonzero(off, len) {
            found.push(format!(
                "{what} gpa {:#x} holds data (first non-zero byte at {at:#x}): not discarded on conversion",
                at & !0xfff
            ));
        }
    }
    // 4 and 5: the module's own bookkeeping.
    let freed = seam.stats.tables_freed_while_runnable.load(Relaxed);
    if freed != 0 {
        found.push(format!("{freed} S-EPT table pages freed while the TD ran"));
    }
    let untracked = seam.stats.removed_untracked.load(Relaxed);
    if untracked != 0 {
        found.push(format!(
            "{untracked} private pages removed without BLOCK + TRACK"
        ));
    }
    found
}
