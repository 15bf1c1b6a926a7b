//! Typed errors that name the status the module or host returned.

use shared_abi::tdcall::TdcallLeaf;
use shared_abi::vmcall::Subfunction;
use shared_abi::{Gpa, PageLevel, TdxStatus, VmcallStatus};

/// A TDCALL or TDVMCALL failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum Error {
    /// The TDX module returned a non-success status in RAX.
    #[error("{} failed: {status}", leaf.name())]
    Tdcall {
        /// The leaf.
        leaf: TdcallLeaf,
        /// RAX.
        status: TdxStatus,
    },
    /// The host returned a non-success TDVMCALL status in R10.
    #[error("TDG.VP.VMCALL<{}> failed: {status}", sub.name())]
    Vmcall {
        /// The sub-function.
        sub: Subfunction,
        /// R10.
        status: VmcallStatus,
    },
    /// A leaf succeeded but its outputs break the ABI.
    #[error("{} returned malformed output: {what}", leaf.name())]
    BadOutput {
        /// The leaf.
        leaf: TdcallLeaf,
        /// What was wrong.
        what: &'static str,
    },
    /// The MapGPA loop failed.
    #[error(transparent)]
    MapGpa(#[from] MapGpaError),
    /// The accept loop failed.
    #[error(transparent)]
    Accept(#[from] AcceptError),
}

/// Why [`crate::Tdx::map_gpa`] gave up.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum MapGpaError {
    /// The host answered with a status other than SUCCESS or RETRY.
    #[error("MapGPA of {start}+{len:#x} failed: {status} (R11 {r11:#x})")]
    Status {
        /// Where this call started (request alias).
        start: Gpa,
        /// Bytes asked for in this call.
        len: u64,
        /// R10.
        status: VmcallStatus,
        /// R11 (the failing GPA, per KVM).
        r11: u64,
    },
    /// RETRY named a resume address outside what was asked.
    #[error("MapGPA RETRY resume address {r11:#x} lies outside [{start}, {end})")]
    ResumeOutsideRange {
        /// Current start (request alias).
        start: Gpa,
        /// End (request alias).
        end: Gpa,
        /// R11.
        r11: u64,
    },
    /// Too many RETRYs without progress.
    #[error("MapGPA made no progress at {at} after {retries} RETRYs")]
    NoProgress {
        /// Where it was stuck (request alias).
        at: Gpa,
        /// RETRYs without progress.
        retries: u32,
    },
    /// The range wraps or leaves the GPA width.
    #[error(
        "MapGPA range of {len:#x} bytes at {start} is outside the guest physical address space"
    )]
    BadRange {
        /// Start.
        start: Gpa,
        /// Length.
        len: u64,
    },
    /// The TDCALL carrying the TDVMCALL failed (RAX non-zero).
    #[error("TDG.VP.VMCALL<MapGPA> itself failed: {0}")]
    Tdcall(TdxStatus),
}

/// Why [`crate::Tdx::accept`] gave up.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum AcceptError {
    /// Start or length not 4 KiB aligned.
    #[error("accept range {start}+{len:#x} is not 4 KiB aligned")]
    Unaligned {
        /// Start.
        start: Gpa,
        /// Length.
        len: u64,
    },
    /// The range wraps.
    #[error("accept range {start}+{len:#x} wraps")]
    BadRange {
        /// Start.
        start: Gpa,
        /// Length.
        len: u64,
    },
    /// OPERAND_BUSY more times in a row than allowed.
    #[error("TDG.MEM.PAGE.ACCEPT of {gpa} at {level} still busy after {retries} retries")]
    Busy {
        /// GPA.
        gpa: Gpa,
        /// Level.
        level: PageLevel,
        /// Retries made.
        retries: u32,
    },
    /// Any other status, or a fallback status at 4K where there is nothing smaller.
    #[error("TDG.MEM.PAGE.ACCEPT of {gpa} at {level} failed: {status}")]
    Status {
        /// GPA.
        gpa: Gpa,
        /// Level.
        level: PageLevel,
        /// RAX.
        status: TdxStatus,
    },
}
