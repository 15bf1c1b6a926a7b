//! The conversion engine, in Linux's order (`tdx_enc_status_changed`):
//! - to shared: the PTE gets the shared bit and the TLB entry is flushed, then MapGPA;
//! - to private: MapGPA, then accept (pages must come back zeroed: ALREADY_ACCEPTED is an
//!   error), then the PTE loses the shared bit and the TLB entry is flushed.
//!
//! The PTEs are the identity map's (`mm::paging`): the same virtual address then reaches the
//! private or the shared alias.

use crate::mm::paging::{identity_pte, set_pte, PagingError};
use shared_abi::convert::ConversionTarget;
use shared_abi::{GpaRange, Gpaw};
use tdcall::AcceptStats;

/// Page-table edits of all vCPUs go one at a time (they share one set of tables).
static PT_LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// Why a conversion failed.
#[derive(Debug)]
pub enum ConvertError {
    /// The MapGPA loop failed.
    MapGpa(tdcall::MapGpaError),
    /// The accept loop failed.
    Accept(tdcall::AcceptError),
    /// Pages were still accepted: the host did not remove them.
    NotFresh(u64),
    /// The range is outside the identity map or the heap is exhausted.
    Paging(PagingError),
}

impl core::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConvertError::MapGpa(e) => write!(f, "{e}"),
            ConvertError::Accept(e) => write!(f, "{e}"),
            ConvertError::NotFresh(b) => {
                write!(f, "{b} bytes came back already accepted (not zeroed)")
            }
            ConvertError::Paging(e) => write!(f, "{e}"),
        }
    }
}

/// Point the PTEs of `range` at the shared (`shared`) or private alias, flushing each.
/// Without MapGPA this is what an implicit conversion starts from: the next access goes to
/// the other alias and the host converts on the memory fault (or refuses under --strict).
pub fn set_alias(range: GpaRange, shared: bool, gpaw: Gpaw) -> Result<(), ConvertError> {
    let _g = PT_LOCK.lock();
    for va in (range.start.0..range.start.0 + range.len).step_by(4096) {
        let pte = identity_pte(va).map_err(ConvertError::Paging)?;
        let target = if shared {
            gpaw.to_shared(shared_abi::Gpa(va)).0
        } else {
            va
        };
        set_pte(pte, va, target);
    }
    Ok(())
}

/// Tell the host's trace what the guest does (only when it traces: a console line each).
fn trace(range: GpaRange, what: &str) {
    use shared_abi::layout::hob::{config::TRACE, TRACE_LINE};
    if crate::boot::info::get().flags() & TRACE != 0 {
        println!("{TRACE_LINE}{:#x} {} {what}", range.start.0, range.len);
    }
}

/// Private → shared, Linux's order: PTEs first, then MapGPA.
pub fn to_shared(range: GpaRange, gpaw: Gpaw) -> Result<(), ConvertError> {
    trace(range, "PTEs get the shared bit; INVLPG each page");
    set_alias(range, true, gpaw)?;
    trace(range, "TDG.VP.VMCALL<MapGPA> to shared");
    crate::arch::tdx()
        .map_gpa(range, ConversionTarget::Shared, gpaw)
        .map_err(ConvertError::MapGpa)?;
    Ok(())
}

/// Shared → private, Linux's order: MapGPA, accept (fresh pages only), then PTEs.
pub fn to_private(range: GpaRange, gpaw: Gpaw) -> Result<AcceptStats, ConvertError> {
    let mut tdx = crate::arch::tdx();
    trace(range, "TDG.VP.VMCALL<MapGPA> to private");
    tdx.map_gpa(range, ConversionTarget::Private, gpaw)
        .map_err(ConvertError::MapGpa)?;
    trace(
        range,
        "TDG.MEM.PAGE.ACCEPT each page (2M where aligned, else 4K)",
    );
    let s = tdx.accept(range).map_err(ConvertError::Accept)?;
    if s.already_accepted_bytes != 0 {
        return Err(ConvertError::NotFresh(s.already_accepted_bytes));
    }
    trace(range, "PTEs lose the shared bit; INVLPG each page");
    set_alias(range, false, gpaw)?;
    Ok(s)
}
