//! tdxlab's host-check protocol: the guest asks the host to look at shared memory from its
//! side (KVM's private_mem_conversions_test SYNC_SHARED / SYNC_PRIVATE).
//!
//! Carried by TDG.VP.VMCALL with a non-zero R10. On real TDX, KVM treats a non-zero R10 as a
//! KVM hypercall number, does not know this one and fails it, so a guest sees "unsupported"
//! and falls back to checking by itself.
//!
//! | reg | in | out |
//! |---|---|---|
//! | R10 | [`TDXLAB_HYPERCALL`] | status: 0 passed, INVALID_OPERAND mismatch (or bad request) |
//! | R11 | [`HostCheckOp`] | on mismatch: byte offset of the first difference |
//! | R12 | GPA (private alias, 4 KiB aligned) | on mismatch: the byte the host found |
//! | R13 | length (4 KiB multiple) | |
//! | R14 | the byte the host must see | |
//! | R15 | SYNC_SHARED: the byte the host writes afterwards | |

/// R10 of a host-check TDVMCALL ("tdxl").
pub const TDXLAB_HYPERCALL: u64 = 0x7464_786C;
/// The longest range one host check covers.
pub const HOST_CHECK_MAX_LEN: u64 = 4 << 20;

crate::tdcall::leaves! { HostCheckOp: u64, "What the host is asked to do (R11).",
    /// Every byte of the shared range reads R14 from the host's side; then the host fills it
    /// with R15.
    SyncShared = 1, "SYNC_SHARED";
    /// The host still sees R14 everywhere in the range: the guest's private writes to these
    /// GPAs are invisible to it.
    SyncPrivate = 2, "SYNC_PRIVATE";
    /// Test-only fault, as the selftest's MAP_GPA with FALLOCATE and no SET_ATTRIBUTES: the
    /// host punches a hole in the private backing of the range, which stays private. The
    /// guest must re-accept the pages and find them zeroed. R14 and R15 are ignored.
    PunchHole = 3, "PUNCH_HOLE";
}
