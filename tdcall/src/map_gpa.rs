//! The MapGPA RETRY loop (Linux `tdx_map_gpa`, td-shim `tdvmcall_mapgpa`).

use crate::{Error, MapGpaError, Tdx, Transport};
use shared_abi::convert::{ConversionRequest, ConversionTarget};
use shared_abi::vmcall::MAP_GPA_MAX_RETRIES_PER_PAGE;
use shared_abi::{Gpa, GpaRange, Gpaw, VmcallStatus};

/// What one [`Tdx::map_gpa`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct MapGpaStats {
    /// TDVMCALLs made.
    pub calls: u32,
    /// RETRYs answered (with and without progress).
    pub retries: u32,
}

impl<T: Transport> Tdx<T> {
    /// Convert `range` (given by its private GPAs; a shared bit is ignored) to `to`.
    ///
    /// Each call asks for `[start, end)` in the request's alias: to-shared requests carry the
    /// shared bit in R12, and the host's RETRY answer names in R11 the address to resume from
    /// in that same alias. An R11 outside `[start, end)` is rejected; an R11 equal to `start`
    /// is a RETRY without progress, and more than three in a row fail, as in Linux.
    pub fn map_gpa(
        &mut self,
        range: GpaRange,
        to: ConversionTarget,
        gpaw: Gpaw,
    ) -> Result<MapGpaStats, MapGpaError> {
        let req = ConversionRequest { range, to };
        let bad = MapGpaError::BadRange {
            start: range.start,
            len: range.len,
        };
        let first = gpaw.to_private(range.start);
        let last = first.checked_add(range.len).ok_or(bad)?;
        if !gpaw.is_valid(Gpa(last.0.saturating_sub(1)))
            || gpaw.is_shared(Gpa(last.0.saturating_sub(1)))
        {
            return Err(bad);
        }
        let mut stats = MapGpaStats::default();
        if range.is_empty() {
            return Ok(stats);
        }
        let mut start = req.map_gpa_r12(first, gpaw);
        let end = req.map_gpa_r12(last, gpaw);
        let mut without_progress = 0;
        loop {
            let len = end.0 - start.0;
            stats.calls += 1;
            let (status, r11) = self.map_gpa_once(start, len).map_err(|e| match e {
                Error::Tdcall { status, .. } => MapGpaError::Tdcall(status),
                _ => unreachable!("map_gpa_once fails only on the TDCALL"),
            })?;
            match status {
                VmcallStatus::SUCCESS => return Ok(stats),
                VmcallStatus::RETRY => {
                    stats.retries += 1;
                    if r11 < start.0 || r11 >= end.0 {
                        return Err(MapGpaError::ResumeOutsideRange { start, end, r11 });
                    }
                    if r11 == start.0 {
                        without_progress += 1;
                        if without_progress >= MAP_GPA_MAX_RETRIES_PER_PAGE {
                            return Err(MapGpaError::NoProgress {
                                at: start,
                                retries: without_progress,
                            });
                        }
                    } else {
                        start = Gpa(r11);
                        without_progress = 0;
                    }
                }
                status => {
                    return Err(MapGpaError::Status {
                        start,
                        len,
                        status,
                        r11,
                    })
                }
            }
        }
    }
}
