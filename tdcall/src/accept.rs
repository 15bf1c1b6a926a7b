//! The accept loop: TDG.MEM.PAGE.ACCEPT over a range, largest page first.
//!
//! Where the guests in the field (Linux, TDVF, td-shim) differ and what we chose:
//! - Sizes: like Linux, try 1G, then 2M, then 4K by alignment and remaining length. Module 1.5
//!   answers a 1G request with OPERAND_INVALID; we then stop trying 1G for the rest of the call
//!   instead of paying that failure once per GiB (Linux pays it every time).
//! - PAGE_SIZE_MISMATCH (the host mapped the range at a smaller size, KVM's 4K-only case):
//!   re-accept the block at the next smaller size (td-shim, tdx-guest). Linux does the same
//!   implicitly by treating any failure as "try smaller".
//! - PAGE_ALREADY_ACCEPTED: done, like td-shim and tdx-guest at 4K, since the module reports it
//!   only when the walk stopped at an accessible leaf at the requested level or larger, so the
//!   whole block is private and accepted. Unlike Linux (which fails) we do not treat it as an
//!   error, but we count it separately: such pages were *not* zeroed by this call, and a caller
//!   that needs fresh pages (a shared→private conversion) must check
//!   [`AcceptStats::already_accepted_bytes`]. A report at a smaller level than requested cannot
//!   come from module 1.5; we split the block rather than trust it.
//! - OPERAND_BUSY: retried up to [`ACCEPT_MAX_BUSY_RETRIES`] times in a row (td-shim: 5; we
//!   allow more because the host's fault-injection makes busy answers common).

use crate::{AcceptError, Tdx, Transport};
use shared_abi::{Gpa, GpaRange, PageLevel, TdxStatus};

/// OPERAND_BUSY answers in a row tolerated for one page before giving up.
pub const ACCEPT_MAX_BUSY_RETRIES: u32 = 16;

/// What one [`Tdx::accept`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct AcceptStats {
    /// TDCALLs made.
    pub calls: u64,
    /// Bytes newly accepted (zeroed by the module), by level: `[4K, 2M, 1G]`.
    pub accepted_bytes: [u64; 3],
    /// Bytes reported PAGE_ALREADY_ACCEPTED (not zeroed by this call).
    pub already_accepted_bytes: u64,
    /// Blocks re-accepted at a smaller size after SIZE_MISMATCH or an unsupported level.
    pub fallbacks: u64,
    /// OPERAND_BUSY answers retried.
    pub busy_retries: u64,
}

impl AcceptStats {
    /// Bytes newly accepted at any level.
    pub fn total_accepted(&self) -> u64 {
        self.accepted_bytes.iter().sum()
    }
}

impl<T: Transport> Tdx<T> {
    /// Accept every page of `range` (private GPAs, 4 KiB aligned).
    pub fn accept(&mut self, range: GpaRange) -> Result<AcceptStats, AcceptError> {
        let (start, len) = (range.start, range.len);
        if !range.is_page_aligned() {
            return Err(AcceptError::Unaligned { start, len });
        }
        let end = range.end().ok_or(AcceptError::BadRange { start, len })?;
        let mut stats = AcceptStats::default();
        let mut max_level = PageLevel::Size1G;
        let mut gpa = start;
        while gpa < end {
            let level = PageLevel::LARGEST_FIRST
                .into_iter()
                .find(|l| *l <= max_level && gpa.is_aligned(*l) && end.0 - gpa.0 >= l.bytes())
                .unwrap_or(PageLevel::Size4K);
            self.accept_block(gpa, level, &mut max_level, &mut stats)?;
            gpa = Gpa(gpa.0 + level.bytes());
        }
        Ok(stats)
    }

    fn accept_block(
        &mut self,
        gpa: Gpa,
        level: PageLevel,
        max_level: &mut PageLevel,
        stats: &mut AcceptStats,
    ) -> Result<(), AcceptError> {
        let mut busy = 0;
        let smaller = loop {
            stats.calls += 1;
            let status = self.tdg_mem_page_accept(gpa, level);
            if status.is_success() {
                stats.accepted_bytes[level as usize] += level.bytes();
                return Ok(());
            }
            let fail = AcceptError::Status { gpa, level, status };
            if status.is(TdxStatus::PAGE_ALREADY_ACCEPTED) {
                if status.details_l2() as u64 >= level.tdx_level() {
                    stats.already_accepted_bytes += level.bytes();
                    return Ok(());
                }
                break level.smaller().ok_or(fail)?;
            } else if status.is(TdxStatus::OPERAND_BUSY) {
                busy += 1;
                if busy > ACCEPT_MAX_BUSY_RETRIES {
                    return Err(AcceptError::Busy {
                        gpa,
                        level,
                        retries: ACCEPT_MAX_BUSY_RETRIES,
                    });
                }
                stats.busy_retries += 1;
            } else if status.is(TdxStatus::PAGE_SIZE_MISMATCH) {
                break level.smaller().ok_or(fail)?;
            } else if status.is(TdxStatus::OPERAND_INVALID) && level > PageLevel::Size4K {
                // The module does not accept this level at all (1G on module 1.5).
                let s = level.smaller().ok_or(fail)?;
                *max_level = (*max_level).min(s);
                break s;
            } else {
                return Err(fail);
            }
        };
        stats.fallbacks += 1;
        for i in 0..level.bytes() / smaller.bytes() {
            self.accept_block(Gpa(gpa.0 + i * smaller.bytes()), smaller, max_level, stats)?;
        }
        Ok(())
    }
}
