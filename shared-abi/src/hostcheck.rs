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
    /// A measurement mark: R12 is the window ([`Window`]), R13 0 at its start and 1 at its
    /// end. The host adds what its counters moved in between (exits by kind, kicks, memory
    /// system calls, host CPU time) to that window; the mark's own exit is not counted.
    /// R14 and R15 are ignored; nothing is checked.
    Mark = 4, "MARK";
}

crate::tdcall::leaves! { Window: u64, "The measured windows of a round trip (R12 of MARK).",
    /// A 4 KiB page private → shared (MapGPA and the host's conversion).
    ToShared4k = 1, "4k-to-shared";
    /// The first guest write to that page through the shared alias.
    Touch4k = 2, "4k-first-touch";
    /// The page shared → private: MapGPA, then TDG.MEM.PAGE.ACCEPT.
    ToPrivate4k = 3, "4k-to-private";
    /// A 2 MiB block private → shared.
    ToShared2m = 4, "2m-to-shared";
    /// The first write to its first page through the shared alias.
    Touch2m = 5, "2m-first-touch";
    /// The block shared → private: MapGPA, then its accept (2 MiB, or 512 × 4 KiB).
    ToPrivate2m = 6, "2m-to-private";
}
