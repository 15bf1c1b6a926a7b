//! The end-of-run audit: with every vCPU stopped, check the invariants (docs/model.md) over the whole
//! TD. Each finding is a leak (private data where the host can see it) or a lost guarantee.

use super::backing::Backing;
use crate::kvm::Kvm;
use crate::seam::TdxModule;

/// Every violated invariant, one line each (empty: nothing leaked, nothing lost).
pub fn audit(kvm: &Kvm, seam: &TdxModule, private: &Backing, shared: &Backing) -> Vec<String> {
    // 1, 2, 4 and 5: the models' own state.
    let mut found = crate::invariants::check(kvm, seam);
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
    found
}
